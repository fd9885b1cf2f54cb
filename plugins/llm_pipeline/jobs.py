"""The pipeline's Spark jobs, defined once for both ways of running them.

Local mode turns each job into a SparkSubmitOperator; EMR mode turns the same
list into ``command-runner.jar spark-submit`` steps. Arguments are Jinja
templates that Airflow renders in either mode, so a flag added here reaches
both and the modes cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

RUN_ROOT = "{{ ti.xcom_pull(task_ids='plan_run') }}"


@dataclass(frozen=True)
class SparkJob:
    """One stage: its entry script under ``jobs/`` and its templated command-line flags."""

    stage: str
    script: str
    flags: tuple[tuple[str, str], ...] = ()

    def arguments(self, run_root: str = RUN_ROOT) -> list[str]:
        """The job's arguments after the script path, ``--run-root`` first."""
        args = ["--run-root", run_root]
        for flag, value in self.flags:
            args += [flag, value]
        return args


PIPELINE: tuple[SparkJob, ...] = (
    SparkJob(
        "preprocess",
        "preprocess.py",
        (
            ("--input", "{{ params.corpus }}"),
            ("--val-fraction", "{{ params.val_fraction }}"),
            ("--min-chars", "{{ params.min_chars }}"),
        ),
    ),
    SparkJob("tokenize", "tokenize_corpus.py", (("--vocab-size", "{{ params.vocab_size }}"),)),
)
