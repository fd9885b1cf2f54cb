"""Every knob of the pipeline, defined once: type, default, bounds or choices, title, help.

Three consumers are built from ``SETTINGS`` and state none of it themselves: the
trigger form's Params (``llm_pipeline.params``), each job's command line
(``add_arguments``) and the config dataclasses' defaults (``default``). A value is
checked by the same ``Setting.check`` wherever it enters: the form (JSON schema,
plus ``check`` in ``plan_run`` for what JSON schema cannot say, such as NaN), a
job's flag, a dataclass. Pure Python, so the DAG file can import it at parse time.

Adding a knob: one ``Setting`` below, then the code that uses its value.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The pipeline's stages, in run order: the DAG's job list, the run summary and the
# registry's lineage all follow this tuple.
STAGES = ("preprocess", "tokenize", "train", "generate", "publish")
# The trigger form's sections, in display order.
SECTIONS = ("Data", "Model", "Training", "Generation", "Publish", "EMR")

DEFAULT_CORPUS = (
    "pkg://gensim/test/test_data/"
    "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
DEFAULT_EMR_RELEASE = "emr-7.9.0"
S3_URI = r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?"
# Where a run may read from: S3, a local file, or a data file inside an installed package.
READ_URI_PATTERN = rf"^({S3_URI}|file:///.+|pkg://[A-Za-z_][\w.]*/.+|/.+)$"
# Where a run may write (run roots, registries): S3 or an absolute file:/// path, never a
# package folder; no "." or ".." segment (plan_run checks the rest).
WRITE_URI_PATTERN = rf"^(?!.*/\.\.?(/|$))({S3_URI}|file:///.+)$"
URI_LIST_PATTERN = r"^[^,\s]+(,[^,\s]+)*$"
# One path segment: a model name or a version (never "..", never a slash).
NAME_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

# A list setting travels to its job as one JSON argument; Linux refuses an argument over
# 128 KiB (spark-submit would fail with "Argument list too long"), so lists stay well below.
MAX_ARGUMENT_BYTES = 64 * 2**10
KINDS = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}


class SettingError(ValueError):
    """A value outside what its setting allows; the message names the flag and the rule."""


@dataclass(frozen=True)
class Setting:
    """One knob. ``stages`` are the jobs that take it as a flag; ``section`` is where the
    trigger form shows it (empty: the command line only). ``optional`` settings may be left
    empty (``None``), which whoever reads them replaces with a default of its own.
    ``only_when`` (another setting's name and value) says when the setting has any effect;
    its help says so, and a run that sets it otherwise is told (``ignored_settings``)."""

    name: str
    default: Any
    title: str
    help: str
    section: str = ""
    stages: tuple[str, ...] = ()
    kind: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    max_items: int | None = None
    optional: bool = False
    flag: str = ""
    only_when: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", KINDS[type(self.default)])
        assert self.section in ("", *SECTIONS), self.section
        assert set(self.stages) <= set(STAGES), self.stages

    @property
    def cli_flag(self) -> str:
        """The jobs' flag: ``--<name with dashes>`` unless the spec names another."""
        return self.flag or "--" + self.name.replace("_", "-")

    def check(self, value: Any, label: str = "") -> Any:
        """``value`` if the setting allows it; otherwise a SettingError saying what would,
        naming the setting by ``label`` (default: its flag)."""
        label = label or self.cli_flag
        if value is None and self.optional:
            return value
        if self.kind in ("integer", "number"):
            self._check_number(value, label)
        elif self.kind == "string":
            self._check_string(value, label)
        elif self.kind == "array":
            self._check_array(value, label)
        elif not isinstance(value, bool):
            raise SettingError(f"{label} must be true or false, got {value!r}")
        return value

    def _check_number(self, value: Any, label: str) -> None:
        wanted = int if self.kind == "integer" else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise SettingError(f"{label} must be {self.kind_text()}, got {value!r}")
        if not math.isfinite(value):
            raise SettingError(f"{label} must be a finite number, got {value}")
        low_ok = self.minimum is None or (
            value > self.minimum if self.exclusive_minimum else value >= self.minimum
        )
        high_ok = self.maximum is None or (
            value < self.maximum if self.exclusive_maximum else value <= self.maximum
        )
        if not (low_ok and high_ok):
            raise SettingError(f"{label} must be {self.range_text()}, got {value}")

    def _check_string(self, value: Any, label: str) -> None:
        if not isinstance(value, str):
            raise SettingError(f"{label} must be a string, got {value!r}")
        if self.choices and value not in self.choices:
            raise SettingError(f"{label} must be one of {', '.join(self.choices)}, got {value!r}")
        too_short = self.min_length is not None and len(value) < self.min_length
        too_long = self.max_length is not None and len(value) > self.max_length
        if too_short or too_long:
            raise SettingError(
                f"{label} must have {self.min_length or 0}–{self.max_length} characters, "
                f"got {len(value)}"
            )
        if self.pattern and not re.fullmatch(self.pattern.removeprefix("^").removesuffix("$"),
                                              value):  # fmt: skip
            raise SettingError(f"{label} {value[:200]!r} does not match {self.pattern}")

    def _check_array(self, value: Any, label: str) -> None:
        if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
            raise SettingError(f"{label} must be a list of non-empty strings")
        if self.max_items is not None and len(value) > self.max_items:
            raise SettingError(
                f"{label} holds {len(value)} items, at most {self.max_items} allowed"
            )
        text = json.dumps(value)  # as the DAG's tojson renders it: ASCII, <>&' as \u00XX
        encoded = len(text) + 5 * sum(text.count(c) for c in "<>&'")
        if encoded > MAX_ARGUMENT_BYTES:
            raise SettingError(
                f"{label} is {encoded:,} bytes as JSON, more than one command-line argument may "
                f"hold here ({MAX_ARGUMENT_BYTES:,}): put them in a file (prompts_uri) instead"
            )

    def kind_text(self) -> str:
        """What a value of this kind is, in words."""
        return {"integer": "an integer", "number": "a number", "boolean": "true or false",
                "array": "a JSON list of strings"}.get(self.kind, "a string")  # fmt: skip

    @property
    def description(self) -> str:
        """The help, and when the setting applies: what the form and ``--help`` show."""
        if self.only_when is None:
            return self.help
        other, value = self.only_when
        return f"{self.help} Applies only when {other} is {value}."

    def help_text(self) -> str:
        """The description with the default and what is allowed, for a job's ``--help``."""
        rules = [f"default: {self.default!r}"]
        if self.kind in ("integer", "number") and self.range_text():
            rules.append(self.range_text())
        if self.choices:
            rules.append("one of " + ", ".join(self.choices))
        return f"{self.description} ({'; '.join(rules)})"

    def range_text(self) -> str:
        """The bounds in words, e.g. ``> 0 and <= 1``."""
        parts = []
        if self.minimum is not None:
            parts.append(f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"{'<' if self.exclusive_maximum else '<='} {self.maximum:g}")
        return " and ".join(parts)

    def parse(self, text: str) -> Any:
        """A command-line value: the setting's type from its text, then checked."""
        if self.optional and text == "":
            return None
        try:
            value: Any
            if self.kind == "boolean":
                if text.lower() not in ("true", "false"):
                    raise ValueError
                value = text.lower() == "true"
            elif self.kind == "integer":
                value = int(text)
            elif self.kind == "number":
                value = float(text)
            elif self.kind == "array":
                value = json.loads(text)
            else:
                value = text
        except ValueError:
            raise SettingError(
                f"{self.cli_flag} must be {self.kind_text()}, got {text[:200]!r}"
            ) from None
        return self.check(value)

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema the trigger form validates this setting with."""
        schema: dict[str, Any] = {"type": ["null", self.kind] if self.optional else self.kind}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
            if self.exclusive_minimum:
                schema["exclusiveMinimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
            if self.exclusive_maximum:
                schema["exclusiveMaximum"] = self.maximum
        optional_schema = {
            "enum": list(self.choices) or None,
            "pattern": self.pattern,
            "minLength": self.min_length,
            "maxLength": self.max_length,
            "maxItems": self.max_items,
            "items": {"type": "string", "minLength": 1} if self.kind == "array" else None,
        }
        schema.update({k: v for k, v in optional_schema.items() if v is not None})
        return schema


def _integer(name: str, default: int, low: int, high: int, title: str, help: str,
             **more: Any) -> Setting:  # fmt: skip
    return Setting(name, default, title, help, minimum=low, maximum=high, **more)


def _positive(name: str, default: float, high: float, title: str, help: str,
              **more: Any) -> Setting:  # fmt: skip
    """A number > 0: the form refuses negatives as you type, zero on submit."""
    return Setting(name, default, title, help, kind="number", minimum=0, exclusive_minimum=True,
                   maximum=high, **more)  # fmt: skip


def _fraction(name: str, default: float, title: str, help: str, **more: Any) -> Setting:
    """A number in [0, 1)."""
    return Setting(name, default, title, help, kind="number", minimum=0, maximum=1,
                   exclusive_maximum=True, **more)  # fmt: skip


def _choice(name: str, default: str, choices: tuple[str, ...], title: str, help: str,
            **more: Any) -> Setting:  # fmt: skip
    return Setting(name, default, title, help, choices=choices, **more)


_DATA: dict[str, Any] = {"section": "Data", "stages": ("preprocess",)}
DATA_SETTINGS = (
    _choice("env", "local", ("local", "emr"), "Where Spark runs",
            "local: spark-submit on the spark_local connection's master. emr: a transient "
            "EMR cluster (needs s3:// run root and registry, and the aws_default "
            "connection).", section="Data"),
    Setting("corpus", DEFAULT_CORPUS, "Corpus URI",
            "Comma-separated files, directories or globs of plain text, JSON Lines, Parquet "
            "or MediaWiki XML dumps (multistream dumps with their index), plain or "
            ".gz/.bz2/.xz/.zst, on s3://, file:// or pkg://. The default is a 206-page "
            "English Wikipedia dump shipped in the gensim wheel.",
            min_length=1, max_length=4096, pattern=URI_LIST_PATTERN, flag="--input", **_DATA),
    Setting("run_root", None, "Run root URI",
            "Where this run's artifacts go: s3://bucket/prefix or file:///absolute/path. "
            "Empty: {llm_runs_base Variable}/{run_id}.", section="Data", kind="string",
            optional=True, pattern=WRITE_URI_PATTERN, max_length=1024),
    Setting("val_fraction", 0.1, "Validation share of documents",
            "Share of documents held out for validation (split by a hash of the document "
            "id).", minimum=0, exclusive_minimum=True, maximum=0.5, exclusive_maximum=True,
            **_DATA),
    Setting("val_input", None, "Validation corpus URI",
            "A held-out corpus (same forms as the corpus): its documents form the "
            "validation split and val_fraction is ignored.", kind="string", optional=True,
            pattern=URI_LIST_PATTERN, max_length=4096, stages=("preprocess",)),
    _integer("min_chars", 8, 1, 10000, "Minimum line length",
             "Cleaned lines shorter than this many characters are dropped.", **_DATA),
    Setting("text_field", "text", "Text field",
            "JSON Lines field / Parquet column holding the text; dotted paths reach nested "
            "fields, e.g. meta.content. Records without it are counted and dropped.",
            pattern=r"^[^.\s]+(\.[^.\s]+)*$", max_length=256, **_DATA),
    _integer("max_line_bytes", 2**20, 1024, 2**30, "Longest line kept whole (bytes)",
             "Longer lines (a one-line corpus such as text8) are cut at whitespace into "
             "pieces of at most this size: memory stays flat.", **_DATA),
    _integer("max_record_bytes", 32 * 2**20, 1024, 2**30, "Largest record (bytes)",
             "JSON Lines records, Parquet values and wiki pages larger than this are "
             "dropped and counted in the preprocess manifest.", **_DATA),
    _positive("max_decompressed_gb", 50.0, 100_000, "Largest decompressed file (GB)",
              "A compressed file expanding beyond this stops preprocess with an error "
              "naming this knob (decompression bombs).", **_DATA),
    Setting("max_compression_ratio", 200.0, "Largest compression ratio",
            "Decompressed ÷ compressed size of one file. Text compresses 3-10×; a "
            "decompression bomb expands 1000× or more and stops preprocess with an error.",
            minimum=1, maximum=1_000_000, **_DATA),
    _positive("split_mb", 64.0, 1_000_000, "Largest read task (MB)",
              "The largest piece of input one preprocess task reads.",
              stages=("preprocess",)),
    _integer("vocab_size", 4096, 258, 65536, "BPE vocabulary size",
             "Byte-level BPE tokens, including the 256 bytes and 2 specials; shrinks with a "
             "warning if the corpus supports fewer.", section="Data", stages=("tokenize",)),
)  # fmt: skip


# The GPT's shape and block (defaults: Qwen3's block, the best measured).
_MODEL: dict[str, Any] = {"section": "Model", "stages": ("train",)}
MODEL_SETTINGS = (
    Setting("init_from", None, "Continue from version",
            "Start from a published version's tokenizer and weights instead of from scratch: "
            "'latest' (the promoted version), a version id of this model, or the version "
            "folder's URI. Its shape is kept: leave the Model settings at their defaults (or "
            "equal to the version's). Empty: a new model. Scheduled and asset-triggered runs "
            "take the llm_retrain_init_from Variable instead.",
            section="Model", stages=("tokenize", "train"), kind="string", optional=True,
            pattern=rf"^({NAME_PATTERN[1:-1]}|{WRITE_URI_PATTERN[1:-1]})$", max_length=1024),
    _integer("context_len", 128, 8, 8192, "Context length",
             "Tokens the model sees at once (training windows and the generation window).",
             **_MODEL),
    _integer("n_layer", 4, 1, 96, "Transformer blocks", "Number of decoder blocks.", **_MODEL),
    _integer("n_head", 4, 1, 64, "Attention heads", "Heads per attention layer.", **_MODEL),
    _integer("n_embd", 128, 8, 8192, "Model width",
             "Embedding size; must be a multiple of the attention heads.", **_MODEL),
    _fraction("dropout", 0.0, "Dropout", "Dropout probability during training (0 = off).",
              **_MODEL),
    _choice("position", "rope", ("learned", "rope"), "Position encoding",
            "learned: a position table (GPT-2); rope: rotary embeddings on queries and keys "
            "(Llama, Qwen3).", **_MODEL),
    _positive("rope_theta", 10000.0, 1e9, "RoPE base θ", "Base of the rotary frequencies.",
              **_MODEL),
    _choice("norm", "rmsnorm", ("layernorm", "rmsnorm"), "Normalisation",
            "layernorm (GPT-2) or weight-only rmsnorm (Llama, Qwen3).", **_MODEL),
    _positive("norm_eps", 1e-5, 0.1, "Norm epsilon", "Epsilon of the normalisation layers.",
              **_MODEL),
    _choice("mlp", "swiglu", ("gelu", "swiglu"), "MLP",
            "gelu (GPT-2) or swiglu: down(silu(gate(x)) · up(x)) (Llama, Qwen3).", **_MODEL),
    _integer("intermediate_size", 0, 0, 65536, "MLP hidden size",
             "0: 4·width for gelu, about 8/3·width for swiglu.", **_MODEL),
    Setting("qk_norm", True, "QK-norm", "RMSNorm on each head's queries and keys (Qwen3).",
            **_MODEL),
    Setting("bias", False, "Biases in linear layers", "GPT-2 has them; Llama and Qwen3 not.",
            **_MODEL),
    Setting("tie_embeddings", True, "Tied output head",
            "The output head shares the token embedding's weights.", **_MODEL),
)  # fmt: skip


# The distributed optimisation: replicas, rounds, the inner optimizer and the outer step.
_TRAINING: dict[str, Any] = {"section": "Training", "stages": ("train",)}
TRAINING_SETTINGS = (
    _integer("partitions", 2, 1, 1024, "Replicas",
             "Spark partitions, each training its own replica in parallel.", **_TRAINING),
    _integer("rounds", 12, 1, 100_000, "Averaging rounds",
             "How many times the replicas' weights are averaged.", **_TRAINING),
    _integer("local_steps", 25, 1, 100_000, "Local steps per round",
             "Optimizer steps per replica between averagings. DL4J advises 5–10 for plain "
             "averaging; DiLoCo uses hundreds with the nesterov outer optimizer.", **_TRAINING),
    _integer("batch_size", 16, 1, 4096, "Batch size", "Windows per step per replica.", **_TRAINING),
    _integer("early_rounds", 0, 0, 100_000, "Early rounds",
             "Post-local SGD: the first early_rounds rounds average every early_local_steps "
             "steps, before the usual interval.", **_TRAINING),
    _integer("early_local_steps", 1, 1, 100_000, "Inner steps per early round",
             "Local steps between averagings during the early rounds.", **_TRAINING),
    _choice("optimizer", "muon", ("adamw", "muon"), "Inner optimizer",
            "adamw; or muon: Muon on the blocks' weight matrices and AdamW on embeddings, "
            "head, gains and biases.", **_TRAINING),
    _positive("lr", 3e-3, 1, "Learning rate (AdamW)",
              "Peak inner AdamW learning rate, after warm-up.", only_when=("optimizer", "adamw"),
              **_TRAINING),
    _positive("muon_adamw_lr", 1e-2, 1, "Learning rate (AdamW beside Muon)",
              "Peak AdamW learning rate of the embeddings, head, gains and biases beside "
              "Muon. Higher than adamw's own: 1e-2 measured best with 2 or 4 replicas, 3e-3 "
              "with one.", only_when=("optimizer", "muon"), **_TRAINING),
    _positive("muon_lr", 0.02, 10, "Learning rate (Muon)",
              "Peak Muon learning rate.", only_when=("optimizer", "muon"), **_TRAINING),
    _fraction("muon_momentum", 0.95, "Muon momentum",
              "Momentum of Muon.", only_when=("optimizer", "muon"), **_TRAINING),
    _choice("schedule", "cosine", ("cosine", "wsd"), "Learning-rate schedule",
            "After warm-up: cosine decay, or wsd (warm-up, stable, then a linear decay over "
            "the last decay_fraction of the steps).", **_TRAINING),
    _positive("decay_fraction", 0.2, 1, "WSD decay share",
              "Share of the steps in the final linear decay.", only_when=("schedule", "wsd"),
              **_TRAINING),
    Setting("min_lr_ratio", 0.1, "Final learning rate ÷ peak",
            "Where the decay ends, relative to the peak.", minimum=0, maximum=1, **_TRAINING),
    _integer("warmup_steps", 30, 0, 1_000_000, "Warm-up steps",
             "Linear warm-up steps before the decay.", **_TRAINING),
    Setting("weight_decay", 0.1, "Weight decay", "AdamW weight decay.", minimum=0,
            maximum=1, **_TRAINING),
    _positive("grad_clip", 1.0, 1000, "Gradient clip",
              "Clip gradients to this global norm.", **_TRAINING),
    _choice("outer", "avg", ("avg", "nesterov"), "Outer optimizer",
            "avg: plain parameter averaging every round; nesterov: DiLoCo's outer Nesterov "
            "step on the averaged delta.", **_TRAINING),
    _positive("outer_lr", 0.7, 10, "Outer learning rate",
              "Step size of the outer Nesterov step.", only_when=("outer", "nesterov"),
              **_TRAINING),
    _fraction("outer_momentum", 0.5, "Outer momentum",
              "Momentum of the outer Nesterov step. DiLoCo's 0.9 assumes hundreds of "
              "rounds; from scratch with tens it carries the first rounds' large deltas too "
              "far.", only_when=("outer", "nesterov"), **_TRAINING),
    _integer("outer_momentum_warmup", 0, 0, 100_000, "Outer momentum warm-up (rounds)",
             "The outer momentum grows linearly to outer_momentum over the first N outer "
             "steps (Pier, arXiv 2511.17849); 0: full momentum from the first.",
             only_when=("outer", "nesterov"), **_TRAINING),
    _choice("optimizer_state", "averaged", ("averaged", "reset"),
            "Inner optimizer state across rounds",
            "averaged: AdamW moments and Muon momentum averaged like the weights and "
            "carried on; reset: a fresh optimizer every round.", **_TRAINING),
    _integer("seed", 1337, 0, 2**31 - 1, "Training seed",
             "Seeds initialisation and batch sampling: same seed, same model.", **_TRAINING),
    _integer("eval_tokens", 32768, 64, 100_000_000, "Validation tokens",
             "Validation tokens scored after each round.", **_TRAINING),
    _positive("memory_budget_gb", 8.0, 4096, "Memory budget per process (GB)",
              "Runs whose model would need more (estimated from its size: weights, AdamW "
              "state, activations of a batch) in the driver or one replica are refused "
              "before anything is allocated.",
              section="Training", stages=("train", "generate", "publish")),
)  # fmt: skip


# Sampling after training: prompts and decoding settings.
_GENERATION: dict[str, Any] = {"section": "Generation", "stages": ("generate",)}
# The seed prompts shipped with the code, relative to the jobs folder (jobs/ here, the
# bundle's jobs/ on EMR): the generate job's own default, and the file the DAG names.
SHIPPED_PROMPTS = "conf/prompts.txt"
GENERATION_SETTINGS = (
    Setting("prompts_uri", None, "Prompts file URI",
            "A text file with one prompt per line (s3://, file://, pkg:// or an absolute "
            f"path). Empty: the seed prompts shipped with the jobs (jobs/{SHIPPED_PROMPTS}); "
            "the DAG samples them beside the inline prompts, generate run by hand only when "
            "given no inline prompt. Must lie under the corpus allow-list.",
            kind="string", optional=True, pattern=READ_URI_PATTERN, max_length=1024,
            flag="--prompts", **_GENERATION),
    Setting("prompts", [], "Extra inline prompts", "Prompts sampled in addition to the "
            "file's.", max_items=1000, flag="--prompts-json", **_GENERATION),
    _integer("max_new_tokens", 64, 1, 4096, "New tokens per prompt",
             "Generation stops here or at the end-of-document token.", **_GENERATION),
    Setting("temperature", 0.8, "Temperature", "Divides the logits; 0 is greedy decoding.",
            minimum=0, maximum=10, **_GENERATION),
    _integer("top_k", 50, 0, 65536, "Top-k",
             "Sample among the k likeliest tokens (0 = off).", **_GENERATION),
    _positive("top_p", 0.95, 1, "Top-p",
              "Nucleus sampling: the smallest set with mass ≥ p (1 = off).", **_GENERATION),
    _integer("sample_seed", 0, 0, 2**31 - 1, "Sampling seed",
             "Prompt i samples with seed + i: same seed, same text.", flag="--seed", **_GENERATION),
)  # fmt: skip


# Where the model is registered and when it becomes the latest.
_PUBLISH: dict[str, Any] = {"section": "Publish", "stages": ("publish",)}
PUBLISH_SETTINGS = (
    Setting("registry", None, "Model registry URI",
            "Where publish writes versions: s3://bucket/prefix or file:///absolute/path. "
            "Empty: the llm_registry Variable.", section="Publish", kind="string",
            optional=True, pattern=WRITE_URI_PATTERN, max_length=1024),
    Setting("model_name", "wiki-gpt", "Registered model name",
            "One path segment: letters, digits, '.', '_' and '-' (no '..').", pattern=NAME_PATTERN,
            **_PUBLISH),
    Setting("promotion_tolerance", 0.0, "Promotion tolerance (bits/byte)",
            "latest.json moves to the new version when its bits/byte on the registry's "
            "evaluation set is at most this much worse than the current latest's on the "
            "same set (for a first version: than the set's unigram baseline).", minimum=0,
            maximum=10, flag="--tolerance", **_PUBLISH),
    Setting("eval_input", None, "Evaluation set URI",
            "Text or JSON Lines files (comma-separated, globs) both the new and the current "
            "model are scored on; becomes the registry's evaluation set if the new model is "
            "promoted. Empty: the registry's set in force (the first version's validation "
            "split).", kind="string", optional=True, pattern=URI_LIST_PATTERN,
            max_length=4096, **_PUBLISH),
    _integer("eval_max_bytes", 2**20, 1, 2**30, "Largest evaluation set (bytes)",
             "The evaluation set keeps whole documents up to this many bytes of text.",
             stages=("publish",)),
    Setting("require_approval", False, "Require human approval",
            "Publish the version but move latest.json only after a person approves it in "
            "the approve_promotion task (both models' bits/byte and sample generations are "
            "shown).", **_PUBLISH),
)  # fmt: skip


# Cluster settings for env=emr; account-specific values stay out of the code.
_EMR: dict[str, Any] = {"section": "EMR"}
EMR_SETTINGS = (
    Setting("emr_release_label", DEFAULT_EMR_RELEASE, "EMR release",
            "An EMR 7.x release (Spark 3.5).", pattern=r"^emr-7\.\d+\.\d+$", **_EMR),
    Setting("emr_job_flow_role", "EMR_EC2_DefaultRole", "EC2 instance profile",
            "The instance profile of the cluster nodes.", min_length=1, **_EMR),
    Setting("emr_service_role", "EMR_DefaultRole", "EMR service role",
            "The role EMR assumes to manage the cluster.", min_length=1, **_EMR),
    Setting("emr_subnet_id", None, "Subnet",
            "The cluster's subnet (subnet-…). Empty: the account's default VPC.",
            kind="string", optional=True, pattern=r"^subnet-[0-9a-f]+$", **_EMR),
)  # fmt: skip


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        *DATA_SETTINGS,
        *MODEL_SETTINGS,
        *TRAINING_SETTINGS,
        *GENERATION_SETTINGS,
        *PUBLISH_SETTINGS,
        *EMR_SETTINGS,
    )
}


def default(name: str) -> Any:
    """The default of one setting (config dataclasses take theirs from here)."""
    return SETTINGS[name].default


def for_stage(stage: str) -> list[Setting]:
    """The settings a job takes as flags, in spec order."""
    return [s for s in SETTINGS.values() if stage in s.stages]


def for_form() -> list[Setting]:
    """The settings the trigger form shows, in spec order."""
    return [s for s in SETTINGS.values() if s.section]


def add_arguments(parser: argparse.ArgumentParser, stage: str,
                  skip: Iterable[str] = ()) -> None:  # fmt: skip
    """Add a flag for every setting ``stage`` takes (except ``skip``): typed, bounded and
    documented by the spec, so a value the job accepts is one the form accepts too."""
    group = parser.add_argument_group("settings")
    for s in for_stage(stage):
        if s.name in skip:
            continue
        extra: dict[str, Any] = {"nargs": "?", "const": True} if s.kind == "boolean" else {}
        group.add_argument(
            s.cli_flag,
            dest=s.name,
            type=_argparse_type(s),
            default=s.default,
            metavar=s.kind.upper(),
            help=s.help_text(),
            **extra,
        )


def _argparse_type(setting: Setting) -> Any:
    """``setting.parse`` as an argparse type: its message reaches the user word for word."""

    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.kind
    return parse


# Optimizer steps one replica may be asked for: each of rounds and local_steps may be 100,000,
# and together they would never end.
MAX_TOTAL_STEPS = 10_000_000


def check_training_length(values: Mapping[str, Any]) -> None:
    """Refuse a training run longer than ``MAX_TOTAL_STEPS`` optimizer steps per replica (the
    early rounds at their own interval, then the rest)."""
    early = min(values["early_rounds"], values["rounds"])
    total = early * values["early_local_steps"] + (values["rounds"] - early) * values["local_steps"]
    if total > MAX_TOTAL_STEPS:
        raise SettingError(
            f"rounds × local_steps ask each replica for {total:,} optimizer steps, more than "
            f"{MAX_TOTAL_STEPS:,} (weeks on any machine, past the train stage's time limit): "
            "lower rounds or local_steps"
        )


def ignored_settings(
    values: Mapping[str, Any], label: Callable[[Setting], str] = lambda s: s.cli_flag
) -> list[str]:
    """One line for each setting in ``values`` moved off its default although it has no
    effect with the other values (``lr`` under Muon, ``outer_lr`` with plain averaging), so
    that no run ignores a setting silently (``lr`` drove AdamW beside Muon until
    ``muon_adamw_lr`` came). Settings are named by ``label`` (default: their flags)."""
    lines = []
    for name, value in values.items():
        setting = SETTINGS.get(name)
        if setting is None or setting.only_when is None or value == setting.default:
            continue
        other, wanted = setting.only_when
        if other in values and values[other] != wanted:
            lines.append(
                f"{label(setting)} {value} has no effect: it applies only with "
                f"{label(SETTINGS[other])} {wanted}, and this run has {values[other]}"
            )
    return lines


def check_combinations(values: Mapping[str, Any]) -> None:
    """Refuse settings that each pass their own check but not together (those present in
    ``values``): a width the heads do not divide, an odd head size under RoPE, more early
    rounds than rounds, a run that would never end. The DAG's ``plan_run`` (``check_values``)
    and the objects the jobs build (``GPTConfig``, ``TrainConfig``) share these rules, so a run
    the train job would refuse is refused before any stage runs."""
    if {"n_embd", "n_head"} <= values.keys():
        n_embd, n_head = values["n_embd"], values["n_head"]
        if n_embd % n_head:
            raise SettingError(
                f"n_embd ({n_embd}) must be divisible by n_head ({n_head}); choose n_embd as a "
                f"multiple of n_head, e.g. {n_head * 32}"
            )
        if values.get("position") == "rope" and (n_embd // n_head) % 2:
            raise SettingError(
                f"position 'rope' rotates pairs of dimensions: the head size n_embd/n_head = "
                f"{n_embd // n_head} must be even; change n_embd or n_head"
            )
    if {"rounds", "early_rounds"} <= values.keys() and values["early_rounds"] > values["rounds"]:
        raise SettingError(
            f"early_rounds ({values['early_rounds']}) must be at most rounds "
            f"({values['rounds']}): lower early_rounds or raise rounds"
        )
    if {"rounds", "local_steps", "early_rounds", "early_local_steps"} <= values.keys():
        check_training_length(values)


def check_values(values: dict[str, Any]) -> None:
    """Check every known setting in ``values`` (a run's Params): what JSON schema lets through
    (NaN and infinities, a trailing newline after a pattern) and what no single setting's
    check sees (``check_combinations``) is refused here."""
    for name, value in values.items():
        if name in SETTINGS:
            SETTINGS[name].check(value, label=f"the {name} Param")
    check_combinations(values)
