"""The thin shell every Spark job shares: logging, the error contract, the session."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from sparklm.errors import PipelineError

log = logging.getLogger("sparklm")


def run(main: Callable[[Sequence[str]], None], argv: Sequence[str] | None = None) -> None:
    """Run a job's ``main``; a PipelineError ends it with one clear line and exit status 2."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        main(sys.argv[1:] if argv is None else argv)
    except PipelineError as exc:
        log.error("%s", exc)
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the option every job takes: where the run's artifacts live."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--run-root", required=True, help="URI of the run: file://… or s3://bucket/prefix")
    return p


def spark_session(app_name: str):
    """Get the session spark-submit configured; the master always comes from spark-submit."""
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(app_name).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
