"""The model registry: ``{registry}/{model}/{version}/`` folders and a ``latest.json`` pointer.

A version folder is complete once its ``promotion.json`` exists (written last
inside it). ``latest.json`` names the promoted version and moves only when
the promotion gate passes; it is one object written atomically, so readers
see the old or the new pointer, never a mixture. A pointer is only followed to
a version folder of its own registry, and never through a symbolic link.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from sparklm import settings
from sparklm.registry import eval_set as eval_sets
from sparklm.runtime import allowlist, json_objects, storage
from sparklm.runtime.errors import PipelineError

if TYPE_CHECKING:  # the Models view reads versions without loading torch
    from sparklm.model.evaluation import Score

ALLOWED_PREFIXES_ENV = "LLM_REGISTRY_ALLOWED_PREFIXES"

LATEST = "latest.json"
PROMOTION = "promotion.json"
DAMAGED_LATEST_FIX = (
    "restore it from 'pointer' in the promoted version's promotion.json, or delete it and "
    "republish that version"
)
NAME_PATTERN = re.compile(settings.NAME_PATTERN)
# Names a version folder cannot take: they are the model folder's own entries.
RESERVED_VERSIONS = (LATEST, eval_sets.FOLDER)


class RegistryError(PipelineError):
    """A registry location, model name or version that must not be used."""


def check_name(kind: str, value: str) -> str:
    """Model names and versions are single path segments: no slashes, no ``..``, no schemes;
    a version is never one of the model folder's own entries (``latest.json``, the evaluation
    set's folder)."""
    if kind == "version" and value in RESERVED_VERSIONS:
        raise RegistryError(f"invalid version {value!r}: {', '.join(RESERVED_VERSIONS)} are the "
                            "model folder's own entries; choose another --version")  # fmt: skip
    if not NAME_PATTERN.fullmatch(value):
        raise RegistryError(
            f"invalid {kind} {value!r}: use 1-64 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit (no '/', no '..')"
        )
    return value


def registry_uri(uri: str) -> str:
    """A registry URI, normalized: file:// or s3://, free of ``..`` and of glob characters."""
    if any(part in ("..", ".") for part in urlparse(uri.strip()).path.split("/")):
        raise RegistryError(f"registry {uri!r} contains '..' or '.' segments")
    if urlparse(uri.strip()).scheme == storage.PACKAGE_SCHEME:
        raise RegistryError(f"registry {uri!r} must be an s3:// or file:// URI")
    storage.refuse_glob_characters(uri.strip(), "registry")
    return storage.normalize_uri(uri).rstrip("/")


def check_registry(uri: str, allowed_prefixes: list[str] | None) -> str:
    """A registry URI (``registry_uri``) under an allowed prefix (``None``: anywhere)."""
    uri = registry_uri(uri)
    if not allowlist.is_allowed(uri, allowed_prefixes):
        raise RegistryError(
            f"registry {uri!r} is outside the allowed locations {allowed_prefixes}: choose a "
            "registry under one of them, or have the deployment add it to the "
            f"llm_registry_allowed_prefixes Variable (--allowed-registry-prefixes, "
            f"{ALLOWED_PREFIXES_ENV})"
        )
    return uri


def version_uri(registry: str, model: str, version: str) -> str:
    return storage.join(registry, check_name("model name", model), check_name("version", version))


def latest_uri(registry: str, model: str) -> str:
    return storage.join(registry, check_name("model name", model), LATEST)


def read_latest(registry: str, model: str) -> dict[str, Any]:
    """The promoted version's pointer, or a clear error naming what to publish first."""
    latest = current_latest(registry, model)
    if latest is None:
        raise RegistryError(
            f"no promoted version of {model!r} in {registry}: {latest_uri(registry, model)} is "
            "missing; run the pipeline's publish task (or check --registry and --model-name)"
        )
    return latest


def current_latest(registry: str, model: str) -> dict[str, Any] | None:
    """The pointer, if any; refused (a ``RegistryError``) when it is a link, is not a JSON
    object, or points outside its own registry.

    A pointer is followed to ``{registry}/{model}/{version}`` and nowhere else, so a
    hand-edited ``latest.json`` cannot make a reader load weights from elsewhere.
    """
    uri = latest_uri(registry, model)
    storage.refuse_symlinks(registry, uri)
    pointer = json_objects.read(uri, required=(), error=RegistryError, fix=DAMAGED_LATEST_FIX)
    if pointer is None:
        return None
    if not _points_into(pointer, registry, model):
        raise RegistryError(
            f"{uri} points at {pointer.get('uri')!r}, which is not a version folder of its own "
            f"registry ({storage.join(registry, model)}/VERSION): the pointer was edited or "
            "copied from another registry. Republish the model, or fix the pointer's uri"
        )
    return pointer


def _points_into(pointer: Mapping[str, Any], registry: str, model: str) -> bool:
    try:
        expected = storage.normalize_uri(version_uri(registry, model, str(pointer["version"])))
        return storage.normalize_uri(str(pointer["uri"])) == expected
    except (KeyError, PipelineError):
        return False


def promotion_decision(
    metrics: Mapping[str, float],
    latest: Mapping[str, Any] | None,
    tolerance: float,
    *,
    candidate: Score | None,
    latest_bpb: float | None,
    problem: str | None = None,
) -> tuple[bool, str]:
    """The promotion gate, on the registry's evaluation set.

    Finite training metrics are required, and a candidate that could not be scored on
    the evaluation set (``problem`` says why) is never promoted. A first version must
    score at most ``tolerance`` worse than the set's unigram baseline (a model that
    knows token frequencies only, scored with the candidate): with nothing to compare
    with, a model that learned nothing must not become the latest. After that the
    candidate's bits/byte on the evaluation set may be at most ``tolerance`` worse than
    the current latest's *on the same bytes*. Each model's own validation split is not
    used: two runs on different corpora have different splits, and their numbers do not
    compare.
    """
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if bad:
        return False, f"non-finite metrics: {', '.join(bad)}"
    if problem:
        return False, problem
    candidate_bpb = candidate.bits_per_byte if candidate else None
    if candidate is None or candidate_bpb is None or not math.isfinite(candidate_bpb):
        return False, f"bits/byte on the evaluation set is {candidate_bpb}"
    if latest is None:
        return first_version_decision(candidate_bpb, candidate.unigram_bits_per_byte, tolerance)
    if latest_bpb is None or not math.isfinite(latest_bpb):
        return False, f"the current latest {latest['version']} has no score to compare with"
    if candidate_bpb <= latest_bpb + tolerance:
        return True, (
            f"{candidate_bpb:.4f} bits/byte on the evaluation set <= latest {latest['version']} "
            f"{latest_bpb:.4f} + tolerance {tolerance}"
        )
    return False, (
        f"{candidate_bpb:.4f} bits/byte on the evaluation set is worse than latest version "
        f"{latest['version']} ({latest_bpb:.4f} on the same bytes) by more than the tolerance "
        f"{tolerance}"
    )


def first_version_decision(candidate_bpb: float, baseline_bpb: float,
                           tolerance: float) -> tuple[bool, str]:  # fmt: skip
    """A first version is promoted when it does about as well as knowing token frequencies."""
    if not math.isfinite(baseline_bpb):
        return False, f"the evaluation set's unigram baseline is {baseline_bpb}"
    if candidate_bpb <= baseline_bpb + tolerance:
        return True, (
            f"first version: {candidate_bpb:.4f} bits/byte on the evaluation set <= its "
            f"unigram baseline {baseline_bpb:.4f} + tolerance {tolerance}"
        )
    return False, (
        f"first version: {candidate_bpb:.4f} bits/byte on the evaluation set is worse than "
        f"the set's unigram baseline ({baseline_bpb:.4f}: a model that knows only how often "
        f"each token occurs) by more than the tolerance {tolerance}. Published, not promoted: "
        "train longer, or on more text"
    )


def write_latest(registry: str, model: str, pointer: Mapping[str, Any]) -> None:
    uri = latest_uri(registry, model)
    storage.refuse_symlinks(registry, uri)
    storage.write_bytes(uri, json.dumps(dict(pointer), indent=2, sort_keys=True).encode())


def promote(
    registry: str, model: str, pointer: Mapping[str, Any], eval_set: Mapping[str, Any]
) -> None:
    """Move ``latest.json`` to ``pointer`` and put the evaluation set it was scored on in
    force. The set moves first: should the pointer's write fail, the next candidate is
    scored, with the current latest, on the newer set — still the same bytes for both."""
    eval_sets.put_in_force(registry, model, eval_set)
    write_latest(registry, model, pointer)


def list_models(registry: str) -> list[str]:
    """The model names in a registry (folders with a valid name), sorted."""
    return [
        name for name in _folders(registry) if NAME_PATTERN.fullmatch(name) and ".." not in name
    ]


def list_versions(registry: str, model: str) -> list[str]:
    """The complete versions of ``model`` (those whose ``promotion.json``, written last,
    exists), sorted by name; ``evaluation/`` is the evaluation sets' folder, not a version."""
    folder = storage.join(registry, check_name("model name", model))
    return [
        v for v in _folders(folder)
        if v not in RESERVED_VERSIONS and NAME_PATTERN.fullmatch(v)
        and storage.exists(storage.join(folder, v, PROMOTION))
    ]  # fmt: skip


def _folders(uri: str) -> list[str]:
    """Names of the folders directly inside ``uri``. On S3 a key with an empty segment
    (``uri//x``) lists ``uri`` itself as a folder: that entry is not one of its children."""
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):
        return []
    names = [e["name"].rstrip("/") for e in fs.ls(path, detail=True) if e["type"] == "directory"]
    return sorted(posixpath.basename(name) for name in names if name != path.rstrip("/"))
