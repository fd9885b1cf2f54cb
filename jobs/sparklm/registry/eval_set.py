"""A registry's evaluation set: the bytes every candidate and the current latest are scored on.

Bits per byte is comparable across models only on the same bytes: a model trained on
Shakespeare scored on its own validation split and a Wikipedia model scored on its own
say nothing about each other. So each model name in the registry keeps one evaluation
set, recorded by checksum:

- ``{registry}/{model}/evaluation/{sha256}.jsonl`` holds the documents (one JSON object
  ``{"text": …}`` per line; content-addressed, so a file never changes once written);
- ``{registry}/{model}/evaluation.json`` names the set in force (checksum, size, where
  it came from). It is moved together with ``latest.json``: the set in force is the one
  the promoted model was scored on.

The set is the first promoted model's validation split, or what ``--eval-input`` names.
No torch here: the Models view reads these files too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sparklm import settings
from sparklm.runtime import json_objects, storage
from sparklm.runtime.errors import PipelineError

POINTER = "evaluation.json"
FOLDER = "evaluation"
# Enough text for a stable bits/byte (hundreds of thousands of tokens), small enough that
# publish scores two models on it in seconds on a laptop CPU.
DEFAULT_MAX_BYTES: int = settings.default("eval_max_bytes")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.bz2", ".json.gz")
# The latest version's promotion.json records the set it was promoted on: the pointer's content.
DAMAGED_POINTER_FIX = (
    "restore it from 'evaluation.set' in the latest version's promotion.json, or publish with "
    "--eval-input (Param eval_input): a version promoted on that set puts it in force"
)


class EvalSetError(PipelineError):
    """An evaluation set that cannot be read or built."""


@dataclass(frozen=True)
class EvalSet:
    """Documents to score, with the checksum of their canonical JSONL form."""

    documents: tuple[str, ...]
    source: str
    truncated: bool = False

    @property
    def data(self) -> bytes:
        """The canonical file: one ``{"text": …}`` object per line, UTF-8, no ASCII escapes."""
        return "".join(
            json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in self.documents
        ).encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def text_bytes(self) -> int:
        """The UTF-8 bytes of the documents themselves: the denominator of bits per byte."""
        return sum(len(d.encode()) for d in self.documents)

    def describe(self) -> dict[str, Any]:
        """What ``evaluation.json``, ``promotion.json`` and the model card say about it."""
        return {
            "sha256": self.sha256,
            "documents": len(self.documents),
            "bytes": self.text_bytes,
            "source": self.source,
            "truncated": self.truncated,
            "file": f"{FOLDER}/{self.sha256}.jsonl",
        }


def parse(data: bytes, source: str) -> EvalSet:
    """Read a canonical evaluation-set file back; a damaged one is an error, not a guess."""
    try:
        # Split on "\n" only: str.splitlines() would also cut at U+2028 inside a document.
        documents = [json.loads(line)["text"] for line in data.decode().split("\n") if line]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise EvalSetError(
            f"evaluation set {source} is not JSON Lines of {{'text': …}}: {exc}"
        ) from None
    if not all(isinstance(d, str) for d in documents):
        raise EvalSetError(f"evaluation set {source} has a non-string 'text'")
    return EvalSet(tuple(documents), source)


def capped(documents: Iterable[str], source: str, max_bytes: int) -> EvalSet:
    """Whole documents in order until ``max_bytes`` of text; the one that crosses the limit is
    cut at its last line break before it (at least one document is kept)."""
    kept: list[str] = []
    total, truncated = 0, False
    for doc in documents:
        if not doc:
            continue
        size = len(doc.encode())
        if total + size > max_bytes:
            room = doc.encode()[: max_bytes - total].decode(errors="ignore")
            head = room[: room.rfind("\n")] if "\n" in room else ("" if kept else room)
            if head:
                kept.append(head)
            truncated = True
            break
        kept.append(doc)
        total += size
    if not kept:
        raise EvalSetError(f"evaluation set {source} holds no text: give one with some text")
    return EvalSet(tuple(kept), source, truncated)


def from_input(specs: Sequence[str], max_bytes: int) -> EvalSet:
    """An explicit evaluation set (``--eval-input``): text files (each file one document,
    ``.gz``/``.bz2`` read transparently) and JSON Lines with a ``text`` field (such as a
    registry's own evaluation files)."""
    uris = storage.expand(specs)
    return capped(_documents(uris, max_bytes), ",".join(specs), max_bytes)


def _documents(uris: Sequence[str], max_bytes: int) -> Iterator[str]:
    """Each file's first ``max_bytes`` (no set is larger, so nothing more is ever read)."""
    for uri in uris:
        with storage.open_binary(uri, compression="infer") as handle:
            head = handle.read(max_bytes + 1)
        if uri.endswith(JSONL_SUFFIXES):
            if len(head) > max_bytes:  # keep the complete records only
                head = head[: head.rfind(b"\n") + 1]
            yield from parse(head, uri).documents
        else:
            yield head.decode("utf-8", errors="replace")


def from_documents(documents: Iterable[str], source: str, max_bytes: int) -> EvalSet:
    """A set from documents already in hand, e.g. a run's validation split."""
    return capped(documents, source, max_bytes)


def pointer_uri(registry: str, model: str) -> str:
    return storage.join(registry, model, POINTER)


def set_uri(registry: str, model: str, sha256: str) -> str:
    """A set's content-addressed file; refused when it, or a folder above it inside the
    registry, is a symbolic link (never read or written through one, as ``latest.json``)."""
    uri = storage.join(registry, model, FOLDER, f"{sha256}.jsonl")
    storage.refuse_symlinks(registry, uri)
    return uri


def current(registry: str, model: str) -> dict[str, Any] | None:
    """The set in force for ``model`` (its ``evaluation.json``), or None before the first.

    Called before publish writes anything, so a link at the pointer or at ``evaluation/``
    stops the job there. A pointer that is not a JSON object naming a ``sha256`` is an
    ``EvalSetError``, like a set file that is missing or changed."""
    uri = pointer_uri(registry, model)
    storage.refuse_symlinks(registry, uri)
    storage.refuse_symlinks(registry, storage.join(registry, model, FOLDER))
    return json_objects.read(uri, required=("sha256",), error=EvalSetError, fix=DAMAGED_POINTER_FIX)


def load(registry: str, model: str, pointer: dict[str, Any]) -> EvalSet:
    """The documents the pointer names, checked against its checksum."""
    uri = set_uri(registry, model, pointer["sha256"])
    if not storage.exists(uri):
        raise EvalSetError(f"the evaluation set {uri} named by {POINTER} is missing")
    data = storage.read_bytes(uri)
    if hashlib.sha256(data).hexdigest() != pointer["sha256"]:
        raise EvalSetError(f"the evaluation set {uri} no longer matches its checksum")
    return EvalSet(parse(data, uri).documents, pointer.get("source", uri),
                   pointer.get("truncated", False))  # fmt: skip


def store(registry: str, model: str, eval_set: EvalSet) -> None:
    """Write the set's content-addressed file (idempotent: same bytes, same name)."""
    uri = set_uri(registry, model, eval_set.sha256)
    if not storage.exists(uri):
        storage.write_bytes(uri, eval_set.data)


def put_in_force(registry: str, model: str, description: Mapping[str, Any]) -> None:
    """Make a stored set the one in force (called just before ``latest.json`` moves)."""
    uri = pointer_uri(registry, model)
    storage.refuse_symlinks(registry, uri)
    storage.write_bytes(uri, json.dumps(dict(description), indent=2, sort_keys=True).encode())
