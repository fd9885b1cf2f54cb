"""Helpers the tests share: job loading, spark-submit, small corpora."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"
# Credentials of the test S3 server: tests check that they never reach a log or an artifact.
S3_ACCESS_KEY = "llm-test-access-key"
S3_SECRET_KEY = "llm-test-secret-key-do-not-log"
# A small model that learns real Wikipedia text (the default corpus, vocab 512) in about a
# minute on local[2]: validation 4.51 nats/token against a unigram entropy of 5.31.
TRAINED = ["--context-len", "64", "--n-layer", "2", "--n-head", "2", "--n-embd", "64",
           "--batch-size", "16", "--lr", "1e-2", "--warmup-steps", "10", "--partitions", "2",
           "--rounds", "16", "--local-steps", "40", "--eval-tokens", "8192"]  # fmt: skip
# A one-block model for tests about plumbing, not learning.
TINY = ["--context-len", "32", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
        "--batch-size", "4", "--eval-tokens", "512"]  # fmt: skip
# DAG Params for a whole pipeline run that is small enough for a test, still every stage for real.
SMALL_CONF = {
    "vocab_size": 300, "partitions": 2, "rounds": 2, "local_steps": 3, "batch_size": 4,
    "context_len": 32, "n_layer": 1, "n_head": 2, "n_embd": 32, "eval_tokens": 512,
    "max_new_tokens": 16, "prompts": ["Paragraph 1 of"],
}  # fmt: skip


def generated_records(manifest: dict) -> list[dict]:
    """The records of a committed generate stage's ``generated.jsonl``."""
    from sparklm.runtime import storage
    from sparklm.runtime.stages import listed_files

    [entry] = listed_files(manifest, "generated.jsonl")
    return [json.loads(line) for line in storage.read_bytes(entry["uri"]).decode().splitlines()]


def sample_independently(model_uri: str, config_uri: str, tokenizer_uri: str, record: dict) -> str:
    """``record["prompt"]``'s completion sampled in this process, with the sampling settings and
    seed the record names: checks that a job used what it recorded, not just that it wrote it."""
    import torch
    from tokenizers import Tokenizer

    from sparklm.data.tokenizer import decode, special_ids
    from sparklm.model.decoding import generate
    from sparklm.model.weights import load_model
    from sparklm.runtime import storage

    model = load_model(storage.read_bytes(model_uri), json.loads(storage.read_bytes(config_uri)))
    tokenizer = Tokenizer.from_str(storage.read_bytes(tokenizer_uri).decode())
    eod = special_ids(tokenizer)["eod"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a one-core Spark task samples: the same float sums
    try:
        new_ids = generate(
            model, [eod, *tokenizer.encode(record["prompt"], add_special_tokens=False).ids],
            record["max_new_tokens"], temperature=record["temperature"],
            top_k=record["top_k"] or None, top_p=record["top_p"], seed=record["seed"],
            stop_ids=(eod,),
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return decode(tokenizer, new_ids)


def load_dag():
    """Parse ``dags/`` as the scheduler does; parse per test, after its env is set."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags")).dags["llm_decoder"]


def copy_stages(source: str, target: Path, stages: Sequence[str]) -> str:
    """Copy committed stages of the local run root ``source`` into ``target``; its URI.

    Manifests list paths relative to their stage, so the copy is a valid run root.
    """
    for stage in stages:
        shutil.copytree(source.removeprefix("file://") + f"/{stage}", target / stage)
    return f"file://{target}"


def load_job(name: str) -> ModuleType:
    """Import ``jobs/{name}.py`` as a module, as spark-submit runs it: shipped by value.

    Spark pickles the job's partition functions for the workers; spark-submit runs
    the script as ``__main__``, which cloudpickle sends by value. Registering the
    module for by-value pickling does the same for an in-process run.
    """
    from pyspark import cloudpickle

    module_name = f"llm_job_{name}"
    spec = importlib.util.spec_from_file_location(module_name, JOBS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return module


def spark_submit(
    script: str,
    *args: str,
    master: str = "local[2]",
    env: dict | None = None,
    timeout: float = 600,
    options: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """Run ``spark-submit --master {master} {options…} jobs/{script} args…`` as a user would.

    The driver's stderr reaches spark-submit's stdout; both come back in ``stdout``.
    """
    return subprocess.run(
        ["spark-submit", "--master", master, *options, str(JOBS / script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def tree_checksums(folder: Path) -> dict[str, str]:
    """``{relative path: sha256 (or "-> target" for a link)}`` of everything under ``folder``.

    Compared before and after a job to show that it changed nothing there.
    """
    import hashlib

    listing = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_symlink():
            listing[relative] = f"-> {os.readlink(path)}"
        elif path.is_file():
            listing[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            listing[relative] = "dir"
    return listing


def write_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def small_corpus(directory: Path, documents: int = 40, paragraphs: int = 4) -> Path:
    """A plain-text corpus in WikiText layout: ``= Title =`` lines start documents."""
    lines = []
    for d in range(documents):
        lines += ["", f" = Article number {d} = ", ""]
        for p in range(paragraphs):
            lines.append(
                f" Paragraph {p} of article {d} talks about topic {d % 7} and the number "
                f"{d * 31 + p} , which matters for the story of article {d} ."
            )
    return write_text(directory / "corpus.txt", "\n".join(lines) + "\n")


def single_process_training(model_cfg, cfg, tokens, seed: int = 0):
    """The oracle for the distributed trainer: one plain torch loop over the same batches.

    Replica 0 of round r draws its batches from a generator seeded with
    derive_seed(cfg.seed, r, 0); one replica doing every step of every round must
    therefore reproduce exactly this loop.
    """
    import torch

    from sparklm.model.gpt import GPT
    from sparklm.model.training import build_optimizer, derive_seed, lr_scale, sample_batch

    torch.manual_seed(seed)
    model = GPT(model_cfg)
    optimizer = build_optimizer(model, cfg)
    for r in range(cfg.rounds):
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, r, 0))
        for k in range(cfg.steps_in_round(r)):
            optimizer.set_lr_scale(lr_scale(cfg.steps_before(r) + k, cfg))
            x, y = sample_batch(tokens, cfg.batch_size, model_cfg.context_len, generator)
            _, loss = model(x, y)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
    return model


def mediawiki_page(page_id: int, title: str, text: str, namespace: int = 0) -> str:
    """One ``<page>`` of a MediaWiki XML dump."""
    from xml.sax.saxutils import escape

    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{namespace}</ns>\n"
            f"    <id>{page_id}</id>\n    <revision>\n      <id>{page_id + 1000}</id>\n"
            f"      <text xml:space=\"preserve\">{escape(text)}</text>\n    </revision>\n"
            "  </page>\n")  # fmt: skip


def multistream_dump(
    directory: Path, pages: Sequence[tuple[int, str, str]], pages_per_stream: int = 3
) -> tuple[Path, Path]:
    """A ``…-multistream.xml.bz2`` dump of ``(id, title, text)`` pages and its index, laid out
    as Wikimedia publishes them: the siteinfo in a stream of its own, then one bz2 stream per
    ``pages_per_stream`` pages, then one holding ``</mediawiki>``; the index lists
    ``offset:page_id:title`` for every page."""
    import bz2

    data = bz2.compress(
        b'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xml:lang="en">\n'
        b"  <siteinfo>\n    <sitename>Testpedia</sitename>\n  </siteinfo>\n"
    )
    index = []
    for first in range(0, len(pages), pages_per_stream):
        stream = pages[first : first + pages_per_stream]
        index += [f"{len(data)}:{page_id}:{title}" for page_id, title, _ in stream]
        data += bz2.compress("".join(mediawiki_page(*page) for page in stream).encode())
    data += bz2.compress(b"</mediawiki>\n")
    stem = directory / "testwiki-20260101-pages-articles-multistream"
    dump = write_text(stem.with_name(stem.name + ".xml.bz2"), data)
    index_file = write_text(stem.with_name(stem.name + "-index.txt.bz2"),
                            bz2.compress(("\n".join(index) + "\n").encode()))  # fmt: skip
    return dump, index_file


def article_pages(count: int, first_id: int = 10) -> list[tuple[int, str, str]]:
    """``count`` distinct small articles as ``(id, title, wikitext)``."""
    return [
        (first_id + i, f"Article {i}",
         f"'''Article {i}''' is about [[topic {i % 7}]] and the number {i * 37}.\n\n"
         f"It has a second paragraph, which mentions {{{{cite|x}}}} article {i} again.")
        for i in range(count)
    ]  # fmt: skip
