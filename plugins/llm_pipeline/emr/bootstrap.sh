#!/bin/bash
# EMR bootstrap action: runs on every node before Spark starts.
# Installs Python 3.11 (EMR 7 ships 3.9) and the jobs' dependencies, pinned by the
# project's constraints.txt, into one virtualenv that spark-env points PYSPARK_PYTHON at.
# Spark itself (and pyspark) is EMR's own; the virtualenv holds only what the jobs import.
#
# Usage (set by the DAG): bootstrap.sh s3://bucket/prefix/code/<version> [VENV]
# The tests run this same script on a local copy of the bundle to build the EMR node
# environment they run the steps in: bootstrap.sh /path/to/bundle .venv-emr
set -euxo pipefail
CODE="$1"
VENV="${2:-/usr/local/llm-venv}"

# Root only where the target needs it (/usr/local on an EMR node).
SUDO=""
[ -w "$(dirname "$VENV")" ] || SUDO=sudo
command -v python3.11 >/dev/null || sudo dnf install -y python3.11 python3.11-pip

FILES="$(mktemp -d)"
for name in requirements.txt constraints.txt install_torch.py jobs/conf/log4j2.properties; do
  case "$CODE" in
    s3://*) aws s3 cp "$CODE/$name" "$FILES/$(basename "$name")" ;;
    *) cp "$CODE/$name" "$FILES/$(basename "$name")" ;;
  esac
done

$SUDO python3.11 -m venv "$VENV"
# torch first, alone: its CPU build, from the PyTorch CPU index only when the default
# sources offer none (never --extra-index-url for the whole install: dependency confusion).
$SUDO "$VENV/bin/python" "$FILES/install_torch.py" --constraints "$FILES/constraints.txt"
# Everything else from the default index, pinned; torch is already satisfied.
$SUDO "$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check \
  -r "$FILES/requirements.txt" -c "$FILES/constraints.txt"
$SUDO "$VENV/bin/pip" check
# The jobs' Spark logging configuration, where every step's spark-submit points log4j
# (llm_pipeline.pipeline.spark_conf).
$SUDO mkdir -p "$VENV/conf"
$SUDO cp "$FILES/log4j2.properties" "$VENV/conf/log4j2.properties"
