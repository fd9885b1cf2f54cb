"""The trigger form: every knob of the pipeline as a validated, documented Param.

JSON-schema bounds here are checked by Airflow when a run is triggered (UI,
API or ``airflow dags test -c``), so a bad value is refused before any Spark
job starts. The jobs validate again, for users who run them by hand.

Conventions of the form (Airflow 3.3's trigger form reads the JSON schema):

- Each section function below returns its Params in display order and
  ``sectioned`` stamps the section name on them; a new Param goes into the
  section function it belongs to, nowhere else.
- Every Param has a ``title`` (the label) and a ``description`` (the help text).
- A Param whose ``type`` lacks ``"null"`` is *required* by the form, and ``""``
  counts as missing there: a Param that may be left empty is ``optional(...)``,
  typed ``["null", …]`` with a ``None`` default, and whoever reads it (a job
  template, ``plan_run``) treats ``None`` as "use the default".
- Bounds the form itself enforces are ``minimum``/``maximum`` (it refuses a
  negative learning rate as you type); ``exclusiveMinimum``/``exclusiveMaximum``
  are added where zero itself is invalid and are checked when the run is
  submitted.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from airflow.sdk import Param

from llm_pipeline.emr import EMR_RELEASE_LABEL

DEFAULT_CORPUS = "pkg://gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# Form sections, in the order the README's "The DAG" table lists them.
SECTIONS = ("Data", "Model", "Training", "Generation", "Publish", "EMR")
S3_URI = r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?"
# Where a run may read from: S3, a local file, or a data file inside an installed package.
READ_URI_PATTERN = rf"^({S3_URI}|file:///.+|pkg://[A-Za-z_][\w.]*/.+|/.+)$"
# Where a run may write (run roots, registries): S3 or an absolute file:/// path, never a
# package folder; no "." or ".." segment (plan_run checks the rest).
WRITE_URI_PATTERN = rf"^(?!.*/\.\.?(/|$))({S3_URI}|file:///.+)$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def pipeline_params() -> dict[str, Param]:
    """Every Param of the DAG, grouped into the form's sections."""
    return {
        **sectioned("Data", data_params()),
        **sectioned("Model", model_params()),
        **sectioned("Training", training_params()),
        **sectioned("Generation", generation_params()),
        **sectioned("Publish", publish_params()),
        **sectioned("EMR", emr_params()),
    }


def sectioned(section: str, params: dict[str, Param]) -> dict[str, Param]:
    """Put ``params`` into one section of the trigger form."""
    assert section in SECTIONS, section
    for param in params.values():
        param.schema["section"] = section
    return params


def param(default: Any, title: str, description: str, **schema: Any) -> Param:
    """A Param the form requires (its type has no ``"null"``); the default fills it in."""
    return Param(default, title=title, description=description, **schema)


def optional(kind: str, title: str, description: str, **schema: Any) -> Param:
    """A Param that may stay empty: ``None`` by default, which its reader replaces."""
    return Param(None, type=["null", kind], title=title, description=description, **schema)


def integer(default: int, low: int, high: int, title: str, description: str) -> Param:
    return param(default, title, description, type="integer", minimum=low, maximum=high)


def number(default: float, title: str, description: str, **bounds: float) -> Param:
    return param(default, title, description, type="number", **bounds)


def positive(default: float, high: float, title: str, description: str) -> Param:
    """A number > 0: the form refuses negatives as you type, zero on submit."""
    return number(default, title, description, minimum=0, exclusiveMinimum=0, maximum=high)


def choice(default: str, options: list[str], title: str, description: str) -> Param:
    return param(default, title, description, type="string", enum=options)


def write_location(title: str, description: str) -> Param:
    return optional("string", title, description, pattern=WRITE_URI_PATTERN, maxLength=1024)


def data_params() -> dict[str, Param]:
    """Where the run happens, what it reads and how the corpus becomes tokens."""
    return {
        "env": choice("local", ["local", "emr"], "Where Spark runs",
                      "local: spark-submit on the spark_local connection's master. emr: a "
                      "transient EMR cluster (needs s3:// run root and registry, and the "
                      "aws_default connection)."),
        "corpus": param(
            DEFAULT_CORPUS, "Corpus URI",
            "Comma-separated files, directories or globs of plain text, JSON Lines, Parquet or "
            "MediaWiki XML dumps (multistream dumps with their index), plain or "
            ".gz/.bz2/.xz/.zst, on s3://, file:// or pkg://. The default is a 206-page English "
            "Wikipedia dump shipped in the gensim wheel.",
            type="string", minLength=1, maxLength=4096, pattern=r"^[^,\s]+(,[^,\s]+)*$"),
        "run_root": write_location(
            "Run root URI",
            "Where this run's artifacts go: s3://bucket/prefix or file:///absolute/path. "
            "Empty: {llm_runs_base Variable}/{run_id}."),
        "val_fraction": number(0.1, "Validation share of documents",
                               "Share of documents held out for validation (split by a hash "
                               "of the document id).",
                               minimum=0, exclusiveMinimum=0, maximum=0.5, exclusiveMaximum=0.5),
        "min_chars": integer(8, 1, 10000, "Minimum line length",
                             "Cleaned lines shorter than this many characters are dropped."),
        "text_field": param("text", "Text field",
                            "JSON Lines field / Parquet column holding the text; dotted paths "
                            "reach nested fields, e.g. meta.content. Records without it are "
                            "counted and dropped.",
                            type="string", pattern=r"^[^.\s]+(\.[^.\s]+)*$", maxLength=256),
        "max_line_bytes": integer(2**20, 1024, 2**30, "Longest line kept whole (bytes)",
                                  "Longer lines (a one-line corpus such as text8) are cut at "
                                  "whitespace into pieces of at most this size: memory stays "
                                  "flat."),
        "max_record_bytes": integer(32 * 2**20, 1024, 2**30, "Largest record (bytes)",
                                    "JSON Lines records, Parquet values and wiki pages larger "
                                    "than this are dropped and counted in the preprocess "
                                    "manifest."),
        "max_decompressed_gb": positive(50, 100_000, "Largest decompressed file (GB)",
                                        "A compressed file expanding beyond this stops "
                                        "preprocess with an error naming this knob "
                                        "(decompression bombs)."),
        "max_compression_ratio": number(200, "Largest compression ratio",
                                        "Decompressed ÷ compressed size of one file. Text "
                                        "compresses 3-10×; a decompression bomb expands 1000× or "
                                        "more and stops preprocess with an error.",
                                        minimum=1, maximum=1_000_000),
        "vocab_size": integer(4096, 258, 65536, "BPE vocabulary size",
                              "Byte-level BPE tokens, including the 256 bytes and 2 specials; "
                              "shrinks with a warning if the corpus supports fewer."),
    }  # fmt: skip


def model_params() -> dict[str, Param]:
    """The GPT's shape and block (defaults: Qwen3's block, the best measured; README)."""
    return {
        "context_len": integer(128, 8, 8192, "Context length",
                               "Tokens the model sees at once (training windows and the "
                               "generation window)."),
        "n_layer": integer(4, 1, 96, "Transformer blocks", "Number of decoder blocks."),
        "n_head": integer(4, 1, 64, "Attention heads", "Heads per attention layer."),
        "n_embd": integer(128, 8, 8192, "Model width",
                          "Embedding size; must be a multiple of the attention heads."),
        "dropout": number(0.0, "Dropout", "Dropout probability during training (0 = off).",
                          minimum=0, maximum=1, exclusiveMaximum=1),
        "position": choice("rope", ["learned", "rope"], "Position encoding",
                           "learned: a position table (GPT-2); rope: rotary embeddings on "
                           "queries and keys (Llama, Qwen3)."),
        "rope_theta": positive(10000.0, 1e9, "RoPE base θ", "Base of the rotary frequencies."),
        "norm": choice("rmsnorm", ["layernorm", "rmsnorm"], "Normalisation",
                       "layernorm (GPT-2) or weight-only rmsnorm (Llama, Qwen3)."),
        "norm_eps": positive(1e-5, 0.1, "Norm epsilon", "Epsilon of the normalisation layers."),
        "mlp": choice("swiglu", ["gelu", "swiglu"], "MLP",
                      "gelu (GPT-2) or swiglu: down(silu(gate(x)) · up(x)) (Llama, Qwen3)."),
        "intermediate_size": integer(0, 0, 65536, "MLP hidden size",
                                     "0: 4·width for gelu, about 8/3·width for swiglu."),
        "qk_norm": param(True, "QK-norm", "RMSNorm on each head's queries and keys (Qwen3).",
                         type="boolean"),
        "bias": param(False, "Biases in linear layers", "GPT-2 has them; Llama and Qwen3 not.",
                      type="boolean"),
        "tie_embeddings": param(True, "Tied output head",
                                "The output head shares the token embedding's weights.",
                                type="boolean"),
    }  # fmt: skip


def training_params() -> dict[str, Param]:
    """The distributed optimisation: replicas, rounds, inner AdamW and the outer step."""
    return {
        "partitions": integer(2, 1, 1024, "Replicas",
                              "Spark partitions, each training its own replica in parallel."),
        "rounds": integer(12, 1, 100_000, "Averaging rounds",
                          "How many times the replicas' weights are averaged."),
        "local_steps": integer(25, 1, 100_000, "Local steps per round",
                               "Optimizer steps per replica between averagings. DL4J advises 5–10 "
                               "for plain averaging; DiLoCo uses hundreds with the nesterov "
                               "outer optimizer."),
        "batch_size": integer(16, 1, 4096, "Batch size", "Windows per step per replica."),
        "early_rounds": integer(0, 0, 100_000, "Early rounds",
                                "Post-local SGD: the first early_rounds rounds average every "
                                "early_local_steps steps, before the usual interval."),
        "early_local_steps": integer(1, 1, 100_000, "Inner steps per early round",
                                     "Local steps between averagings during the early rounds."),
        "optimizer": choice("muon", ["adamw", "muon"], "Inner optimizer",
                            "adamw; or muon: Muon on the blocks' weight matrices and AdamW on "
                            "embeddings, head, gains and biases."),
        "lr": positive(3e-3, 1, "Learning rate (AdamW)",
                       "Peak inner AdamW learning rate, after warm-up."),
        "muon_lr": positive(0.02, 10, "Learning rate (Muon)",
                            "Peak Muon learning rate (optimizer muon only)."),
        "muon_momentum": number(0.95, "Muon momentum", "Momentum of Muon (optimizer muon only).",
                                minimum=0, maximum=1, exclusiveMaximum=1),
        "schedule": choice("cosine", ["cosine", "wsd"], "Learning-rate schedule",
                           "After warm-up: cosine decay, or wsd (warm-up, stable, then a linear "
                           "decay over the last decay_fraction of the steps)."),
        "decay_fraction": positive(0.2, 1, "WSD decay share",
                                   "Share of the steps in the final linear decay (wsd only)."),
        "min_lr_ratio": number(0.1, "Final learning rate ÷ peak",
                               "Where the decay ends, relative to the peak.",
                               minimum=0, maximum=1),
        "warmup_steps": integer(30, 0, 1_000_000, "Warm-up steps",
                                "Linear warm-up steps before the decay."),
        "weight_decay": number(0.1, "Weight decay", "AdamW weight decay.", minimum=0, maximum=1),
        "grad_clip": positive(1.0, 1000, "Gradient clip", "Clip gradients to this global norm."),
        "outer": choice("avg", ["avg", "nesterov"], "Outer optimizer",
                        "avg: plain parameter averaging every round; nesterov: DiLoCo's outer "
                        "Nesterov step on the averaged delta."),
        "outer_lr": positive(0.7, 10, "Outer learning rate",
                             "Step size of the nesterov outer optimizer (ignored by avg)."),
        "outer_momentum": number(0.9, "Outer momentum",
                                 "Momentum of the nesterov outer optimizer (ignored by avg).",
                                 minimum=0, maximum=1, exclusiveMaximum=1),
        "optimizer_state": choice("averaged", ["averaged", "reset"],
                                  "Inner optimizer state across rounds",
                                  "averaged: AdamW moments and Muon momentum averaged like the "
                                  "weights and carried on; reset: a fresh optimizer every round."),
        "seed": integer(1337, 0, 2**31 - 1, "Training seed",
                        "Seeds initialisation and batch sampling: same seed, same model."),
        "eval_tokens": integer(32768, 64, 100_000_000, "Validation tokens",
                               "Validation tokens scored after each round."),
        "memory_budget_gb": number(
            8.0, "Memory budget per process (GB)",
            "Runs whose model would need more (estimated from its size: weights, AdamW state, "
            "activations of a batch) in the driver or one replica are refused before anything "
            "is allocated.",
            minimum=0, exclusiveMinimum=0, maximum=4096),
    }  # fmt: skip


def generation_params() -> dict[str, Param]:
    """Sampling after training: prompts and decoding settings."""
    return {
        "prompts_uri": optional(
            "string", "Prompts file URI",
            "A text file with one prompt per line (s3://, file://, pkg:// or an absolute "
            "path). Empty: the seed prompts shipped with the jobs (jobs/conf/prompts.txt).",
            pattern=READ_URI_PATTERN, maxLength=1024),
        "prompts": param([], "Extra inline prompts", "Prompts sampled in addition to the file's.",
                         type="array", items={"type": "string", "minLength": 1}, maxItems=1000),
        "max_new_tokens": integer(64, 1, 4096, "New tokens per prompt",
                                  "Generation stops here or at the end-of-document token."),
        "temperature": number(0.8, "Temperature",
                              "Divides the logits; 0 is greedy decoding.", minimum=0, maximum=10),
        "top_k": integer(50, 0, 65536, "Top-k", "Sample among the k likeliest tokens (0 = off)."),
        "top_p": number(0.95, "Top-p", "Nucleus sampling: the smallest set with mass ≥ p "
                        "(1 = off).", minimum=0, exclusiveMinimum=0, maximum=1),
        "sample_seed": integer(0, 0, 2**31 - 1, "Sampling seed",
                               "Prompt i samples with seed + i: same seed, same text."),
    }  # fmt: skip


def publish_params() -> dict[str, Param]:
    """Where the model is registered and when it becomes the latest."""
    return {
        "registry": write_location(
            "Model registry URI",
            "Where publish writes versions: s3://bucket/prefix or file:///absolute/path. "
            "Empty: the llm_registry Variable."),
        "model_name": param("wiki-gpt", "Registered model name",
                            "One path segment: letters, digits, '.', '_' and '-'.",
                            type="string", pattern=NAME_PATTERN),
        "promotion_tolerance": number(
            0.0, "Promotion tolerance (bits/byte)",
            "latest.json moves to the new version when its bits/byte on the registry's "
            "evaluation set is at most this much worse than the current latest's on the same "
            "set.", minimum=0, maximum=10),
        "eval_input": optional(
            "string", "Evaluation set URI",
            "Text or JSON Lines files (comma-separated, globs) both the new and the current "
            "model are scored on; becomes the registry's evaluation set if the new model is "
            "promoted. Empty: the registry's set in force (the first version's validation "
            "split).", pattern=r"^[^,\s]+(,[^,\s]+)*$", maxLength=4096),
        "require_approval": param(
            False, "Require human approval",
            "Publish the version but move latest.json only after a person approves it in the "
            "approve_promotion task (both models' bits/byte and sample generations are shown).",
            type="boolean"),
    }  # fmt: skip


def emr_params() -> dict[str, Param]:
    """Cluster settings for env=emr; account-specific values stay out of the code."""
    return {
        "emr_release_label": param(EMR_RELEASE_LABEL, "EMR release",
                                   "An EMR 7.x release (Spark 3.5).",
                                   type="string", pattern=r"^emr-7\.\d+\.\d+$"),
        "emr_job_flow_role": param("EMR_EC2_DefaultRole", "EC2 instance profile",
                                   "The instance profile of the cluster nodes.",
                                   type="string", minLength=1),
        "emr_service_role": param("EMR_DefaultRole", "EMR service role",
                                  "The role EMR assumes to manage the cluster.",
                                  type="string", minLength=1),
        "emr_subnet_id": optional("string", "Subnet",
                                  "The cluster's subnet (subnet-…). Empty: the account's "
                                  "default VPC.", pattern=r"^subnet-[0-9a-f]+$"),
    }  # fmt: skip


class UnknownConfKeys(ValueError):
    """A run was triggered with ``conf`` keys that are not Params (a typo, an old name)."""


def check_conf_keys(conf: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Refuse conf keys that are not Params, suggesting the Param each one probably meant."""
    valid = sorted(valid)
    unknown = sorted(set(conf) - set(valid))
    if not unknown:
        return
    problems = []
    for key in unknown:
        guess = closest_param(key, valid)
        problems.append(f"{key!r}" + (f" (did you mean {guess!r}?)" if guess else ""))
    raise UnknownConfKeys(
        f"unknown conf key{'s' if len(unknown) > 1 else ''} {', '.join(problems)}: "
        f"fix the name; valid keys are {', '.join(valid)}"
    )


def closest_param(key: str, valid: list[str]) -> str | None:
    """The Param a mistyped key most likely meant: the same name with ``-`` or another case,
    its initials (``learning_rate`` → ``lr``), or the closest spelling."""
    name = key.strip().lower().replace("-", "_")
    initials = "".join(word[0] for word in name.split("_") if word)
    for candidate in (name, initials):
        if candidate in valid:
            return candidate
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return close[0] if close else None
