"""The pipeline's Spark jobs, defined once for both ways of running them.

Local mode turns each job into a SparkSubmitOperator; EMR mode turns the same
list into ``command-runner.jar spark-submit`` steps. Arguments are Jinja
templates that Airflow renders in either mode, so a flag added here reaches
both and the modes cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Stands for a Jinja expression for the run's plan (plan_run's result: locations and
# allow-lists), which the DAG names by the task object (``xcom(planned)``), not by a task id.
PLAN = "PLAN"
RUN_ROOT = f"{{{{ {PLAN}['run_root'] }}}}"
REGISTRY = f"{{{{ {PLAN}['registry'] }}}}"
# The deployment's allow-lists, fixed by plan_run and enforced again by the jobs (EMR too).
CORPUS_PREFIXES = f"{{{{ {PLAN}['corpus_prefixes'] }}}}"
REGISTRY_PREFIXES = f"{{{{ {PLAN}['registry_prefixes'] }}}}"
# Stands for a Jinja expression naming where the job scripts live: the local jobs/ folder,
# or the jobs/ folder of the code bundle uploaded for EMR (known only at run time).
CODE_ROOT = "CODE_ROOT"


def xcom(task: Any) -> str:
    """A Jinja expression for what ``task`` (an operator, or a TaskFlow call's XComArg)
    returned. The id comes from the task object, so renaming the task cannot leave a stale
    id in a template: a reference to a task that no longer exists fails when the DAG parses."""
    operator = getattr(task, "operator", task)
    return f"ti.xcom_pull(task_ids={operator.task_id!r})"


def _flags(*names: str) -> tuple[tuple[str, str], ...]:
    """``--some-name {{ params.some_name }}`` for each DAG Param passed through unchanged."""
    return tuple((f"--{n.replace('_', '-')}", f"{{{{ params.{n} }}}}") for n in names)


@dataclass(frozen=True)
class SparkJob:
    """One stage: its entry script under ``jobs/``, its templated command-line flags and
    how the DAG runs it (both modes read these; nothing else special-cases a stage)."""

    stage: str
    script: str
    flags: tuple[tuple[str, str], ...] = ()
    # Local-mode task retries (transient faults; a job's bad-input exit is never retried).
    retries: int = 1
    # How long the EMR step watcher waits for the step.
    emr_timeout_hours: float = 4
    # Whether a successful run of this stage updates the model Asset (either mode).
    publishes_model: bool = False

    def arguments(self, code_root: str, plan: str) -> list[str]:
        """The job's arguments after the script path, ``--run-root`` first.

        ``code_root`` is a Jinja expression for the jobs folder, e.g. ``'/opt/llm/jobs'``;
        ``plan`` one for the run's plan, e.g. ``xcom(planned)``.
        """
        expressions = {CODE_ROOT: code_root, PLAN: plan}
        pattern = re.compile("|".join(map(re.escape, expressions)))
        args = []
        for flag, value in (("--run-root", RUN_ROOT), *self.flags):
            args += [flag, pattern.sub(lambda m: expressions[m.group()], value)]
        return args


PIPELINE: tuple[SparkJob, ...] = (
    SparkJob("preprocess", "preprocess.py", (
        ("--input", "{{ params.corpus }}"),
        ("--allowed-corpus-prefixes", CORPUS_PREFIXES),
        *_flags("val_fraction", "min_chars", "text_field", "max_line_bytes", "max_record_bytes",
                "max_decompressed_gb", "max_compression_ratio"),
    )),
    SparkJob("tokenize", "tokenize_corpus.py", _flags("vocab_size")),
    # A killed train task resumes from its last checkpointed round when retried; on EMR
    # training is the long stage.
    SparkJob("train", "train.py", retries=3, emr_timeout_hours=48, flags=_flags(
        "partitions", "rounds", "local_steps", "batch_size", "context_len", "n_layer", "n_head",
        "n_embd", "dropout", "lr", "warmup_steps", "weight_decay", "grad_clip", "outer",
        "outer_lr", "outer_momentum", "optimizer_state", "seed", "eval_tokens", "memory_budget_gb",
        "early_rounds", "early_local_steps", "position", "rope_theta", "norm", "norm_eps", "mlp",
        "intermediate_size", "qk_norm", "bias", "tie_embeddings", "optimizer", "muon_lr",
        "muon_momentum", "schedule", "decay_fraction", "min_lr_ratio",
    )),
    SparkJob("generate", "generate.py", (
        ("--prompts", f"{{{{ params.prompts_uri or {CODE_ROOT} ~ '/conf/prompts.txt' }}}}"),
        ("--prompts-json", "{{ params.prompts | tojson }}"),
        *_flags("max_new_tokens", "temperature", "top_k", "top_p", "memory_budget_gb"),
        ("--seed", "{{ params.sample_seed }}"),
    ), emr_timeout_hours=2),
    SparkJob("publish", "publish.py", (
        ("--registry", REGISTRY),
        ("--allowed-registry-prefixes", REGISTRY_PREFIXES),
        ("--model-name", "{{ params.model_name }}"),
        ("--tolerance", "{{ params.promotion_tolerance }}"),
        ("--eval-input", "{{ params.eval_input or '' }}"),
        ("--allowed-corpus-prefixes", CORPUS_PREFIXES),
        ("--require-approval", "{{ params.require_approval }}"),
        ("--dag-run-id", "{{ run_id }}"),
        *_flags("memory_budget_gb"),
    ), emr_timeout_hours=1, publishes_model=True),
)  # fmt: skip
