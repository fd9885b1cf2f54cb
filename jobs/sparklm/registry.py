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
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from sparklm import allowlist, storage
from sparklm.errors import PipelineError

ALLOWED_PREFIXES_ENV = "LLM_REGISTRY_ALLOWED_PREFIXES"

LATEST = "latest.json"
PROMOTION = "promotion.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RegistryError(PipelineError):
    """A registry location, model name or version that must not be used."""


def check_name(kind: str, value: str) -> str:
    """Model names and versions are single path segments: no slashes, no ``..``, no schemes."""
    if not NAME_PATTERN.match(value) or ".." in value:
        raise RegistryError(
            f"invalid {kind} {value!r}: use 1-64 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit (no '/', no '..')"
        )
    return value


def check_registry(uri: str, allowed_prefixes: list[str] | None) -> str:
    """A registry URI must be file:// or s3://, free of ``..``, and under an allowed prefix
    (``None``: anywhere)."""
    if any(part in ("..", ".") for part in urlparse(uri.strip()).path.split("/")):
        raise RegistryError(f"registry {uri!r} contains '..' or '.' segments")
    if urlparse(uri.strip()).scheme == storage.PACKAGE_SCHEME:
        raise RegistryError(f"registry {uri!r} must be an s3:// or file:// URI")
    uri = storage.normalize_uri(uri).rstrip("/")
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
    """The pointer, if any; refused when it is a link or points outside its own registry.

    A pointer is followed to ``{registry}/{model}/{version}`` and nowhere else, so a
    hand-edited ``latest.json`` cannot make a reader load weights from elsewhere.
    """
    uri = latest_uri(registry, model)
    storage.refuse_symlinks(registry, uri)
    if not storage.exists(uri):
        return None
    pointer = json.loads(storage.read_bytes(uri))
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
    metrics: Mapping[str, float], latest: Mapping[str, Any] | None, tolerance: float
) -> tuple[bool, str]:
    """The promotion gate.

    Finite metrics are required; the first version always promotes; after that
    validation bits/byte may be at most ``tolerance`` worse than the latest's.
    Bits per byte is tokenizer-independent, so versions with different
    vocabularies compare fairly (on the same validation text).
    """
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if bad:
        return False, f"non-finite metrics: {', '.join(bad)}"
    bpb = metrics["val_bpb"]
    if latest is None:
        return True, f"first version (val_bpb {bpb:.4f})"
    best = float(latest["val_bpb"])
    if bpb <= best + tolerance:
        return True, f"val_bpb {bpb:.4f} <= latest {best:.4f} + tolerance {tolerance}"
    return False, (
        f"val_bpb {bpb:.4f} is worse than latest version {latest['version']} "
        f"({best:.4f}) by more than the tolerance {tolerance}"
    )


def write_latest(registry: str, model: str, pointer: Mapping[str, Any]) -> None:
    uri = latest_uri(registry, model)
    storage.refuse_symlinks(registry, uri)
    storage.write_bytes(uri, json.dumps(dict(pointer), indent=2, sort_keys=True).encode())
