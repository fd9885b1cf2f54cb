"""Small JSON objects the pipeline writes and reads back — the registry's pointers
(``latest.json``, ``evaluation.json``), a version's ``run.json``, a checkpoint's pointer and
``state.json`` — read as what they must be.

A file truncated by a failed copy or edited by hand must surface as the caller's own error,
naming the file and the fix, never as a ``JSONDecodeError`` or ``KeyError`` from deep inside
a job (a traceback, and a retry that cannot help).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError

# A pointer is a few hundred bytes; anything past this is damage, not a pointer (and the
# Models view reads every model's latest.json on each page load).
MAX_POINTER_BYTES = 1024 * 1024


def read(uri: str, *, required: Sequence[str], error: type[PipelineError], fix: str,
         max_bytes: int = MAX_POINTER_BYTES) -> dict[str, Any] | None:  # fmt: skip
    """The object in ``uri``, or None when there is no such file.

    The caller refuses links first; ``error`` is the caller's own error class, raised for a
    file over ``max_bytes`` or not a regular file, and for content that is not a JSON object
    holding the ``required`` keys, with ``fix``."""
    if not storage.exists(uri):
        return None
    data = read_bounded(uri, max_bytes, "JSON file", error=error, fix=fix)
    return parse(data, uri, required=required, error=error, fix=fix)


def read_bounded(uri: str, max_bytes: int, what: str, *, error: type[PipelineError],
                 fix: str) -> bytes:  # fmt: skip
    """The bytes of a small file the pipeline wrote (``what``, named in the message): one over
    ``max_bytes``, or not a regular file, is damage, raised as ``error`` with ``fix``."""
    try:
        return storage.read_bounded(uri, max_bytes, what)
    except storage.StorageError as exc:  # larger than any such file, or not a regular file
        raise error(f"{uri} is damaged ({exc}): {fix}") from None


def parse(data: bytes, uri: str, *, required: Sequence[str], error: type[PipelineError],
          fix: str) -> dict[str, Any]:  # fmt: skip
    """``data`` (read from ``uri``) as a JSON object holding the ``required`` keys (see
    ``read``)."""
    try:
        value = json.loads(data)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8/16/32
        raise error(f"{uri} is damaged, not JSON ({exc}): {fix}") from None
    if not isinstance(value, dict):
        raise error(f"{uri} is damaged: it holds a {type(value).__name__}, not an object: {fix}")
    missing = [key for key in required if key not in value]
    if missing:
        raise error(f"{uri} is damaged: it lacks {', '.join(map(repr, missing))}: {fix}")
    return value
