"""On a cluster, a ``file://`` path of the driver must be the same file on every executor.

A run root or corpus on local disk works on ``local[…]`` and on a cluster whose nodes share a
filesystem (one host, or an NFS mount at the same path). On nodes that share nothing, like
EMR's, each executor would write its part files to its own disk and read what is not there:
the job fails stages later, or commits output the next job cannot find. So a job checks first,
with a few short tasks, that the executors see each path as the driver does.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from functools import partial

from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError

# Long enough that the probe's tasks spread over the executors instead of queueing on one.
PROBE_TASK_SECONDS = 0.2
# The corpus's first files stand for the rest (they are all read the same way).
MAX_PROBED_PATHS = 16

Fingerprint = tuple[int, int] | None


def fingerprint(path: str) -> Fingerprint:
    """The identity of what ``path`` names on this node: inode and modification time, which a
    shared filesystem reports alike on every node; None where nothing is there."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns


def _probe(paths: Sequence[str], _: Iterator[int]) -> Iterator[tuple[str, list[Fingerprint]]]:
    time.sleep(PROBE_TASK_SECONDS)
    yield socket.gethostname(), [fingerprint(p) for p in paths]


def check_executors_see(context, uris: Sequence[str]) -> None:
    """Refuse (PipelineError: exit 2, before any work) a ``file://`` URI that an executor of
    ``context``'s cluster does not see as the driver does. Nothing to check on ``local[…]``
    or on S3."""
    local = [(u, p) for u in uris if (p := storage.local_path(u)) is not None]
    local = local[:MAX_PROBED_PATHS]
    if context.master.startswith("local") or not local:
        return
    paths = [path for _, path in local]
    expected = [fingerprint(path) for path in paths]
    tasks = 2 * context.defaultParallelism
    seen = context.parallelize(range(tasks), tasks).mapPartitions(partial(_probe, paths)).collect()
    for host, prints in seen:
        for (uri, _), want, got in zip(local, expected, prints, strict=True):
            if got != want:
                raise PipelineError(
                    f"{uri} is a path on the driver's disk that the executor on host {host!r} "
                    "does not see: the nodes of this cluster share no filesystem. Use an s3:// "
                    "URI (or a filesystem every node mounts at the same path)"
                )
