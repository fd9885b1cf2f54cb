"""``make bench-continue``: continued training (``init_from``) against retraining from scratch.

The question a team that retrains on a schedule asks: when new text arrives, is continuing from
the published model as good as training again on everything, for less compute, without
forgetting what it knew? On WikiText-2:

- **base**: trained on ``valid.txt`` (every tenth article held out), published to a registry;
- **from scratch**: a new vocabulary and random weights, trained on the base text plus the new
  text (the first half of ``test.txt``'s articles) for as many epochs as the base had;
- **continued**: the base version's tokenizer and weights (``--init-from``), trained on the new
  text alone, and once more with the base text mixed back in (replay), for a fraction of the
  from-scratch steps.

Every model is scored with the registry's scorer (``sparklm.model.evaluation``: bits per byte
of UTF-8 text, so different tokenizers compare) on the new held-out half (the second half of
``test.txt``'s articles) and on the base held-out articles. Compute is the CPU seconds of each
train job (spark-submit, its JVM and Python workers, sampled). Goals: continued training
reaches the from-scratch held-out score in ≤ 1/3 of its compute, and is no more than 2 % worse
than the base on the base held-out text.

    python bench/bench_continue.py [--quick] [--work-dir bench/out/continue]
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from common import (
    REPO,
    file_uri,
    fmt,
    fresh_dir,
    goal,
    goals_table,
    load_average,
    load_note,
    log,
    markdown_table,
    read_manifest,
    spark_submit,
    write_results,
)
from corpora import WIKITEXT, is_title, require_wikitext

MODEL_NAME = "wiki-bench"
COMPUTE_TARGET = 1 / 3
FORGETTING_TARGET = 0.02


@dataclass
class Sizes:
    """How much each model trains; ``--quick`` swaps in a smoke-test set."""

    vocab_size: int = 4096
    # AdamW beside Muon at 3e-3: the rate the table was measured at (2026-12-04), before the
    # job's default became 1e-2 (measured for few passes over the text, unlike these runs).
    train_args: str = ("--partitions 2 --local-steps 25 --batch-size 16 --dropout 0.1 "
                       "--muon-adamw-lr 3e-3 --eval-tokens 8192")  # fmt: skip
    base_rounds: int = 24
    # Continued rounds = this share of the from-scratch rounds (the compute goal is ≤ 1/3; the
    # JVM's start-up is paid whatever the length, so the steps must stay below it).
    continue_share: float = 0.3
    # These learning rates (Muon 0.02, AdamW 3e-3): half (2.091 new held-out bits/byte with
    # replay, 9 rounds), a quarter (2.100), double (2.100) and the wsd schedule (2.101) all did
    # worse than these (2.088); replaying half the base text instead of all of it did too
    # (2.130).
    continue_args: str = "--warmup-steps 10"
    heldout_every: int = 10  # every n-th base article is held out
    # The share of the first half of test.txt's articles that arrives as new text: 1.0 is an
    # increment of 60 % of the base text; a nightly retraining sees far smaller ones.
    new_fraction: float = 1.0


QUICK = Sizes(
    vocab_size=512,
    base_rounds=2,
    continue_share=0.5,
    train_args="--partitions 2 --local-steps 3 --batch-size 8 --eval-tokens 2048",
)


# -- corpora ----------------------------------------------------------------------------------


def wikitext_articles(path: Path) -> list[list[str]]:
    """A WikiText file as its articles, each the list of its lines (title first)."""
    articles: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if is_title(line.strip()) or not articles:
            articles.append([])
        articles[-1].append(line)
    return articles


def write_corpora(wikitext: Path, target: Path, heldout_every: int,
                  new_fraction: float) -> dict[str, Path]:  # fmt: skip
    """Base text, base held-out, new text (``new_fraction`` of the first half of test.txt's
    articles) and new held-out (always the second half) as four WikiText files."""
    target.mkdir(parents=True, exist_ok=True)
    base = wikitext_articles(wikitext / "valid.txt")
    new = wikitext_articles(wikitext / "test.txt")
    half = len(new) // 2
    parts = {
        "base": [a for i, a in enumerate(base) if i % heldout_every],
        "base-heldout": [a for i, a in enumerate(base) if not i % heldout_every],
        "new": new[: max(1, round(half * new_fraction))],
        "new-heldout": new[half:],
    }
    paths = {}
    for name, articles in parts.items():
        paths[name] = target / f"{name}.txt"
        paths[name].write_text("\n".join(line for a in articles for line in a), encoding="utf-8")
    return paths


# -- runs -------------------------------------------------------------------------------------


@dataclass
class Model:
    """One trained model: where it is, what it trained on and what it cost."""

    name: str
    trained_on: str
    root: Path
    rounds: int
    train_cpu_s: float
    train_wall_s: float
    manifest: dict[str, Any]
    scores: dict[str, float] | None = None

    @property
    def tokens(self) -> int:
        return int(self.manifest["stats"]["tokens_trained"])

    def to_dict(self) -> dict[str, Any]:
        return {"trained_on": self.trained_on, "rounds": self.rounds, "tokens": self.tokens,
                "train_cpu_s": self.train_cpu_s, "train_wall_s": self.train_wall_s,
                "job_seconds": self.manifest["seconds"], "params": self.manifest["params"],
                "final": self.manifest["stats"]["final"], "scores": self.scores}  # fmt: skip


class TreeCPU:
    """CPU seconds of this process's descendants while a block runs, sampled every ``interval``.

    ``getrusage(RUSAGE_CHILDREN)`` is not enough: the PySpark daemon's Python workers, where
    training runs, are reaped by no one this process waits for, so their time never reaches it.
    Each process's last sample counts (keyed by pid and start time, so a reused pid is a new
    process); what a process spends after its last sample (≤ ``interval``) is missed.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.seen: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for process in psutil.Process().children(recursive=True):
                try:
                    times = process.cpu_times()
                    self.seen[(process.pid, process.create_time())] = times.user + times.system
                except psutil.Error:
                    continue


def prepare(root: Path, corpus: Sequence[Path], heldout: Path, tokenize: Sequence[str]) -> None:
    """Preprocess and tokenize into a fresh run root (the held-out text as its validation)."""
    fresh_dir(root)
    spark_submit("preprocess.py", root, ["--input", ",".join(file_uri(p) for p in corpus),
                                         "--val-input", file_uri(heldout)])  # fmt: skip
    spark_submit("tokenize_corpus.py", root, list(tokenize))


def train(name: str, trained_on: str, root: Path, rounds: int, args: Sequence[str]) -> Model:
    log(f"train {name}: {rounds} rounds {' '.join(args)}")
    with TreeCPU() as cpu:
        job = spark_submit("train.py", root, [*args, "--rounds", str(rounds)])
    model = Model(
        name, trained_on, root, rounds, cpu.seconds, job.wall_s, read_manifest(root, "train")
    )
    log(
        f"  {name}: {model.train_cpu_s:.0f} CPU s, {job.wall_s:.0f} s wall, "
        f"val {model.manifest['stats']['final']['val_bpb']:.4f} bits/byte"
    )
    return model


def publish(root: Path, registry: Path) -> str:
    """Publish a trained run as the registry's first version; its folder's URI."""
    spark_submit("generate.py", root, ["--prompt", "The", "--max-new-tokens", "4"])
    spark_submit("publish.py", root, ["--registry", file_uri(registry),
                                      "--model-name", MODEL_NAME])  # fmt: skip
    return str(read_manifest(root, "publish")["stats"]["version_uri"])


def heldout_documents(root: Path) -> list[str]:
    """The validation documents a run's preprocess stage committed (cleaned as trained on)."""
    from sparklm.data.document_shards import read_doc_texts
    from sparklm.runtime.stages import listed_files
    from sparklm.runtime.stages import read_manifest as read_stage

    manifest = read_stage(file_uri(root), "preprocess")
    shards = listed_files(manifest, "val/")
    return [text for entry in shards for text in read_doc_texts(entry["uri"])]


def score(model: Model, heldout: dict[str, list[str]]) -> dict[str, float]:
    """Bits per byte of one model on each held-out set, as the registry's gate scores it."""
    import torch

    from sparklm.model.evaluation import score_artifacts

    torch.set_num_threads(2)
    weights = (model.root / "train" / "model.safetensors").read_bytes()
    config = json.loads((model.root / "train" / "config.json").read_text())
    tokenizer = (model.root / "tokenize" / "tokenizer.json").read_text()
    return {name: score_artifacts(weights, config, tokenizer, docs).bits_per_byte
            for name, docs in heldout.items()}  # fmt: skip


# -- report -----------------------------------------------------------------------------------


def goals_for(continued: Model, scratch: Model, base: Model) -> list[dict[str, Any]]:
    """The issue's goals for one continued model: reach scratch, at ≤ 1/3, forgetting ≤ 2 %."""
    assert continued.scores and scratch.scores and base.scores
    return [
        goal(f"{continued.name}: new held-out bits/byte ≤ from scratch's",
             continued.scores["new held-out"], scratch.scores["new held-out"]),
        goal(f"{continued.name}: train CPU seconds ÷ from scratch's",
             continued.train_cpu_s / scratch.train_cpu_s, COMPUTE_TARGET),
        goal(f"{continued.name}: base held-out bits/byte ÷ the base model's − 1 (forgetting)",
             continued.scores["base held-out"] / base.scores["base held-out"] - 1,
             FORGETTING_TARGET),
    ]  # fmt: skip


def report(models: list[Model], goals: list[dict[str, Any]], raw: dict[str, Any]) -> str:
    scratch = next(m for m in models if m.name == "from scratch")
    rows = []
    for m in models:
        assert m.scores
        rows.append([m.name, m.trained_on, f"{m.rounds}", fmt(m.tokens),
                     fmt(m.train_cpu_s), f"{m.train_cpu_s / scratch.train_cpu_s:.2f}",
                     fmt(m.train_wall_s), f"{m.scores['new held-out']:.4f}",
                     f"{m.scores['base held-out']:.4f}"])  # fmt: skip
    return "\n\n".join([
        "## Continued training vs retraining from scratch (WikiText-2)",
        markdown_table(["model", "trained on", "rounds", "train tokens", "train CPU s",
                        "÷ scratch", "train wall s", "new held-out bits/byte",
                        "base held-out bits/byte"], rows, align="llrrrrrrr"),
        goals_table(goals),
        f"Train arguments `{raw['sizes']['train_args']}`; continued runs add "
        f"`{raw['sizes']['continue_args']}` and `--init-from` the base version. New text: "
        f"{raw['sizes']['new_fraction']:g} of the first half of test.txt's articles "
        f"({raw['new_bytes']:,} bytes). Held-out sets: "
        f"new {raw['heldout_bytes']['new held-out']:,} bytes, base "
        f"{raw['heldout_bytes']['base held-out']:,} bytes. " + load_note(raw),
    ])  # fmt: skip


# -- entry point ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    p.add_argument("--work-dir", type=Path, default=REPO / "bench" / "out" / "continue")
    p.add_argument("--wikitext-dir", type=Path, default=WIKITEXT,
                   help="folder with WikiText-2 raw valid.txt and test.txt "
                        "(default $WIKITEXT2_DIR or %(default)s)")  # fmt: skip
    g = p.add_argument_group("sizes (defaults are the full benchmark; --quick shrinks them)")
    for name, value in asdict(Sizes()).items():
        g.add_argument("--" + name.replace("_", "-"), type=type(value), default=None,
                       help=f"default {value!r}")  # fmt: skip
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    base_sizes = QUICK if args.quick else Sizes()
    s = Sizes(**{k: v if getattr(args, k) is None else getattr(args, k)
                 for k, v in asdict(base_sizes).items()})  # fmt: skip
    wikitext = require_wikitext(args.wikitext_dir)
    work = fresh_dir(args.work_dir)
    raw: dict[str, Any] = {"sizes": asdict(s), "load_average_start": load_average()}
    started = time.perf_counter()
    corpora = write_corpora(wikitext, work / "corpora", s.heldout_every, s.new_fraction)
    registry = work / "registry"
    train_args = shlex.split(s.train_args)
    vocab = ["--vocab-size", str(s.vocab_size)]

    log("base: valid.txt without its held-out articles")
    prepare(work / "base", [corpora["base"]], corpora["base-heldout"], vocab)
    base = train("base", "base", work / "base", s.base_rounds, train_args)
    version = publish(base.root, registry)

    log("from scratch: base + new text, a new vocabulary, as many epochs as the base")
    prepare(work / "scratch", [corpora["base"], corpora["new"]], corpora["new-heldout"], vocab)
    scratch_tokens = read_manifest(work / "scratch", "tokenize")["stats"]["train"]["tokens"]
    base_tokens = read_manifest(work / "base", "tokenize")["stats"]["train"]["tokens"]
    scratch_rounds = max(1, round(s.base_rounds * scratch_tokens / base_tokens))
    scratch = train("from scratch", "base + new", work / "scratch", scratch_rounds, train_args)

    continued_rounds = max(1, math.floor(scratch_rounds * s.continue_share))
    continue_args = [*train_args, *shlex.split(s.continue_args), "--init-from", version]
    continued = []
    for name, corpus, label in (("continued", [corpora["new"]], "new"),
                                ("continued + replay", [corpora["new"], corpora["base"]],
                                 "new + base (replay)")):  # fmt: skip
        root = work / name.replace(" + ", "-")
        prepare(root, corpus, corpora["new-heldout"], ["--init-from", version])
        continued.append(train(name, label, root, continued_rounds, continue_args))

    models = [base, scratch, *continued]
    heldout = {
        "new held-out": heldout_documents(scratch.root),
        "base held-out": heldout_documents(base.root),
    }
    for m in models:
        log(f"score {m.name}")
        m.scores = score(m, heldout)
    goals = [g for c in continued for g in goals_for(c, scratch, base)]
    raw.update({
        "models": {m.name: m.to_dict() for m in models},
        "base_version": version,
        "heldout_bytes": {k: sum(len(d.encode()) for d in v) for k, v in heldout.items()},
        "new_bytes": corpora["new"].stat().st_size,
        "goals": goals,
        "seconds": time.perf_counter() - started,
        "load_average_end": load_average(),
    })  # fmt: skip
    markdown = report(models, goals, raw)
    print(markdown)
    write_results(work, markdown, raw)
    print(f"results: {work / 'results.md'}, {work / 'results.json'}")


if __name__ == "__main__":
    main()
