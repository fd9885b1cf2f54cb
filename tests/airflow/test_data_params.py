"""The data Params reach the preprocess job: every flag the DAG renders, the job accepts."""

import copy

import jinja2
import pytest

from helpers.jobs import load_dag, load_job
from llm_pipeline.pipeline import PIPELINE


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag()


def test_the_preprocess_job_gets_every_data_param(dag):
    [preprocess] = [job for job in PIPELINE if job.stage == "preprocess"]
    chosen = {"text_field": "meta.content", "max_line_bytes": 4096, "max_record_bytes": 8192,
              "max_decompressed_gb": 1.5, "max_compression_ratio": 30.0, "val_fraction": 0.2,
              "min_chars": 3}  # fmt: skip
    params = copy.deepcopy(dag.params)
    for name, value in chosen.items():
        params[name] = value
    values = params.validate()
    rendered = [jinja2.Template(arg).render(params=values, plan={"corpus_prefixes": ""})
                for arg in preprocess.arguments("'/jobs'", plan="plan")[2:]]  # fmt: skip
    args = load_job("preprocess").parse_args(["--run-root", "/tmp/run", *rendered])
    assert {name: getattr(args, name) for name in chosen} == chosen


@pytest.mark.parametrize(
    "conf",
    [
        {"text_field": ""},
        {"text_field": "meta..content"},
        {"text_field": "a b"},
        {"max_line_bytes": 10},
        {"max_record_bytes": 2**31},
        {"max_decompressed_gb": 0},
        {"max_compression_ratio": 0.5},
    ],
)
def test_bad_data_params_are_refused(dag, conf):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dag.params)
    with pytest.raises(ParamValidationError):
        for key, value in conf.items():
            params[key] = value
        params.validate()
