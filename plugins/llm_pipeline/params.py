"""The trigger form: every knob of the pipeline as a validated, documented Param.

JSON-schema bounds here are checked by Airflow when a run is triggered (UI,
API or ``airflow dags test -c``), so a bad value is refused before any Spark
job starts. The jobs validate again, for users who run them by hand.
"""

from __future__ import annotations

from airflow.sdk import Param

from llm_pipeline.emr import EMR_RELEASE_LABEL

DEFAULT_CORPUS = "pkg://gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
URI_PATTERN = (
    r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|file:///.+|pkg://[A-Za-z_][\w.]*/.+|/.+)$"
)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def integer(default: int, low: int, high: int, title: str, **extra) -> Param:
    return Param(default, type="integer", minimum=low, maximum=high, title=title, **extra)


def number(default: float, title: str, **bounds) -> Param:
    return Param(default, type="number", title=title, **bounds)


def uri(title: str, description: str) -> Param:
    return Param("", type="string", title=title, description=description,
                 pattern=r"^$|" + URI_PATTERN, maxLength=1024)  # fmt: skip


def pipeline_params() -> dict[str, Param]:
    return {
        **data_params(),
        **training_params(),
        **generation_params(),
        **publish_params(),
        **emr_params(),
    }


def data_params() -> dict[str, Param]:
    return {
        "env": Param("local", enum=["local", "emr"], title="Where Spark runs",
                     description="local: spark-submit on the spark_local connection's master. "
                                 "emr: a transient EMR cluster (needs s3:// run root and "
                                 "registry, and the aws_default connection)."),
        "corpus": Param(
            DEFAULT_CORPUS, type="string", title="Corpus URI", minLength=1, maxLength=4096,
            pattern=r"^[^,\s]+(,[^,\s]+)*$",
            description="Comma-separated files, directories or globs: .txt, .txt.gz, .txt.bz2 "
                        "or MediaWiki XML dumps, on s3://, file:// or pkg://. The default is a "
                        "206-page English Wikipedia dump shipped in the gensim wheel."),
        "run_root": uri("Run root URI", "Where this run's artifacts go (s3://bucket/prefix or "
                                        "file:///path). Empty: {llm_runs_base Variable}/{run_id}."),
        "val_fraction": number(0.1, "Validation share of documents",
                               exclusiveMinimum=0, exclusiveMaximum=0.5),
        "min_chars": integer(8, 1, 10000, "Drop cleaned lines shorter than this"),
        "vocab_size": integer(4096, 258, 65536,
                              "BPE vocabulary size (256 bytes + 2 specials minimum)"),
    }  # fmt: skip


def training_params() -> dict[str, Param]:
    """Model shape and the distributed optimisation (defaults: a few minutes on 2 cores)."""
    return {
        "partitions": integer(2, 1, 1024, "Replicas (Spark partitions) trained in parallel"),
        "rounds": integer(12, 1, 100_000, "Averaging rounds"),
        "local_steps": integer(
            25, 1, 100_000, "AdamW steps per replica between averagings",
            description="DL4J advises 5–10 for plain averaging; DiLoCo uses hundreds with the "
                        "nesterov outer optimizer."),
        "batch_size": integer(16, 1, 4096, "Windows per step per replica"),
        "context_len": integer(128, 8, 8192, "Context length (tokens)"),
        "n_layer": integer(4, 1, 96, "Transformer blocks"),
        "n_head": integer(4, 1, 64, "Attention heads"),
        "n_embd": integer(128, 8, 8192, "Model width (a multiple of n_head)"),
        "dropout": number(0.0, "Dropout", minimum=0, exclusiveMaximum=1),
        "lr": number(3e-3, "Peak inner learning rate (AdamW)", exclusiveMinimum=0, maximum=1),
        "warmup_steps": integer(30, 0, 1_000_000, "Warm-up steps before the cosine decay"),
        "weight_decay": number(0.1, "AdamW weight decay", minimum=0, maximum=1),
        "grad_clip": number(1.0, "Gradient norm clip", exclusiveMinimum=0, maximum=1000),
        "outer": Param("avg", enum=["avg", "nesterov"], title="Outer optimizer",
                       description="avg: plain parameter averaging every round; nesterov: "
                                   "DiLoCo's outer Nesterov step on the averaged delta."),
        "outer_lr": number(0.7, "Outer learning rate (nesterov only)",
                           exclusiveMinimum=0, maximum=10),
        "outer_momentum": number(0.9, "Outer momentum (nesterov only)",
                                 minimum=0, exclusiveMaximum=1),
        "optimizer_state": Param("averaged", enum=["averaged", "reset"],
                                 title="Inner AdamW state across rounds",
                                 description="averaged: moments averaged like the weights and "
                                             "carried on; reset: a fresh AdamW every round."),
        "seed": integer(1337, 0, 2**31 - 1, "Training seed"),
        "eval_tokens": integer(32768, 64, 100_000_000,
                               "Validation tokens scored after each round"),
    }  # fmt: skip


def generation_params() -> dict[str, Param]:
    """Sampling after training: prompts and decoding settings."""
    return {
        "prompts_uri": uri("Prompts file URI (one prompt per line)",
                           "Empty: the seed prompts shipped with the jobs "
                           "(jobs/conf/prompts.txt)."),
        "prompts": Param([], type="array", items={"type": "string", "minLength": 1},
                         maxItems=1000, title="Extra inline prompts"),
        "max_new_tokens": integer(64, 1, 4096, "Tokens generated per prompt"),
        "temperature": number(0.8, "Sampling temperature (0 = greedy)", minimum=0, maximum=10),
        "top_k": integer(50, 0, 65536, "Top-k (0 = off)"),
        "top_p": number(0.95, "Nucleus top-p (1 = off)", exclusiveMinimum=0, maximum=1),
        "sample_seed": integer(0, 0, 2**31 - 1, "Sampling seed"),
    }  # fmt: skip


def publish_params() -> dict[str, Param]:
    return {
        "registry": uri("Model registry URI",
                        "Where publish writes versions (s3://bucket/prefix or file:///path). "
                        "Empty: the llm_registry Variable."),
        "model_name": Param("wiki-gpt", type="string", pattern=NAME_PATTERN,
                            title="Registered model name"),
        "promotion_tolerance": number(
            0.0, "Promotion tolerance (bits/byte)", minimum=0, maximum=10,
            description="latest.json moves to the new version when its validation bits/byte is "
                        "at most this much worse than the current latest's."),
    }  # fmt: skip


def emr_params() -> dict[str, Param]:
    """Cluster settings for env=emr; account-specific values stay out of the code."""
    return {
        "emr_release_label": Param(EMR_RELEASE_LABEL, type="string", pattern=r"^emr-7\.\d+\.\d+$",
                                   title="EMR release (7.x: Spark 3.5)"),
        "emr_job_flow_role": Param("EMR_EC2_DefaultRole", type="string", minLength=1,
                                   title="EC2 instance profile of the cluster nodes"),
        "emr_service_role": Param("EMR_DefaultRole", type="string", minLength=1,
                                  title="EMR service role"),
        "emr_subnet_id": Param("", type="string", pattern=r"^$|^subnet-[0-9a-f]+$",
                               title="Subnet (empty: the account's default VPC)"),
    }  # fmt: skip
