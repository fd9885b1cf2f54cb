"""Which failures a retry can fix: the exit status and the one line a failed job ends with.

Airflow retries a task whose job exits 1 and fails one that exits 2 at once
(``llm_pipeline.operators``). Deterministic failures — bad input, a model or a
line too large for the memory it was given, a malformed dump — would fail the
same way on every retry, so they end in ``ERROR: <cause> … <knob to turn>`` and
exit 2. Genuinely transient ones (S3 unreachable; a killed executor or a lost
worker, which surface as unclassified errors) exit 1 and are retried.

A failure inside a Spark task reaches the driver as a ``Py4JJavaError`` (or
pyspark's ``PythonException``) whose text carries the worker's traceback, so
causes are recognised in that text as well as by type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sparklm.runtime import storage
from sparklm.runtime.errors import PipelineError, raised_in_task
from sparklm.settings import SettingError

TRANSIENT = 1
DETERMINISTIC = 2
SPARK_MEMORY = "spark.driver.memory (spark-submit --driver-memory) or spark.executor.memory"
JVM_OOM = re.compile(r"java\.lang\.OutOfMemoryError[^\n]*")
TORCH_ALLOCATOR = re.compile(r"DefaultCPUAllocator: can't allocate memory[^\n]*")
# The last line of a Python worker's traceback: "MemoryError", "MemoryError: …".
WORKER_MEMORY_ERROR = re.compile(r"^MemoryError\b[^\n]*", re.MULTILINE)


@dataclass(frozen=True)
class Verdict:
    exit_code: int
    message: str


def classify(exc: BaseException, memory_knobs: str) -> Verdict | None:
    """How a job that raised ``exc`` ends; None for an unknown (and so retryable) error.

    ``memory_knobs`` names the job's own settings that shrink its memory use.
    """
    if isinstance(exc, PipelineError | SettingError):
        return Verdict(DETERMINISTIC, str(exc))
    unreachable = storage.unreachable_message(exc)
    if unreachable:
        return Verdict(TRANSIENT, unreachable)
    chain = _chain(exc)
    text = "\n".join(_describe(e) for e in chain)
    where = "a Spark task" if _from_spark(chain) else "the driver"
    if found := JVM_OOM.search(text):
        return _memory(f"the Spark JVM ran out of memory ({found.group(0).strip()})",
                       f"raise {SPARK_MEMORY}, or {memory_knobs}")  # fmt: skip
    if found := TORCH_ALLOCATOR.search(text):
        return _memory(f"{where} could not allocate memory for torch ({found.group(0).strip()})",
                       f"{memory_knobs}, or raise {SPARK_MEMORY}")  # fmt: skip
    if any(isinstance(e, MemoryError) for e in chain) or WORKER_MEMORY_ERROR.search(text):
        return _memory(f"{where} ran out of memory (MemoryError)",
                       f"{memory_knobs}, or raise {SPARK_MEMORY}")  # fmt: skip
    if (failure := next(filter(None, map(raised_in_task, chain)), None)) is not None:
        return Verdict(DETERMINISTIC, str(failure))
    return None


def _memory(cause: str, knobs: str) -> Verdict:
    return Verdict(DETERMINISTIC, f"{cause}. The same input fails the same way again: {knobs}")


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _describe(exc: BaseException) -> str:
    """``str(exc)``; a Py4JJavaError asks the JVM for its text, which fails if the JVM died."""
    try:
        return str(exc)
    except Exception:
        return type(exc).__name__


def _from_spark(chain: list[BaseException]) -> bool:
    return any(type(e).__module__.startswith(("py4j", "pyspark")) for e in chain)
