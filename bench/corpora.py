"""Benchmark corpora: WikiText-2 raw scaled up by distinct copies.

Plain repetition would be undone by the preprocess stage's exact-duplicate
removal, so copy ``i`` tags every heading and paragraph with ``[i]``: the
same text statistics, no duplicates across copies.
"""

from __future__ import annotations

import os
from pathlib import Path

# WikiText-2 (raw) is not in the repository and no test needs it; benchmarks read it from
# $WIKITEXT2_DIR, else from the development machine's shared data folder.
WIKITEXT = Path(os.environ.get(
    "WIKITEXT2_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2-raw"))
BASE_FILES = ("valid.txt", "test.txt")
WHERE_TO_GET_IT = (
    "download WikiText-2 raw (wikitext-2-raw-v1: https://huggingface.co/datasets/Salesforce/"
    "wikitext, folder wikitext-2-raw-v1), save its validation and test splits as valid.txt and "
    "test.txt in one folder and set WIKITEXT2_DIR to it"
)


def require_wikitext(directory: Path = WIKITEXT) -> Path:
    """The WikiText-2 folder, or exit saying where to get it."""
    missing = [name for name in BASE_FILES if not (directory / name).is_file()]
    if missing:
        raise SystemExit(f"benchmark corpus missing: {directory} has no {', '.join(missing)}: "
                         f"{WHERE_TO_GET_IT}")  # fmt: skip
    return directory


def scaled_corpus(target: Path, copies: int) -> tuple[Path, int]:
    """Write ``copies`` distinct copies of WikiText-2 valid+test under ``target``.

    Returns the folder and its size in bytes.
    """
    target.mkdir(parents=True, exist_ok=True)
    total = 0
    source = require_wikitext()
    texts = {name: (source / name).read_text(encoding="utf-8").split("\n") for name in BASE_FILES}
    for copy in range(copies):
        for name in BASE_FILES:
            tagged = [_tag(line, copy) for line in texts[name]]
            data = "\n".join(tagged).encode()
            (target / f"{Path(name).stem}-{copy:03d}.txt").write_bytes(data)
            total += len(data)
    return target, total


def _tag(line: str, copy: int) -> str:
    stripped = line.strip()
    if not stripped:
        return line
    if stripped.startswith("= ") and stripped.endswith(" =") and not stripped.startswith("= ="):
        return f" = [{copy}] {stripped[2:]} "  # still a WikiText article title
    return f" [{copy}] {stripped}"
