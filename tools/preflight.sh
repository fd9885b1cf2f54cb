#!/usr/bin/env bash
# What `make setup` needs from the machine, checked before it installs anything, so a
# missing prerequisite is one clear line instead of a failure ten minutes into an install.
# Usage: tools/preflight.sh PYTHON   (the interpreter make will build .venv with)
set -uo pipefail
PYTHON="${1:-python3.11}"
failed=0

fail() {
  echo "ERROR: $*" >&2
  failed=1
}

# Python 3.11 with venv (pyproject.toml: requires-python; Debian splits venv into its own package).
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  fail "$PYTHON not found: install Python 3.11 (Debian/Ubuntu: apt install python3.11" \
       "python3.11-venv; macOS: brew install python@3.11) or run make PYTHON=/path/to/python3.11"
elif ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  found="$("$PYTHON" -c 'import platform; print(platform.python_version())' 2>/dev/null)"
  fail "$PYTHON is Python ${found:-of unknown version}, the project needs 3.11:" \
       "run make PYTHON=/path/to/python3.11"
elif ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  fail "$PYTHON cannot create virtual environments: install python3.11-venv (Debian/Ubuntu)"
fi

# Java 17 or newer for Spark: JAVA_HOME's java if set (as spark-submit uses it), else PATH's.
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
if ! command -v "$JAVA" >/dev/null 2>&1; then
  fail "Java not found (Spark needs Java 17 or newer): install a JDK 17+ (Debian/Ubuntu:" \
       "apt install openjdk-17-jre-headless; macOS: brew install openjdk@17) or set JAVA_HOME"
else
  # `java -version` prints e.g. `openjdk version "17.0.15" 2025-04-15` or `"1.8.0_392"`.
  version="$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)"
  major="${version%%[.+-]*}"
  [ "$major" = 1 ] && major="$(echo "$version" | cut -d. -f2)"
  if ! [ "$major" -ge 17 ] 2>/dev/null; then
    fail "$JAVA is Java ${version:-of unknown version}; Spark needs Java 17 or newer:" \
         "install a JDK 17+ and put it first on PATH or set JAVA_HOME"
  fi
fi

exit "$failed"
