"""The trigger form and the train job agree on every training default.

The form (``llm_pipeline.params``) cannot import the job's code — the DAG file must parse without
torch — so each default is written twice; this test keeps the two equal: a form run with its
defaults trains exactly what ``spark-submit jobs/train.py`` trains with none.
"""

from llm_pipeline.jobs import PIPELINE
from llm_pipeline.params import pipeline_params
from support import load_job


def test_the_forms_defaults_are_the_train_jobs_defaults():
    [train] = [job for job in PIPELINE if job.stage == "train"]
    job_defaults = vars(load_job("train").parse_args(["--run-root", "file:///unused"]))
    params = pipeline_params()
    names = [flag.removeprefix("--").replace("-", "_") for flag, _ in train.flags]
    assert {n: params[n].value for n in names} == {n: job_defaults[n] for n in names}
