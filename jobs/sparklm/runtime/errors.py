"""The one exception type a job reports to its user instead of a traceback."""

from __future__ import annotations

import importlib
import re

# "sparklm.runtime.errors.PipelineError: message" as the last line of a Python worker's traceback.
_RAISED = re.compile(r"^(sparklm(?:\.\w+)*)\.(\w+): (.+)$", re.MULTILINE)


class PipelineError(Exception):
    """A problem with the input or the configuration, worded as what is wrong and how to fix it.

    Job entry points catch it, print the message on one line prefixed with
    ``ERROR:`` and exit with status 2, so the Airflow task log (and the EMR
    step's stderr) ends with the sentence a user needs rather than a stack.
    """


def raised_in_task(exc: BaseException) -> PipelineError | None:
    """The PipelineError a Spark task raised, recovered from the failure the driver sees.

    A partition function's exception reaches the driver only as text: the Python
    worker's traceback inside a PythonException (DataFrame actions) or a
    Py4JJavaError (RDD actions). Input problems found while reading (a bomb, a
    malformed dump) are found there, so they are recovered here to end the job
    with the same one-line error as problems the driver finds.
    """
    for module, name, message in _RAISED.findall(str(exc)):
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(cls, type) and issubclass(cls, PipelineError):
            return cls(message)
    return None
