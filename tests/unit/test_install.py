"""Installing on any machine: the torch pin, the CPU-build installer, the preflight checks.

The installer runs for real against two package indexes served from 127.0.0.1 (a
"default index" that, like PyPI on Linux x86_64, offers a CUDA build, and a "CPU index"),
with pip's own configuration switched off, in a fresh virtualenv.
"""

from __future__ import annotations

import ast
import functools
import http.server
import importlib.util
import os
import subprocess
import sys
import threading
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from helpers.paths import REPO

TOOLS = REPO / "tools"
INSTALL_PATHS = ("Makefile", "docker/Dockerfile", "plugins/llm_pipeline/emr/bootstrap.sh",
                 "tools/install_torch.py")  # fmt: skip


def installer():
    spec = importlib.util.spec_from_file_location("install_torch", TOOLS / "install_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_torch_pin_accepts_pypis_build_and_the_cpu_indexs_build():
    pin = installer().pinned_version(REPO / "constraints.txt")
    [line] = [x for x in (REPO / "constraints.txt").read_text().splitlines()
              if x.lower().startswith("torch==")]  # fmt: skip
    spec = SpecifierSet(line.removeprefix("torch"))
    assert Version(pin) in spec and Version(f"{pin}+cpu") in spec


def test_no_install_path_adds_an_index_to_the_whole_install():
    """--extra-index-url lets any name on that index shadow PyPI's (dependency confusion);
    every path installs torch through the one installer instead."""
    for path in INSTALL_PATHS:
        text = (REPO / path).read_text()
        if path.endswith(".py"):
            code = {node.value for node in ast.walk(ast.parse(text))
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)}  # fmt: skip
            assert "--extra-index-url" not in code, path
            continue
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert "--extra-index-url" not in code, path
        assert "install_torch.py" in code, f"{path} does not install torch through the installer"


def on(system: str, machine: str = "x86_64"):
    """Evaluate requirement markers as on another platform."""
    env = {"platform_system": system, "platform_machine": machine, "python_version": "3.11",
           "sys_platform": system.lower(), "extra": ""}  # fmt: skip
    return lambda req: Requirement(req).marker is None or Requirement(req).marker.evaluate(env)


PYPI_LINUX_TORCH = ["filelock", "sympy>=1.13.3",
                    'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"',
                    'triton==3.7.1; platform_system == "Linux" and python_version < "3.15"',
                    'optree>=0.13.0; extra == "optree"']  # fmt: skip


@pytest.mark.parametrize(
    ("version", "requires", "platform", "cpu"),
    [
        ("2.13.0+cpu", [], on("Linux"), True),
        ("2.13.0+cu128", [], on("Linux"), False),
        ("2.13.0+rocm6.4", [], on("Linux"), False),
        ("2.13.0", PYPI_LINUX_TORCH, on("Linux"), False),  # PyPI's Linux wheel: CUDA
        ("2.13.0", PYPI_LINUX_TORCH, on("Darwin", "arm64"), True),  # markers exclude macOS
        ("2.13.0", ["filelock", "sympy>=1.13.3"], on("Linux", "aarch64"), True),
    ],
)
def test_cpu_builds_are_told_from_cuda_builds(version, requires, platform, cpu):
    assert installer().is_cpu_build(version, requires, platform) is cpu


# ------------------------------------------------------------- the installer, for real


def fake_wheel(directory: Path, version: str, requires: list[str] = ()) -> Path:
    """A minimal valid wheel named torch: enough for pip to resolve and install."""
    name = f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version}.dist-info"
    metadata = "\n".join(["Metadata-Version: 2.1", "Name: torch", f"Version: {version}",
                          *(f"Requires-Dist: {r}" for r in requires)]) + "\n"  # fmt: skip
    files = {
        "torch/__init__.py": f"__version__ = {version!r}\n",
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }  # fmt: skip
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / name, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return directory / name


def simple_index(root: Path, wheel: Path) -> None:
    """A PEP 503 index at ``root`` serving one torch wheel."""
    (root / "torch").mkdir(parents=True)
    (root / "torch" / wheel.name).write_bytes(wheel.read_bytes())
    (root / "torch" / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    """127.0.0.1: /default/ offers a CUDA-dependent torch (as PyPI on Linux x86_64), /cpu/ the
    CPU build; the handler records every path requested."""
    root = tmp_path_factory.mktemp("indexes")
    wheels = root / "wheels"
    simple_index(root / "default", fake_wheel(wheels / "default", "2.13.0", PYPI_LINUX_TORCH))
    simple_index(root / "cpu", fake_wheel(wheels / "cpu", "2.13.0+cpu"))
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requested, wheels
    server.shutdown()


@pytest.fixture(scope="module")
def empty_venv(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("venv")
    venv.create(target, with_pip=True)
    return target


def run_installer(python: Path, tmp_path: Path, **pip_env: str) -> subprocess.CompletedProcess:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch==2.13.0\n")
    subprocess.run([python, "-m", "pip", "uninstall", "--yes", "--quiet", "torch"], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    # pip's configuration of this machine (its indexes, wheel folders, constraints) is off.
    env.update({"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PIP_RETRIES": "0", **pip_env})  # fmt: skip
    return subprocess.run(
        [python, TOOLS / "install_torch.py", "--constraints", constraints],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def installed_torch(python: Path) -> str:
    return subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip


def test_a_cpu_build_from_the_configured_sources_is_used_without_the_cpu_index(
    indexes, empty_venv, tmp_path
):
    url, requested, wheels = indexes
    requested.clear()
    python = empty_venv / "bin" / "python"
    done = run_installer(python, tmp_path, PIP_INDEX_URL=f"{url}/default/",
                         PIP_FIND_LINKS=str(wheels / "cpu"),  # a local wheel folder
                         TORCH_INDEX_URL=f"{url}/cpu/")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert installed_torch(python) == "2.13.0+cpu"
    assert not any(path.startswith("/cpu/") for path in requested), requested


def test_a_cuda_build_on_the_default_index_sends_torch_alone_to_the_cpu_index(
    indexes, empty_venv, tmp_path
):
    url, requested, _ = indexes
    requested.clear()
    python = empty_venv / "bin" / "python"
    done = run_installer(python, tmp_path, PIP_INDEX_URL=f"{url}/default/",
                         TORCH_INDEX_URL=f"{url}/cpu/")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert installed_torch(python) == "2.13.0+cpu"
    # --no-deps: none of the CUDA build's dependencies was looked up anywhere.
    assert not [path for path in requested if "nvidia" in path or "triton" in path], requested
    assert "no CPU build of torch==2.13.0" in done.stdout


def test_an_unreachable_cpu_index_fails_fast_with_what_to_do(indexes, empty_venv, tmp_path):
    url, _, _ = indexes
    python = empty_venv / "bin" / "python"
    with socket_closed_port() as port:
        done = run_installer(python, tmp_path, PIP_INDEX_URL=f"{url}/default/",
                             TORCH_INDEX_URL=f"http://127.0.0.1:{port}/cpu/")  # fmt: skip
    assert done.returncode == 1
    [error] = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert "unreachable" in error and "PIP_FIND_LINKS" in error and "TORCH_INDEX_URL" in error
    # Refused after one probe, before pip was pointed at the index (and its retries).
    assert "installing it alone from" in done.stdout
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0


class socket_closed_port:
    """A loopback port nothing listens on (bound, never listening, so nobody takes it)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


# ------------------------------------------------------------- preflight


def fake_program(directory: Path, name: str, script: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def preflight(python: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", TOOLS / "preflight.sh", python], capture_output=True,
                          text=True, env={**os.environ, **env})  # fmt: skip


def test_preflight_passes_on_this_machine():
    done = preflight(sys.executable)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("java_version", "ok"),
    [('openjdk version "11.0.2" 2019-01-15', False), ('java version "1.8.0_392"', False),
     ('openjdk version "17.0.15" 2025-04-15', True), ('openjdk version "21" 2023-09-19', True)],
)  # fmt: skip
def test_preflight_requires_java_17(tmp_path, java_version, ok):
    java_home = tmp_path / "jdk"
    fake_program(java_home / "bin", "java", f"echo '{java_version}' >&2\n")
    done = preflight(sys.executable, JAVA_HOME=str(java_home))
    assert (done.returncode == 0) is ok, done.stderr
    if not ok:
        assert done.stderr.startswith("ERROR: ") and "Java 17 or newer" in done.stderr


def test_preflight_names_a_missing_or_wrong_python(tmp_path):
    missing = preflight(str(tmp_path / "python3.11"))
    assert missing.returncode == 1 and "install Python 3.11" in missing.stderr
    old = fake_program(
        tmp_path, "python3.10", 'case "$2" in *platform*) echo 3.10.14 ;; *) exit 1 ;; esac\n'
    )
    wrong = preflight(str(old))
    assert wrong.returncode == 1 and "is Python 3.10.14, the project needs 3.11" in wrong.stderr


def test_setup_checks_first_and_installs_torch_before_the_project():
    plan = subprocess.run(["make", "-n", "-B", "-C", REPO, "setup"], capture_output=True,
                          text=True, check=True).stdout.splitlines()  # fmt: skip
    order = [next(i for i, line in enumerate(plan) if marker in line)
             for marker in ("tools/preflight.sh", "-m venv", "tools/install_torch.py",
                            "-e '.[dev]'")]  # fmt: skip
    assert order == sorted(order), plan
