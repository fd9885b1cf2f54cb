"""Where the project is, and the test S3 server's credentials (which must never reach a log)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jobs"
# Credentials of the test S3 server: tests check that they never reach a log or an artifact.
S3_ACCESS_KEY = "llm-test-access-key"
S3_SECRET_KEY = "llm-test-secret-key-do-not-log"
