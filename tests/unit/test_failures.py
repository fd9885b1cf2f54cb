"""Failures are classified: deterministic ones exit 2 with one ERROR line, transient ones 1."""

import re

import pytest
import torch

from sparklm.runtime import entrypoint, exit_codes
from sparklm.runtime.errors import PipelineError


class Py4JJavaError(Exception):
    """Stands in for py4j's error type: a Spark failure whose text carries the traceback."""


Py4JJavaError.__module__ = "py4j.protocol"

WORKER_TRACEBACK = """An error occurred while calling o57.collect.
: org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 1.0 failed
1 times, most recent failure: Lost task 0.0 in stage 1.0: org.apache.spark.api.python.
PythonException: Traceback (most recent call last):
  File "/work/jobs/sparklm/sources.py", line 160, in iter_mediawiki_pages
{last}
\tat org.apache.spark.api.python.BasePythonRunner$ReaderIterator.handlePythonException
"""


def raised(make):
    try:
        make()
    except Exception as exc:
        return exc
    raise AssertionError("nothing raised")


def worker(last: str) -> Py4JJavaError:
    return Py4JJavaError(WORKER_TRACEBACK.format(last=last))


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (PipelineError("bad input: fix it"), "^bad input: fix it$"),
        (raised(lambda: bytearray(1 << 60)),
         r"^the driver ran out of memory \(MemoryError\)\. .*: KNOBS, or raise spark.driver"),
        (worker("MemoryError"), r"^a Spark task ran out of memory \(MemoryError\)"),
        (raised(lambda: torch.empty(1 << 60, dtype=torch.uint8)),
         r"^the driver could not allocate memory for torch \(DefaultCPUAllocator: can't "
         r"allocate memory: you tried to allocate 1152921504606846976 bytes.*KNOBS"),
        (Py4JJavaError("An error occurred while calling o30.collectToPython.\n"
                       ": java.lang.OutOfMemoryError: Java heap space\n\tat x.y(z)"),
         r"^the Spark JVM ran out of memory \(java.lang.OutOfMemoryError: Java heap space\)\. "
         r".*raise spark.driver.memory"),
        (worker("sparklm.runtime.stages.StageNotCommitted: stage 'preprocess' is not complete"),
         r"^stage 'preprocess' is not complete$"),
    ],
)  # fmt: skip
def test_deterministic_failures_exit_2_naming_the_cause_and_the_knob(exc, message):
    verdict = exit_codes.classify(exc, "KNOBS")
    assert verdict is not None and verdict.exit_code == exit_codes.DETERMINISTIC
    assert re.search(message, verdict.message), verdict


@pytest.mark.parametrize(
    "exc",
    [worker("RuntimeError: injected task failure at preprocess:read-task (first attempt)"),
     Py4JJavaError("org.apache.spark.SparkException: Job aborted: ExecutorLostFailure "
                   "(executor 1 exited caused by one of the running tasks) Reason: Remote RPC "
                   "client disassociated"),
     ConnectionResetError("connection reset by peer")],
)  # fmt: skip
def test_transient_failures_are_left_to_the_retry(exc):
    assert exit_codes.classify(exc, "KNOBS") is None


def test_run_prints_one_error_line_and_exits_with_the_verdict(capsys):
    def main(argv):
        bytearray(1 << 60)

    with pytest.raises(SystemExit) as exit_info:
        entrypoint.run(main, [], memory_knobs="lower --batch-size")
    assert exit_info.value.code == 2
    [line] = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ERROR:")]
    assert "MemoryError" in line and "lower --batch-size" in line
