"""Install the torch that constraints.txt pins, as a CPU build, before everything else.

    python tools/install_torch.py --constraints constraints.txt

Run it with the Python of the environment to fill (a venv's ``bin/python``); it uses
that interpreter's pip and only the standard library. ``make setup``, the Docker image
and the EMR bootstrap action all install torch through this one script.

constraints.txt pins ``torch==X.Y.Z``. PEP 440 ignores local version labels when the
specifier has none, so both PyPI's ``X.Y.Z`` and the PyTorch CPU index's ``X.Y.Z+cpu``
satisfy it. Which one a machine gets:

1. What pip's own configuration resolves (PyPI, a mirror, a local wheel folder in
   ``find-links``), when that is a CPU build: a ``+cpu`` wheel, or a wheel without
   CUDA dependencies for this platform (PyPI's macOS builds, for one).
2. Otherwise (PyPI's Linux x86_64 wheel pulls ~3 GB of CUDA libraries) the PyTorch
   CPU index, passed with ``--index-url`` for torch ALONE and ``--no-deps``: torch's
   own dependencies, like every other package, then come from the default index under
   the constraints. Never ``--extra-index-url`` for a whole install: any name on the
   extra index could shadow a PyPI package (dependency confusion), and pip retries an
   unreachable extra index for every package it looks up.

The CPU index is only contacted in case 2, after a short reachability probe, so a
machine that cannot reach it fails in seconds with what to do instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path

CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT_S = 15
# Dependencies that only CUDA (or ROCm) builds of torch declare.
GPU_DEPENDENCY = re.compile(r"^(nvidia-|cuda-|triton\b|pytorch-triton)", re.IGNORECASE)


def pinned_version(constraints: Path, package: str = "torch") -> str:
    """The ``package==version`` pin in a constraints file, without any local label."""
    pattern = re.compile(rf"^{re.escape(package)}==([^\s;#+]+)(\+\S+)?\s*$", re.IGNORECASE)
    for line in constraints.read_text(encoding="utf-8").splitlines():
        match = pattern.match(line.strip())
        if match:
            return match.group(1)
    raise SystemExit(f"ERROR: {constraints} pins no {package}: add '{package}==<version>'")


def is_cpu_build(version: str, requires_dist: list[str], applies=None) -> bool:
    """Whether a torch distribution (its version and ``Requires-Dist``) is a CPU-only build.

    A local label decides when there is one (``+cpu`` yes; ``+cu128``, ``+rocm6.4`` no).
    Otherwise the build is CPU-only unless it depends, on this platform, on NVIDIA's
    libraries or triton: PyPI's Linux wheels do, its macOS wheels do not. ``applies``
    evaluates a requirement's environment marker (default: for this interpreter).
    """
    label = version.partition("+")[2]
    if label:
        return label == "cpu"
    applies = applies or _marker_applies
    return not any(GPU_DEPENDENCY.match(req) and applies(req) for req in requires_dist)


def _marker_applies(requirement: str) -> bool:
    # pip is in every environment this script fills (a venv); its vendored `packaging`
    # evaluates markers exactly as pip's resolver does.
    from pip._vendor.packaging.requirements import Requirement

    marker = Requirement(requirement).marker
    return marker is None or marker.evaluate({"extra": ""})


def installed_cpu_torch(version: str) -> str | None:
    """The installed torch's version if it is the pinned release and a CPU build."""
    try:
        dist = metadata.distribution("torch")
    except metadata.PackageNotFoundError:
        return None
    if dist.version.partition("+")[0] != version:
        return None
    return dist.version if is_cpu_build(dist.version, dist.requires or []) else None


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def resolve_from_configured_sources(requirement: str, constraints: Path) -> dict | None:
    """What ``pip install requirement`` would pick from pip's configured sources (no download
    of the wheel: pip reads the index's metadata), or None if they cannot provide it."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        done = subprocess.run(
            pip("install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet",
                "--report", str(report), "-c", str(constraints), requirement),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            print(f"install_torch: pip's configured sources cannot provide {requirement}:\n"
                  f"{done.stderr.strip()[-2000:]}", file=sys.stderr)  # fmt: skip
            return None
        [item] = json.loads(report.read_text())["install"]
    return item


def check_reachable(index_url: str) -> None:
    """Fail in seconds, with what to do, when the CPU index cannot be reached."""
    probe = f"{index_url.rstrip('/')}/torch/"
    try:
        with urllib.request.urlopen(probe, timeout=PROBE_TIMEOUT_S):
            return
    except (urllib.error.URLError, OSError) as exc:
        raise SystemExit(
            f"ERROR: the CPU build of torch comes from {index_url}, which is unreachable "
            f"from here ({exc}). Either put the wheel (torch-<version>+cpu-….whl) in a "
            "folder and run with PIP_FIND_LINKS=<folder>, or point TORCH_INDEX_URL at a "
            "mirror of the PyTorch CPU index."
        ) from None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--constraints", type=Path, required=True)
    p.add_argument("--index-url", default=os.environ.get("TORCH_INDEX_URL", CPU_INDEX_URL),
                   help="the PyTorch CPU index or a mirror (default $TORCH_INDEX_URL or "
                        "%(default)s)")  # fmt: skip
    args = p.parse_args(argv)
    version = pinned_version(args.constraints)
    requirement = f"torch=={version}"

    already = installed_cpu_torch(version)
    if already:
        print(f"install_torch: torch {already} (CPU) is already installed")
        return
    candidate = resolve_from_configured_sources(requirement, args.constraints)
    if candidate and is_cpu_build(candidate["metadata"]["version"],
                                  candidate["metadata"].get("requires_dist", [])):  # fmt: skip
        print(f"install_torch: torch {candidate['metadata']['version']} (CPU) from "
              f"{candidate['download_info']['url']}")  # fmt: skip
        source: list[str] = []
    else:
        print(f"install_torch: the configured sources offer no CPU build of {requirement}; "
              f"installing it alone from {args.index_url}")  # fmt: skip
        check_reachable(args.index_url)
        source = ["--index-url", args.index_url]
    # torch alone: its dependencies come with the project's install, under the constraints.
    subprocess.run(pip("install", "--force-reinstall", "--no-deps", *source, requirement),
                   check=True)  # fmt: skip


if __name__ == "__main__":
    main()
