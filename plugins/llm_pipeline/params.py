"""The trigger form: every knob of the pipeline as a validated, documented Param."""

from __future__ import annotations

from airflow.sdk import Param

DEFAULT_CORPUS = "pkg://gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
URI_PATTERN = (
    r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|file:///.+|pkg://[A-Za-z_][\w.]*/.+|/.+)$"
)


def pipeline_params() -> dict[str, Param]:
    return {
        "env": Param(
            "local",
            enum=["local"],
            title="Where Spark runs",
            description="local: spark-submit on the spark_local connection's master.",
        ),
        "corpus": Param(
            DEFAULT_CORPUS,
            type="string",
            title="Corpus URI",
            description="Comma-separated files, directories or globs: .txt, .txt.gz, .txt.bz2 "
            "or MediaWiki XML dumps, on s3://, file:// or pkg://. The default is a "
            "206-page English Wikipedia dump shipped in the gensim wheel.",
            pattern=r"^[^,\s]+(,[^,\s]+)*$",
            minLength=1,
            maxLength=4096,
        ),
        "run_root": Param(
            "",
            type="string",
            title="Run root URI",
            description="Where this run's artifacts go (s3://bucket/prefix or file:///path). "
            "Empty: {llm_runs_base Variable}/{run_id}.",
            pattern=r"^$|" + URI_PATTERN,
            maxLength=1024,
        ),
        "val_fraction": Param(
            0.1,
            type="number",
            exclusiveMinimum=0,
            exclusiveMaximum=0.5,
            title="Validation share of documents",
        ),
        "min_chars": Param(
            8,
            type="integer",
            minimum=1,
            maximum=10000,
            title="Drop cleaned lines shorter than this",
        ),
        "vocab_size": Param(
            4096,
            type="integer",
            minimum=258,
            maximum=65536,
            title="BPE vocabulary size (256 bytes + 2 specials minimum)",
        ),
    }
