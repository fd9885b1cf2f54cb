# Two commands: `make run` (set up, then run the pipeline on the default corpus)
# and `make test` (set up, then run every test). Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

RUN_ID := local-$(shell date -u +%Y%m%dT%H%M%SZ)
RUN_ROOT ?= file://$(CURDIR)/runs/$(RUN_ID)
REGISTRY ?= file://$(CURDIR)/registry
RUN_CONF = {"run_root": "$(RUN_ROOT)", "registry": "$(REGISTRY)"$(if $(CORPUS),$(comma) "corpus": "$(CORPUS)")}
AIRFLOW_PORT ?= 8080
CORPUS ?=
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

.PHONY: setup system-deps run airflow test test-fast lint lock bench-data bench-train bench-generate bench-scale bench-run bench-hostile clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(BIN)/pip check
	touch $@

$(AIRFLOW_HOME)/airflow.db: $(STAMP)
	mkdir -p $(AIRFLOW_HOME)
	airflow db migrate > $(AIRFLOW_HOME)/migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/migrate.log; exit 1)

## run: the whole pipeline on local Spark; CORPUS=<uri or glob>, RUN_ROOT=<uri> and
## REGISTRY=<uri> override. A CORPUS given here is added to the corpus allow-list
## (llm_corpus_allowed_prefixes) for this run; REGISTRY becomes the llm_registry Variable.
run: $(AIRFLOW_HOME)/airflow.db
	$(if $(CORPUS),AIRFLOW_VAR_LLM_CORPUS_ALLOWED_PREFIXES="$${AIRFLOW_VAR_LLM_CORPUS_ALLOWED_PREFIXES:+$$AIRFLOW_VAR_LLM_CORPUS_ALLOWED_PREFIXES$(comma)}$(CORPUS)") \
	AIRFLOW_VAR_LLM_REGISTRY="$(REGISTRY)" airflow dags test llm_decoder --conf '$(RUN_CONF)'
	python -m sparklm.summary $(RUN_ROOT)

## airflow: a real local Airflow (api-server on 127.0.0.1:$(AIRFLOW_PORT), scheduler,
## dag-processor, triggerer; LocalExecutor on .airflow/airflow.db). Ctrl-C stops it all.
airflow: $(STAMP)
	python tests/airflow_stack.py --port $(AIRFLOW_PORT) --home $(AIRFLOW_HOME)

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

## test: every test (unit, Spark, Airflow, S3 and AWS API servers started by the tests).
test: $(STAMP) system-deps
	pytest

## test-fast: every test but the `slow` ones (a real Airflow stack, the browser).
test-fast: $(STAMP)
	pytest -m "not slow"

lint: $(STAMP)
	ruff check .

## lock: re-resolve the pins in constraints.txt from pyproject.toml's ranges.
lock:
	rm -rf $(CURDIR)/.lock-venv && $(PYTHON) -m venv $(CURDIR)/.lock-venv
	$(CURDIR)/.lock-venv/bin/pip install --quiet -e '.[dev]'
	$(CURDIR)/.lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf $(CURDIR)/.lock-venv

## bench-*: measured performance, printed as Markdown tables (not tests; see README).
BENCH_ARGS ?=
bench-data bench-train bench-generate bench-scale bench-run bench-hostile: bench-%: $(AIRFLOW_HOME)/airflow.db
	python bench/bench_$*.py $(BENCH_ARGS)

clean:
	rm -rf $(AIRFLOW_HOME) runs .pytest_cache

comma := ,
