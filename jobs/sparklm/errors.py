"""The one exception type a job reports to its user instead of a traceback."""


class PipelineError(Exception):
    """A problem with the input or the configuration, worded as what is wrong and how to fix it.

    Job entry points catch it, print the message on one line prefixed with
    ``ERROR:`` and exit with status 2, so the Airflow task log (and the EMR
    step's stderr) ends with the sentence a user needs rather than a stack.
    """
