"""A PipelineError raised inside a Spark task is recovered from the text the driver gets."""

from sparklm.runtime.errors import PipelineError, raised_in_task
from sparklm.runtime.storage import StorageError

WORKER_TRACEBACK = """An exception was thrown from the Python worker.
Traceback (most recent call last):
  File "/jobs/sparklm/compressed.py", line 80, in read
    raise PipelineError(self._describe)
{name}: file:///c/bomb.gz decompresses to more than 52 bytes: raise --max-compression-ratio
"""


def test_a_pipeline_error_from_a_task_is_recovered_with_its_message():
    failure = raised_in_task(RuntimeError(WORKER_TRACEBACK.format(
        name="sparklm.runtime.errors.PipelineError")))  # fmt: skip
    assert isinstance(failure, PipelineError)
    assert str(failure) == (
        "file:///c/bomb.gz decompresses to more than 52 bytes: raise --max-compression-ratio"
    )
    assert isinstance(raised_in_task(RuntimeError(WORKER_TRACEBACK.format(
        name="sparklm.runtime.storage.StorageError"))), StorageError)  # fmt: skip


def test_other_task_failures_are_not_mistaken_for_input_errors():
    for name in (
        "builtins.MemoryError",
        "sparklm.data.lines.LineCutter",
        "sparklm.nope.Error",
        "xml.etree.ElementTree.ParseError",
    ):
        assert raised_in_task(RuntimeError(WORKER_TRACEBACK.format(name=name))) is None
