"""``make bench-mutation``: how many mutants of the library the tests kill, module by module.

mutmut 3 rewrites each function of the chosen modules into many variants (an operator flipped,
a constant changed, a call dropped) behind a trampoline, and runs the tests that call that
function once per variant: a variant no test fails on is a *survivor*, a behaviour nothing
checks.

Two passes (the second with ``--second-pass``):

1. **mutmut** with the fast tests (``make test-fast``'s selection). mutmut records which test
   calls which function and runs only those per mutant, two at a time (two cores).
2. **The slower tests of the module**: every mutant pass 1 left alive (survivors, and mutants of
   functions no fast test calls) once more against the tests ``MODULES`` lists for its module
   (Spark jobs, or the S3 server's: the files' marked tests, since pass 1 ran the others), with
   ``MUTANT_UNDER_TEST`` in the environment so spark-submit drivers and executors run the
   mutant too (mutmut cannot see calls made in those processes, and starting those servers for
   every mutant would take hours).

mutmut needs the mutated package importable as ``sparklm`` from ``mutants/src``: the run
stages the checkout under ``--work-dir`` with ``jobs/sparklm`` moved to ``src/sparklm`` and the
job scripts left in ``jobs/``, and puts ``mutants/src`` and ``mutants/plugins`` on
``PYTHONPATH`` so every interpreter the tests start imports the mutated copy (the tests' own
check that the code under test is the checkout's holds for the staged tree).

    python bench/bench_mutation.py [--module storage] [--second-pass] [--budget-min N]
    python bench/bench_mutation.py --resume [--budget-min 0]   # go on; 0: only report

Results: ``results.md`` and ``results.json`` (a top-level ``goals`` list, per-module counts,
every survivor with its diff) under ``bench/out/mutation``; a ``--module`` run replaces only
its modules' rows. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import REPO, load_average, load_note, log, markdown_table, pct, write_results

TARGET = 0.85
# The tests pass 2 adds: the markers that keep a test out of the fast ones (pass 1 ran the rest).
SLOWER_TESTS = "spark or s3 or airflow or emr or slow"
FAST_TESTS = f"not ({SLOWER_TESTS})"
# mutmut's exit codes, by what they say about a mutant (mutmut/stats.py).
# 3 (pytest's internal error) is a broken run, not a kill, whatever mutmut counts it as; pass 2
# runs such a mutant's tests again outside mutmut's runner.
KILLED = {1, 37}
SURVIVED = {0}
TIMEOUT = {24, -24, 36, 152, 255}
NO_TESTS = {5, 33}
BROKEN = {3}


@dataclass(frozen=True)
class Module:
    """One row of the score table: library files under ``jobs/sparklm`` and the slower tests
    (pytest paths) that exercise them beyond the fast ones."""

    files: tuple[str, ...]
    slower_tests: tuple[str, ...]


MODULES = {
    "model": Module(("model/gpt.py",), ("tests/spark/test_train_job.py",)),
    "training": Module(
        ("model/training.py", "model/averaging.py", "model/optimizers.py"),
        ("tests/spark/test_train_job.py",),
    ),
    "sampling": Module(("model/decoding.py",), ("tests/spark/test_generate_job.py",)),
    "tokenizer": Module(("data/tokenizer.py",), ("tests/spark/test_tokenize_job.py",)),
    "storage": Module(
        ("runtime/storage.py", "runtime/stages.py", "runtime/ownership.py"),
        # The S3 server's tests (marker s3) of the same files, run whole.
        ("tests/unit/test_storage.py", "tests/unit/test_ownership.py"),
    ),
    "sources": Module(
        ("data/sources.py", "data/decompression.py", "data/lines.py", "data/records.py"),
        ("tests/spark/test_preprocess_job.py", "tests/spark/test_hostile_corpora.py"),
    ),
    "registry": Module(
        ("registry/versions.py", "registry/publication.py"),
        ("tests/spark/test_publish_job.py", "tests/spark/test_promotion_gate.py"),
    ),
}


def stage(work: Path, modules: Sequence[str]) -> Path:
    """A copy of the checkout mutmut can run in, configured to mutate ``modules``' files."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(REPO / "jobs" / "sparklm", work / "src" / "sparklm",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    (work / "jobs").mkdir()
    for script in (REPO / "jobs").glob("*.py"):
        shutil.copy2(script, work / "jobs" / script.name)
    for folder in ("tests", "tools", "plugins", "dags"):
        shutil.copytree(REPO / folder, work / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
    only = [f"src/sparklm/{f}" for name in modules for f in MODULES[name].files]
    config = {
        "source_paths": ["src/sparklm"],
        "only_mutate": only,
        "also_copy": ["jobs", "tools", "plugins", "dags"],
        # The library's fast tests; the install tests read the Makefile, which is not staged.
        "pytest_add_cli_args": [
            "-p",
            "no:cacheprovider",
            "-m",
            FAST_TESTS,
            "-q",
            "--ignore=tests/unit/test_install.py",
        ],
        "pytest_add_cli_args_test_selection": ["tests/unit"],
        # torch's thread pool does not survive a fork once it has run (the child hangs until the
        # timeout): fork each mutant's run from a server process that has not run any test.
        "process_isolation": "forkserver",
        "use_git_change_detection": False,
    }
    # Made now, so that they are on PYTHONPATH's folders when mutmut's interpreter starts (a
    # folder missing then is never looked in again).
    for folder in ("src", "plugins"):
        (work / "mutants" / folder).mkdir(parents=True)
    (work / "modules.json").write_text(json.dumps(list(modules)))
    pyproject = (REPO / "pyproject.toml").read_text()
    (work / "pyproject.toml").write_text(pyproject + "\n[tool.mutmut]\n" + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in config.items()))  # fmt: skip
    return work


def staged_env(work: Path) -> dict[str, str]:
    """Every interpreter the tests start (spark-submit drivers, executors, subprocesses) imports
    the mutated ``sparklm`` and the staged plugin, never the checkout's editable install."""
    mutants = work / "mutants"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(mutants / "src"), str(mutants / "plugins")])
    env.pop("MUTANT_UNDER_TEST", None)
    return env


def run_mutmut(work: Path, budget_s: float | None) -> float:
    """Pass 1; its wall seconds. Past ``budget_s`` mutmut is interrupted: it has saved each
    verdict as it came, the rest stay unchecked, and ``--resume`` goes on with them."""
    started = time.perf_counter()
    mutmut = Path(sys.executable).with_name("mutmut")
    with subprocess.Popen([str(mutmut), "run", "--max-children", "2"], cwd=work,
                          env=staged_env(work), start_new_session=True) as proc:  # fmt: skip
        try:
            returncode = proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            log(f"budget of {budget_s:.0f} s spent: stopping mutmut")
            os.killpg(proc.pid, signal.SIGTERM)  # its workers go on after a SIGINT
            proc.wait(timeout=120)
        else:
            if returncode != 0:
                raise SystemExit(f"ERROR: mutmut failed (exit {returncode}); see its output above")
    return time.perf_counter() - started


def exit_codes(work: Path, module: str) -> dict[str, int | None]:
    """mutmut's verdict per mutant of ``module`` (``None``: not run)."""
    codes: dict[str, int | None] = {}
    for f in MODULES[module].files:
        meta = work / "mutants" / "src" / "sparklm" / f"{f}.meta"
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


# mutmut's own `show`, for many mutants in one process (a `mutmut show` each takes ~1 s).
DIFFS = """
import json, sys
from mutmut.__main__ import find_mutant, get_diff_for_mutant
names = json.load(sys.stdin)
print(json.dumps({n: get_diff_for_mutant(n, path=find_mutant(n).path) for n in names}))
"""


def diffs_of(work: Path, mutants: list[str]) -> dict[str, str]:
    shown = subprocess.run([sys.executable, "-c", DIFFS], cwd=work, env=staged_env(work),
                           input=json.dumps(mutants), capture_output=True, text=True,
                           check=True)  # fmt: skip
    return {name: diff.strip() for name, diff in json.loads(shown.stdout).items()}


def fast_tests_of(work: Path, mutant: str) -> list[str]:
    """The fast tests mutmut's stats run saw calling ``mutant``'s function."""
    stats = json.loads((work / "mutants" / "mutmut-stats.json").read_text())
    function = mutant.rsplit("__mutmut_", 1)[0]
    return sorted(stats["tests_by_mangled_function_name"].get(function, []))


def fails_on(work: Path, mutant: str, tests: list[str]) -> bool:
    """Whether ``tests`` fail (pytest's exit 1) with ``mutant`` in place."""
    env = staged_env(work) | {"MUTANT_UNDER_TEST": mutant}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-x", "-q", "--no-header",
         "-o", "addopts=", *tests],
        cwd=work / "mutants", env=env, capture_output=True, text=True,
    )  # fmt: skip
    return result.returncode == 1


def second_pass(work: Path, module: str, unkilled: list[str], broken: list[str]) -> dict[str, bool]:
    """Pass 2: whether the module's slower tests kill each mutant pass 1 left alive (survivors,
    and mutants of functions no fast test calls). A mutant whose pass-1 run broke (pytest's
    internal error, exit 3, inside mutmut's runner) first gets its fast tests again, run plainly."""
    killed = {}
    slower = ["-m", SLOWER_TESTS, *MODULES[module].slower_tests]
    for mutant in [*unkilled, *broken]:
        killed[mutant] = (
            mutant in broken and fails_on(work, mutant, fast_tests_of(work, mutant))
        ) or fails_on(work, mutant, slower)
        log(f"second pass {mutant}: {'killed' if killed[mutant] else 'survived'}")
    return killed


def score(codes: dict[str, int | None], second: dict[str, bool]) -> dict[str, Any]:
    """Counts for one module; the score is killed ÷ (every mutant that ran)."""
    late = {m for m, k in second.items() if k}
    survivors = sorted(m for m, c in codes.items() if c in SURVIVED and m not in late)
    counts = {
        "killed": sum(c in KILLED for c in codes.values()) + len(late),
        "killed_in_second_pass": len(late),
        "survived": len(survivors),
        "timeout": sum(c in TIMEOUT for c in codes.values()),
        "no_tests": sum(c in NO_TESTS and m not in late for m, c in codes.items()),
        "not_checked": sum(c is None for c in codes.values()),
        "errors": sum(
            c not in KILLED | SURVIVED | TIMEOUT | NO_TESTS | {None} and m not in late
            for m, c in codes.items()
        ),
    }
    ran = sum(counts[k] for k in ("killed", "survived", "timeout", "no_tests", "errors"))
    # A timeout is a kill (the mutant hangs where the code returns); an untested mutant, or one
    # whose run broke, is not.
    counts["score"] = (counts["killed"] + counts["timeout"]) / ran if ran else None
    counts["survivors"] = survivors
    return counts


def goals(per_module: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One goal per module; a module with mutants left unchecked has not met it yet."""
    return [{"name": f"{name}: mutants killed", "measured": c["score"], "target": TARGET,
             "met": c["not_checked"] == 0 and c["score"] is not None and c["score"] >= TARGET}
            for name, c in per_module.items()]  # fmt: skip


def report(per_module: dict[str, dict[str, Any]], raw: dict[str, Any]) -> str:
    rows = [[name, ", ".join(MODULES[name].files), c["killed"],
             c["killed_in_second_pass"] if c["second_pass"] else "–",
             c["survived"], c["timeout"], c["no_tests"], c["errors"], c["not_checked"],
             pct(c["score"])]
            for name, c in per_module.items()]  # fmt: skip
    table = markdown_table(["module", "files (jobs/sparklm/…)", "killed", "of which in pass 2",
                            "survived", "timeout", "no tests", "errors", "not checked",
                            "score"], rows, "llrrrrrrrr")  # fmt: skip
    return (f"{table}\n\nScore: (killed + timeout) ÷ the mutants checked. Goal: ≥ {TARGET:.0%} "
            f"per module, every mutant checked. {load_note(raw)}\n")  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--module", action="append", choices=sorted(MODULES),
                   help="a module to mutate (repeatable; default: every module)")  # fmt: skip
    p.add_argument(
        "--second-pass",
        action="store_true",
        help="each survivor or untested mutant against its module's slower tests (10-45 s each)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="go on with the mutants an interrupted run left unchecked (same stage)",
    )
    p.add_argument(
        "--budget-min",
        type=float,
        help="stop mutmut after this many minutes (the rest stay unchecked; 0: only report)",
    )
    p.add_argument("--work-dir", type=Path, default=REPO / "bench" / "out" / "mutation")
    return p.parse_args(argv)


def earlier_results(out_dir: Path) -> dict[str, Any]:
    """The last results.json, so that a ``--module`` run replaces only its own rows."""
    path = out_dir / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    raw = earlier_results(args.work_dir)
    raw["load_average_start"] = load_average()
    work = args.work_dir / "stage"
    if args.resume:
        staged = json.loads((work / "modules.json").read_text())
        modules = [name for name in staged if name in (args.module or staged)]
    else:
        modules = args.module or list(MODULES)
        stage(work, modules)
    log(f"mutmut: {', '.join(modules)} (staged in {work})")
    wall_s = (
        0.0
        if args.budget_min == 0
        else run_mutmut(work, args.budget_min * 60 if args.budget_min else None)
    )
    per_module = raw.get("per_module", {})
    diffs = raw.get("survivor_diffs", {})
    for name in modules:
        codes = exit_codes(work, name)
        # No fast test calls an untested mutant's function; the slower tests may.
        unkilled = sorted(m for m, c in codes.items() if c in SURVIVED | NO_TESTS)
        broken = sorted(m for m, c in codes.items() if c in BROKEN)
        late = second_pass(work, name, unkilled, broken) if args.second_pass else {}
        per_module[name] = score(codes, late) | {"second_pass": args.second_pass}
        diffs = {m: d for m, d in diffs.items() if not m.startswith(f"{name}:")}
        diffs.update(
            {f"{name}: {m}": d for m, d in diffs_of(work, per_module[name]["survivors"]).items()}
        )
    raw["load_average_end"] = load_average()
    raw["runs"] = [*raw.get("runs", []), {"modules": modules, "wall_s": round(wall_s),
                   "load_average_start": raw["load_average_start"],
                   "load_average_end": raw["load_average_end"]}]  # fmt: skip
    raw["per_module"] = {name: per_module[name] for name in MODULES if name in per_module}
    raw["goals"] = goals(raw["per_module"])
    raw["survivor_diffs"] = diffs
    markdown = report(raw["per_module"], raw)
    write_results(args.work_dir, markdown, raw)
    print(markdown)


if __name__ == "__main__":
    main()
