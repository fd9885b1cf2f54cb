# Two commands: `make run` (set up, then run the pipeline on the default corpus)
# and `make test` (set up, then run every test). Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# An EMR node's Python environment (the bundle's bootstrap.sh + the default release's Spark),
# in which the tests run the EMR steps (then replayed on the project's Spark 4.2 and compared).
EMR_VENV := $(CURDIR)/.venv-emr
EMR_STAMP := $(EMR_VENV)/.installed

# The local deployment `make run` and `make airflow` share (tools/local_deployment.py keeps it
# in .airflow's Variables): runs under runs/, models in registry/, whichever way a run starts.
LOCAL_RUNS := file://$(CURDIR)/runs
LOCAL_REGISTRY := file://$(CURDIR)/registry
RUN_ID := local-$(shell date -u +%Y%m%dT%H%M%SZ)
RUN_ROOT ?= $(LOCAL_RUNS)/$(RUN_ID)
REGISTRY ?=
RUN_CONF = {"run_root": "$(RUN_ROOT)"$(if $(REGISTRY),$(comma) "registry": "$(REGISTRY)")$(if $(CORPUS),$(comma) "corpus": "$(CORPUS)")$(if $(INIT_FROM),$(comma) "init_from": "$(INIT_FROM)")}
AIRFLOW_PORT ?= 8080
CORPUS ?=
# Continue from a registry version instead of training from scratch: latest, a version id or
# a version folder's URI (the init_from Param).
INIT_FROM ?=
SPARK_MASTER ?= local[2]

export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export AIRFLOW_CONN_SPARK_LOCAL := {"conn_type": "spark", "host": "$(SPARK_MASTER)"}
export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(BIN)/python
export PATH := $(BIN):$(PATH)

.PHONY: setup preflight venv-emr system-deps local-deployment run airflow test test-fast check lint lock bench-data bench-train bench-generate bench-scale bench-run bench-hostile bench-continue bench-mutation clean

setup: $(STAMP)

## preflight: Python 3.11 and Java 17+ present, checked before anything is installed or run.
preflight:
	@tools/preflight.sh $(PYTHON)

# torch first, alone, as a CPU build (tools/install_torch.py says from where); then the rest,
# by uv (the version constraints.txt pins, installed by pip): 0.75 min where pip takes 2.4.
# uv compiles the bytecode at install, as pip does: where PYTHONDONTWRITEBYTECODE is set,
# every Airflow task and Spark process would otherwise compile its imports anew.
# uv does not read pip's configuration: behind a package mirror set UV_DEFAULT_INDEX, or
# install with pip alone: make setup INSTALLER=pip.
INSTALLER ?= uv
PIP := $(BIN)/pip --disable-pip-version-check
INSTALL_PROJECT.uv = $(PIP) install --quiet -c constraints.txt uv \
	&& $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python \
	  -c constraints.txt -e '.[dev]'
INSTALL_PROJECT.pip = $(PIP) install --quiet -c constraints.txt -e '.[dev]'

$(STAMP): pyproject.toml constraints.txt tools/install_torch.py | preflight
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python tools/install_torch.py --constraints constraints.txt
	$(or $(INSTALL_PROJECT.$(INSTALLER)),$(error INSTALLER is uv or pip, not $(INSTALLER)))
	$(PIP) check
	touch $@

## venv-emr: an EMR node's environment for the tests: the code bundle's bootstrap.sh run on
## the bundle's requirements.txt + constraints.txt, plus the default EMR release's Spark.
venv-emr: $(EMR_STAMP)

$(EMR_STAMP): $(STAMP) plugins/llm_pipeline/emr/bootstrap.sh plugins/llm_pipeline/emr/bundle.py
	rm -rf $(EMR_VENV)
	python tools/emr_harness.py build-node-env $(EMR_VENV)
	touch $@

$(AIRFLOW_HOME)/airflow.db: $(STAMP)
	mkdir -p $(AIRFLOW_HOME)
	airflow db migrate > $(AIRFLOW_HOME)/migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/migrate.log; exit 1)

## local-deployment: the Variables make run and make airflow share (runs/, registry/, and the
## corpora make run was given, which later runs may read too).
local-deployment: $(AIRFLOW_HOME)/airflow.db
	python tools/local_deployment.py --runs-base "$(LOCAL_RUNS)" --registry "$(LOCAL_REGISTRY)" \
	  $(if $(CORPUS),--allow-corpus "$(CORPUS)")

## run: the whole pipeline on local Spark; CORPUS=<uri or glob>, RUN_ROOT=<uri> and
## REGISTRY=<uri> override (a REGISTRY given here is this run's alone; the UI keeps registry/);
## INIT_FROM=latest (or a version id) continues from a published version. (No run deadline:
## Airflow 3.3.2's dags test fails as a run with one succeeds; llm_pipeline/deadline.py.)
run: local-deployment
	$(if $(REGISTRY),AIRFLOW_VAR_LLM_REGISTRY_ALLOWED_PREFIXES="$${AIRFLOW_VAR_LLM_REGISTRY_ALLOWED_PREFIXES:+$$AIRFLOW_VAR_LLM_REGISTRY_ALLOWED_PREFIXES$(comma)}$(REGISTRY)") \
	env -u LLM_RUN_DEADLINE_HOURS airflow dags test llm_decoder --conf '$(RUN_CONF)'
	python -m sparklm.runtime.summary $(RUN_ROOT)

## airflow: a real local Airflow (api-server on 127.0.0.1:$(AIRFLOW_PORT), scheduler,
## dag-processor, triggerer; LocalExecutor on .airflow/airflow.db). Ctrl-C stops it all.
## Its runs and its Models view use the local deployment make run uses.
airflow: local-deployment
	python tools/airflow_stack.py --port $(AIRFLOW_PORT) --home $(AIRFLOW_HOME)

## system-deps: Debian's docker-compose, for validating docker-compose.yaml (no engine needed),
## and chromium + chromium-driver, for the tests that drive the Airflow UI.
system-deps:
	@command -v docker-compose >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; \
	  else echo "docker-compose missing and not root: its validation test will be skipped"; fi; }
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; \
	  else echo "chromium missing and not root: the browser tests will be skipped"; fi; }

# Two pytest workers (pytest-xdist): one core each; tests that share an expensive fixture (the
# Airflow stack) stay on one worker (tests/conftest.py).
# PYTEST_WORKERS= runs them in one process.
PYTEST_WORKERS ?= -n 2

## test: every test (unit, Spark 4.2 and the EMR release's 3.5, a multi-host cluster, Airflow,
## S3 and AWS API servers started by the tests).
test: $(STAMP) $(EMR_STAMP) system-deps
	pytest $(PYTEST_WORKERS)

## test-fast: the unit tests only (no Spark, S3, Airflow, EMR or slow test; markers are set
## by folder and fixture in tests/conftest.py), for the edit-test loop.
test-fast: $(STAMP)
	pytest $(PYTEST_WORKERS) -m "not (spark or s3 or airflow or emr or slow)"

## check: what CI runs before the tests: ruff (lint, imports, complexity, formatting), mypy on
## the jobs and the Airflow plugin, and the library's layer contracts (settings in pyproject.toml).
check: $(STAMP)
	ruff check .
	ruff format --check .
	mypy
	lint-imports

lint: $(STAMP)
	ruff check .

## lock: re-resolve the pins in constraints.txt from pyproject.toml's ranges.
## The torch pin is written without its local label (+cpu): `torch==X.Y.Z` matches PyPI's build
## and the CPU index's alike (PEP 440), so tools/install_torch.py may take either.
lock: | preflight
	rm -rf $(CURDIR)/.lock-venv && $(PYTHON) -m venv $(CURDIR)/.lock-venv
	grep -i '^torch==' constraints.txt > $(CURDIR)/.lock-venv/torch.txt
	$(CURDIR)/.lock-venv/bin/python tools/install_torch.py --constraints $(CURDIR)/.lock-venv/torch.txt
	$(CURDIR)/.lock-venv/bin/pip install --quiet -e '.[dev]'
	$(CURDIR)/.lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e' \
	  | sed -E 's/^(torch==[^+]+)\+.*$$/\1/I' > constraints.txt
	rm -rf $(CURDIR)/.lock-venv

## bench-*: measured performance, printed as Markdown tables (not tests; docs/performance.md).
BENCH_ARGS ?=
bench-data bench-train bench-generate bench-scale bench-run bench-hostile bench-continue: bench-%: $(AIRFLOW_HOME)/airflow.db
	python bench/bench_$*.py $(BENCH_ARGS)

## bench-mutation: mutants of the library killed by the tests, per module (about 2 h; run it
## alone). MODULE=storage re-runs one module (names: bench/bench_mutation.py's MODULES).
MODULE ?=
bench-mutation: $(STAMP)
	python bench/bench_mutation.py $(if $(MODULE),--module $(MODULE)) $(BENCH_ARGS)

clean:
	rm -rf $(AIRFLOW_HOME) runs .pytest_cache $(EMR_VENV)

comma := ,
