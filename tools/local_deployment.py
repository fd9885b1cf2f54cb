"""The local deployment that ``make run`` and ``make airflow`` share, kept where Airflow keeps
its settings: Variables in the metadata database of ``$AIRFLOW_HOME``.

``plan_run`` reads them for every run (``airflow dags test`` from ``make run``, a run
triggered in the UI of ``make airflow``, an Asset event) and the Models view reads the
registry from them, so all of them see the same runs folder and the same registry.
A corpus ``make run CORPUS=…`` was given stays allowed for later runs.

    python tools/local_deployment.py --runs-base URI --registry URI [--allow-corpus URI[,URI…]]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

RUNS_BASE = "llm_runs_base"
REGISTRY = "llm_registry"
CORPUS_PREFIXES = "llm_corpus_allowed_prefixes"


def widened(current: str, additions: str) -> str:
    """``current``'s comma-separated entries, then each of ``additions`` not already there."""
    entries = [e for e in current.split(",") if e]
    entries += [a for a in additions.split(",") if a and a not in entries]
    return ",".join(entries)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-base", required=True, help="where runs without a run root go")
    parser.add_argument("--registry", required=True, help="where models are published")
    parser.add_argument("--allow-corpus", default="", help="corpora to add to the allow-list")
    args = parser.parse_args(argv)

    from airflow.models import Variable

    Variable.set(RUNS_BASE, args.runs_base)
    Variable.set(REGISTRY, args.registry)
    if args.allow_corpus:
        current = Variable.get(CORPUS_PREFIXES, default_var="")
        Variable.set(CORPUS_PREFIXES, widened(current, args.allow_corpus))


if __name__ == "__main__":
    main()
