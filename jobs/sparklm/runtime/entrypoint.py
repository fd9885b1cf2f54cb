"""The thin shell every Spark job shares: logging, the error contract, the session."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from sparklm.runtime import exit_codes
from sparklm.runtime.errors import PipelineError
from sparklm.runtime.ownership import check_run_root
from sparklm.runtime.stages import stage_uri

log = logging.getLogger("sparklm")
DEFAULT_MEMORY_KNOBS = "give each task less data (more partitions)"
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"


def run(
    main: Callable[[Sequence[str]], dict | None],
    argv: Sequence[str] | None = None,
    *,
    memory_knobs: str = DEFAULT_MEMORY_KNOBS,
) -> None:
    """Run a job's ``main``; a deterministic failure ends it with one clear line and exit 2.

    Bad input (a PipelineError) and failures a retry cannot fix (running out of
    memory, a malformed dump: ``exit_codes.classify``) print ``ERROR: …`` naming the
    cause and the knob to turn (``memory_knobs``: the job's own settings that
    shrink it) and exit 2; S3 being unreachable prints its line and exits 1;
    anything else raises (traceback, exit 1), and the task is retried.
    ``main`` returns the manifest it committed (if any); its location is printed
    last so a shell user (or a wrapper script) sees where the stage landed.
    """
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        manifest = main(sys.argv[1:] if argv is None else argv)
    except Exception as exc:  # MemoryError included
        verdict = exit_codes.classify(exc, memory_knobs)
        if verdict is None:
            raise
        print(f"ERROR: {verdict.message}", file=sys.stderr, flush=True)
        sys.exit(verdict.exit_code)
    if manifest:
        print(
            f"{manifest['stage']} committed: {stage_uri(manifest['run_root'], manifest['stage'])}"
        )


class JobArgumentParser(argparse.ArgumentParser):
    """Bad flags end a job like any other bad input (``run``): one ``ERROR:`` line naming the
    flag and the rule, exit 2, instead of argparse's usage text."""

    def error(self, message: str) -> NoReturn:
        raise PipelineError(f"{message} (see --help)")


def parser(description: str, run_root: bool = True) -> JobArgumentParser:
    """A job's argument parser, with (``run_root``) the option most jobs take: where the run's
    artifacts live."""
    p = JobArgumentParser(description=description)
    if not run_root:
        return p
    p.add_argument(
        "--run-root",
        required=True,
        type=check_run_root,
        help="URI of the run: file://… or s3://bucket/prefix (a local path is made absolute); "
        "not a filesystem root, a bare bucket, the home directory or the project checkout",
    )
    return p


def spark_session(app_name: str):
    """Get the session spark-submit configured; the master always comes from spark-submit.

    Settings the user made (``--conf``, ``spark-defaults.conf``, EMR's configuration)
    win. Only ``spark.sql.shuffle.partitions`` gets a default of our own when nobody set
    it: Spark's 200 turns this pipeline's modest shuffles into hundreds of near-empty
    tasks (preprocess of the default corpus run alone took about twice as long), so it
    follows the task slots the job was given instead.
    """
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(app_name).getOrCreate()
    context = spark.sparkContext
    context.setLogLevel("WARN")
    if not context.getConf().contains(SHUFFLE_PARTITIONS):
        spark.conf.set(SHUFFLE_PARTITIONS, str(context.defaultParallelism))
    return spark


def widen_shuffles(spark, tasks: int) -> None:
    """Make shuffles as wide as the job's read tasks (at least its task slots), whatever was
    set: persisted DataFrames keep their partitioning (adaptive execution does not coalesce
    them), so a fixed width would either cost a task per near-empty partition or leave the
    read tasks' output in too few. The one exception to ``spark_session``'s rule, for jobs
    that read many files."""
    spark.conf.set(SHUFFLE_PARTITIONS, str(max(spark.sparkContext.defaultParallelism, tasks)))
