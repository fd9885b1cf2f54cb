"""What the publish job knows about the version it is publishing, passed around as one value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Publication:
    """One version being published: where it goes, how it is gated, and what it was made from
    (each upstream stage's manifest and reference, and the bytes of the copied artifacts)."""

    registry: str
    model_name: str
    version: str
    target: str
    run_root: str
    tolerance: float
    require_approval: bool
    airflow: dict[str, str] | None
    manifests: dict[str, dict[str, Any]]
    refs: dict[str, dict[str, Any]]
    contents: dict[str, bytes]
