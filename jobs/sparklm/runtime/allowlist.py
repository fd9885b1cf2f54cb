"""Deployment-level allow-lists: where the pipeline may read a corpus and publish a model.

A list is a comma-separated string of URI prefixes (``file:///data/corpora/,
s3://team-bucket/corpora/, pkg://gensim/test/test_data/``), or ``*`` for
anywhere. A URI is allowed when it equals a prefix or lies below one, segment by
segment (``s3://b/corpora-evil`` is not below ``s3://b/corpora``). Airflow
passes its lists to the jobs as flags; a job run by hand falls back to an
environment variable, and to no restriction when that is unset too.
"""

from __future__ import annotations

import os
import posixpath
from urllib.parse import urlparse

from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError

ANYWHERE = "*"
CORPUS_ENV = "LLM_CORPUS_ALLOWED_PREFIXES"
CORPUS_KNOB = f"the llm_corpus_allowed_prefixes Variable (--allowed-corpus-prefixes, {CORPUS_ENV})"


class NotAllowed(PipelineError):
    """A location outside the deployment's allow-list."""


def parse(raw: str | None, env: str | None = None) -> list[str] | None:
    """The prefixes in ``raw`` (else in the environment variable ``env``; empty counts as unset,
    as it always has for ``LLM_REGISTRY_ALLOWED_PREFIXES``); None means anywhere."""
    if raw is None and env:
        raw = os.environ.get(env) or None
    if raw is None or raw.strip() == ANYWHERE:
        return None
    return [comparable(p) for p in raw.split(",") if p.strip()]


def comparable(uri: str) -> str:
    """``uri`` in the form prefixes are compared in: explicit scheme, no trailing slash.

    ``pkg://`` URIs stay symbolic (the package's location differs between machines);
    everything else is normalized lexically, never through links.
    """
    parsed = urlparse(uri.strip())
    if parsed.scheme == storage.PACKAGE_SCHEME:
        inside = posixpath.normpath(parsed.path or "/").rstrip("/")
        return f"{storage.PACKAGE_SCHEME}://{parsed.netloc}{inside}"
    return storage.normalize_uri(uri).rstrip("/")


def widen(raw: str, always: list[str]) -> str:
    """The list ``raw`` plus locations that are always allowed (``*`` stays anywhere)."""
    if raw.strip() == ANYWHERE:
        return ANYWHERE
    return ",".join(dict.fromkeys([*always, *(p.strip() for p in raw.split(",") if p.strip())]))


def is_allowed(uri: str, prefixes: list[str] | None) -> bool:
    if prefixes is None:
        return True
    uri = comparable(uri)
    return any(uri == p or uri.startswith(p + "/") for p in prefixes)


def check(uri: str, prefixes: list[str] | None, *, what: str, knob: str) -> None:
    """Refuse ``uri`` unless it lies under one of ``prefixes``; the message names the knob."""
    if not is_allowed(uri, prefixes):
        raise NotAllowed(
            f"{what} {uri!r} is outside the allowed locations {prefixes}: use a location under "
            f"one of them, or have the deployment add it to {knob}"
        )


def check_corpus(specs: list[str], raw_prefixes: str | None, what: str = "corpus") -> None:
    """Every corpus spec (file, directory or glob) must lie under an allowed prefix, with no
    symbolic link on local disk between that prefix and the spec (for a glob, its fixed part).

    A glob matches only below its fixed part, and ``storage.expand`` refuses files whose real
    location leaves the spec's folder (a named file's parent, for a glob its fixed part); with
    no link between that folder and the prefix either, every file ``expand`` returns really
    lies under an allowed prefix. (A link at or above a prefix is the deployment's own choice.)
    ``what`` names the specs in the message (generate checks a prompts file the same way).
    """
    prefixes = parse(raw_prefixes, CORPUS_ENV)
    for spec in specs:
        check(spec, prefixes, what=what, knob=CORPUS_KNOB)
        if prefixes is not None:
            _refuse_links_below_prefix(spec, prefixes, what)


def _refuse_links_below_prefix(spec: str, prefixes: list[str], what: str) -> None:
    """Refuse ``spec`` (allowed, so below one prefix at least) when a symbolic link stands
    between it and every allowed prefix it lies under: the link, not the prefix, would decide
    which files are read."""
    under = sorted((p for p in prefixes if is_allowed(spec, [p])), key=len)
    links = [(p, link) for p in under if (link := storage.link_below(p, spec)) is not None]
    if len(links) < len(under):
        return
    prefix, link = links[-1]  # the closest prefix's: the link nearest the spec
    raise NotAllowed(
        f"{what} {spec!r} goes through the symbolic link {link} (to {os.readlink(link)}) below "
        f"the allowed location {prefix}: a link there could lead reads anywhere. Name the "
        "folder it points to instead, if that is allowed, or replace the link with a real folder"
    )
