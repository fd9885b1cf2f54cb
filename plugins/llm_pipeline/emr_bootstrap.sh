#!/bin/bash
# EMR bootstrap action: runs on every node before Spark starts.
# Installs Python 3.11 (EMR 7 ships 3.9) and the jobs' dependencies, pinned by the
# project's constraints.txt, into one virtualenv that spark-env points PYSPARK_PYTHON at.
# Usage (set by the DAG): bootstrap.sh s3://bucket/prefix/code/<version>
set -euxo pipefail
CODE="$1"
VENV=/usr/local/llm-venv

sudo dnf install -y python3.11 python3.11-pip
aws s3 cp "$CODE/requirements.txt" /tmp/llm-requirements.txt
aws s3 cp "$CODE/constraints.txt" /tmp/llm-constraints.txt
sudo python3.11 -m venv "$VENV"
# The CPU wheel of torch: the default index would pull a multi-GB CUDA build.
sudo "$VENV/bin/pip" install --no-cache-dir \
  --extra-index-url https://download.pytorch.org/whl/cpu \
  -r /tmp/llm-requirements.txt -c /tmp/llm-constraints.txt
