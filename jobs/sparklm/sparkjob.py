"""The thin shell every Spark job shares: logging, the error contract, the session."""

from __future__ import annotations

import argparse
import logging
import resource
import sys
from collections.abc import Callable, Sequence

from sparklm import storage
from sparklm.errors import PipelineError
from sparklm.stage import stage_uri

log = logging.getLogger("sparklm")
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"


def run(main: Callable[[Sequence[str]], dict | None], argv: Sequence[str] | None = None) -> None:
    """Run a job's ``main``; a PipelineError ends it with one clear line and exit status 2.

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
    except PipelineError as exc:
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Exception as exc:
        message = storage.unreachable_message(exc)
        if message is None:
            raise
        print(f"ERROR: {message}", file=sys.stderr, flush=True)
        sys.exit(1)  # transient: the task's retry may well succeed
    if manifest:
        print(
            f"{manifest['stage']} committed: {stage_uri(manifest['run_root'], manifest['stage'])}"
        )


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the option every job takes: where the run's artifacts live."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--run-root",
        required=True,
        type=storage.normalize_uri,
        help="URI of the run: file://… or s3://bucket/prefix (a local path is made absolute)",
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


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
