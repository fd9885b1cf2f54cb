"""Continuing from a published version (``init_from``): which one, its files checked, its lineage.

A continued run starts from a registry version's tokenizer and weights instead of learning a
vocabulary and initialising at random. The DAG's ``plan_run`` resolves the Param (``latest``, a
version id, or a version folder's URI) to one version folder, so every stage of the run uses
the same version even if ``latest.json`` moves meanwhile; the jobs take that folder's URI.

Every file is read through the checksums the version's ``run.json`` recorded, never through a
link, and only from a complete version (its ``promotion.json``, written last, exists): a
version changed after publishing is refused, not trained on.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sparklm import settings
from sparklm.registry.versions import PROMOTION, check_name, read_latest, version_uri
from sparklm.runtime import json_objects, storage
from sparklm.runtime.errors import PipelineError

LATEST = "latest"
# The settings that fix the model's shape; a continued run takes them from the version.
SHAPE_SETTINGS = (
    "vocab_size", "context_len", "n_layer", "n_head", "n_embd", "position", "rope_theta",
    "norm", "norm_eps", "mlp", "intermediate_size", "qk_norm", "bias", "tie_embeddings",
)  # fmt: skip
# Small JSON files of a version (run.json, promotion.json, config.json) are read up to this.
MAX_RECORD_BYTES = 16 * 2**20
DAMAGED_FIX = "continue from another version, or republish this one"


class LineageError(PipelineError):
    """An ``init_from`` that names no usable version: bad input, never retried."""


def resolve(init_from: str | None, registry: str, model: str) -> str | None:
    """The version folder ``init_from`` names in ``{registry}/{model}/``; None for a run from
    scratch. A URI must name a version folder of that registry and model: the gate compares
    versions of one model on one evaluation set, and a parent from elsewhere would leave the
    lineage pointing at files this registry does not keep."""
    if not init_from:
        return None
    if init_from == LATEST:
        return str(read_latest(registry, model)["uri"])
    if "://" not in init_from:
        return version_uri(registry, model, init_from)
    uri = storage.normalize_uri(init_from).rstrip("/")
    version = uri.rsplit("/", 1)[-1]
    expected = storage.normalize_uri(version_uri(registry, model, version))
    if uri != expected:
        raise LineageError(
            f"init_from {init_from!r} is not a version of {model!r} in this run's registry "
            f"({storage.join(registry, model)}/VERSION): continue from a version of the model "
            "this run publishes, or set the registry and model_name Params to the version's"
        )
    return uri


def for_job(init_from: str | None) -> Parent | None:
    """The version a job continues from: ``--init-from`` names its folder's URI (the DAG's
    ``plan_run`` resolves ``latest`` and version ids, which need the registry, to one)."""
    if not init_from:
        return None
    if "://" not in init_from:
        raise LineageError(
            f"--init-from {init_from!r} names a version, but a job needs the version folder's "
            "URI ({registry}/{model}/{version}): the DAG resolves names and 'latest' against "
            "the run's registry; by hand, pass the folder"
        )
    return Parent.open(storage.normalize_uri(init_from).rstrip("/"))


@dataclass(frozen=True)
class Parent:
    """A published version a run continues from: its folder, its records, its model's shape."""

    uri: str
    version: str
    run: dict[str, Any]
    promotion: dict[str, Any]
    config: dict[str, Any]

    @classmethod
    def open(cls, uri: str) -> Parent:
        """Open the complete version at ``uri``; refused when it is not one, or has no model."""
        version = check_name("version", uri.rstrip("/").rsplit("/", 1)[-1])
        promotion_uri = storage.join(uri, PROMOTION)
        storage.refuse_symlinks(uri, promotion_uri)
        if not storage.exists(promotion_uri):
            raise LineageError(
                f"init_from: there is no published version at {uri} (no {PROMOTION}, which "
                "publish writes last): name a version the registry lists, or 'latest'"
            )
        run = _json(uri, "run.json", _read(uri, "run.json"))
        missing = [n for n in ("model.safetensors", "config.json", "tokenizer.json")
                   if n not in checksums(run)]  # fmt: skip
        if missing:
            raise LineageError(
                f"init_from: version {version} has no {' or '.join(missing)} in its run.json: "
                "it holds no model to continue from; name another version"
            )
        promotion = _json(uri, PROMOTION, _read(uri, PROMOTION))
        config = _json(uri, "config.json", _verified(uri, run, "config.json", MAX_RECORD_BYTES))
        return cls(uri, version, run, promotion, config)

    def read(self, name: str, max_bytes: int | None = MAX_RECORD_BYTES) -> bytes:
        """A file of the version, checked against the checksum its ``run.json`` recorded, read
        only up to ``max_bytes`` (None: the weights, whose header the caller checks against
        the memory budget first)."""
        return _verified(self.uri, self.run, name, max_bytes)

    def sha256(self, name: str) -> str:
        return checksums(self.run)[name]

    @property
    def eval_bits_per_byte(self) -> float | None:
        """Its bits/byte on the registry's evaluation set when it was published."""
        candidate = (self.promotion.get("evaluation") or {}).get("candidate") or {}
        return candidate.get("bits_per_byte")

    def tokens_trained_total(self) -> int:
        """Tokens trained into these weights, ancestors included: the version's lineage, or, for
        a version from scratch (and every version published before lineage was recorded), the
        tokens of its own training, the last row of its ``metrics.csv``."""
        recorded = (self.run.get("lineage") or {}).get("tokens_trained_total")
        if recorded is not None:
            return int(recorded)
        rows = list(csv.DictReader(io.StringIO(self.read("metrics.csv").decode())))
        return int(rows[-1]["tokens"]) if rows else 0

    def describe(self) -> dict[str, Any]:
        """What a continued run records about its parent (train's manifest, then run.json)."""
        return {
            "version": self.version,
            "uri": self.uri,
            "eval_bits_per_byte": self.eval_bits_per_byte,
            "tokens_trained_total": self.tokens_trained_total(),
            "weights_sha256": self.sha256("model.safetensors"),
            "tokenizer_sha256": self.sha256("tokenizer.json"),
        }

    def check_settings(self, values: Mapping[str, Any],
                       label: Callable[[str], str] = "the {} Param".format) -> None:  # fmt: skip
        """Refuse shape settings that contradict the version's ``config.json``.

        A setting left at its default follows the version (the form always sends every
        Param, so "left at its default" is the only way to say "whatever the version has");
        any other value must equal the version's. The vocabulary may also be the size the
        version asked for, which its corpus may have shrunk.
        """
        requested_vocab = (self.run.get("params", {}).get("tokenize") or {}).get("vocab_size")
        for name in SHAPE_SETTINGS:
            if name not in values or values[name] == settings.default(name):
                continue
            has = self.config.get(name, "(absent: the block's default when it was trained)")
            if values[name] == has or (name == "vocab_size" and values[name] == requested_vocab):
                continue
            raise LineageError(
                f"{label(name)} is {values[name]!r}, but version {self.version} (init_from) "
                f"has {name} {has!r}: a continued run keeps its version's shape. Set {name} to "
                f"{has!r} or leave it at its default, or leave init_from empty to train a new model"
            )


def _read(folder: str, name: str, max_bytes: int | None = MAX_RECORD_BYTES) -> bytes:
    uri = storage.join(folder, name)
    storage.refuse_symlinks(folder, uri)
    if not storage.exists(uri):
        raise LineageError(f"init_from: the version at {folder} has no {name}")
    if max_bytes is None:
        return storage.read_bytes(uri)
    return storage.read_bounded(uri, max_bytes, f"version file {name}")


def _verified(folder: str, run: Mapping[str, Any], name: str, max_bytes: int | None) -> bytes:
    data = _read(folder, name, max_bytes)
    if hashlib.sha256(data).hexdigest() != checksums(run).get(name):
        raise LineageError(
            f"init_from: {storage.join(folder, name)} no longer matches the checksum in the "
            "version's run.json: it was changed after publishing. Continue from another "
            "version, or republish this one"
        )
    return data


def _json(folder: str, name: str, data: bytes) -> dict[str, Any]:
    return json_objects.parse(data, f"init_from: {storage.join(folder, name)}", required=(),
                              error=LineageError, fix=DAMAGED_FIX)  # fmt: skip


def checksums(run: Mapping[str, Any]) -> dict[str, str]:
    """``{path: sha256}`` of a version's files, from its ``run.json`` (entries of another shape
    are skipped: a file without its checksum cannot be verified, so it counts as absent)."""
    artifacts = run.get("artifacts")
    entries = artifacts if isinstance(artifacts, list) else []
    return {
        a["path"]: a["sha256"]
        for a in entries
        if isinstance(a, dict) and isinstance(a.get("path"), str) and "sha256" in a
    }
