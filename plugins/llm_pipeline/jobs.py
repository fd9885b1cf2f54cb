"""The pipeline's Spark jobs, defined once for both ways of running them.

Local mode turns each job into a SparkSubmitOperator; EMR mode turns the same
list into ``command-runner.jar spark-submit`` steps. Arguments are Jinja
templates that Airflow renders in either mode, so a flag added here reaches
both and the modes cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

RUN_ROOT = "{{ ti.xcom_pull(task_ids='plan_run')['run_root'] }}"
REGISTRY = "{{ ti.xcom_pull(task_ids='plan_run')['registry'] }}"
# The deployment's allow-lists, fixed by plan_run and enforced again by the jobs (EMR too).
CORPUS_PREFIXES = "{{ ti.xcom_pull(task_ids='plan_run')['corpus_prefixes'] }}"
REGISTRY_PREFIXES = "{{ ti.xcom_pull(task_ids='plan_run')['registry_prefixes'] }}"
# Stands for a Jinja expression naming where the job scripts live: the local jobs/ folder,
# or the jobs/ folder of the code bundle uploaded for EMR (known only at run time).
CODE_ROOT = "CODE_ROOT"


def _flags(*names: str) -> tuple[tuple[str, str], ...]:
    """``--some-name {{ params.some_name }}`` for each DAG Param passed through unchanged."""
    return tuple((f"--{n.replace('_', '-')}", f"{{{{ params.{n} }}}}") for n in names)


@dataclass(frozen=True)
class SparkJob:
    """One stage: its entry script under ``jobs/`` and its templated command-line flags."""

    stage: str
    script: str
    flags: tuple[tuple[str, str], ...] = ()

    def arguments(self, code_root: str) -> list[str]:
        """The job's arguments after the script path, ``--run-root`` first.

        ``code_root`` is a Jinja expression for the jobs folder, e.g. ``'/opt/llm/jobs'``.
        """
        args = ["--run-root", RUN_ROOT]
        for flag, value in self.flags:
            args += [flag, value.replace(CODE_ROOT, code_root)]
        return args


PIPELINE: tuple[SparkJob, ...] = (
    SparkJob("preprocess", "preprocess.py", (
        ("--input", "{{ params.corpus }}"),
        ("--allowed-corpus-prefixes", CORPUS_PREFIXES),
        *_flags("val_fraction", "min_chars", "text_field", "max_line_bytes", "max_record_bytes",
                "max_decompressed_gb", "max_compression_ratio"),
    )),
    SparkJob("tokenize", "tokenize_corpus.py", _flags("vocab_size")),
    SparkJob("train", "train.py", _flags(
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
    )),
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
    )),
)  # fmt: skip
