"""Every Param the DAG hands a job as ``--flag {{ params.flag }}`` means the same to the trigger
form, the job's command line and the job's config dataclass.

The form (``llm_pipeline.params``) cannot import the jobs' code — the DAG file must parse
without torch — so defaults, bounds and choices are written twice; these tests fail when the
two drift: a default that differs (a form run would train something else than
``spark-submit`` with no flags), a choice one side lacks, or a value the form accepts at its
bounds that the job refuses (the run would fail minutes in, not in the form).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import jinja2
import pytest

from llm_pipeline.jobs import PIPELINE, SparkJob
from llm_pipeline.params import pipeline_params
from sparklm.errors import PipelineError
from support import load_job

PASSED_THROUGH = re.compile(r"\{\{ params\.(\w+) \}\}")
# What each job needs besides the Param flags to parse its command line.
REQUIRED = {
    "preprocess": ["--input", "file:///unused/corpus.txt"],
    "publish": ["--registry", "file:///unused/registry", "--model-name", "m"],
}
# Bounds the form checks against another Param: test each extreme with its companion.
COMPANIONS = {"early_rounds": {"rounds": 100_000}}


def passed_through(job: SparkJob) -> dict[str, tuple[str, str]]:
    """``{param: (flag, template)}`` for the job's flags made by ``_flags``: one Param passed
    unchanged under its own name."""
    found = {}
    for flag, template in job.flags:
        match = PASSED_THROUGH.fullmatch(template)
        if match and flag == f"--{match.group(1).replace('_', '-')}":
            found[match.group(1)] = (flag, template)
    return found


CASES = [(job, name) for job in PIPELINE for name in passed_through(job)]
# Flags the job requires have no default of their own.
WITH_DEFAULTS = [(job, name) for job, name in CASES
                 if passed_through(job)[name][0] not in REQUIRED.get(job.stage, [])]  # fmt: skip


@pytest.fixture(scope="module")
def params():
    return pipeline_params()


@pytest.fixture(scope="module")
def jobs():
    return {job.stage: load_job(Path(job.script).stem) for job in PIPELINE}


def parse(module, job: SparkJob, values: dict) -> argparse.Namespace:
    """Parse the job's command line with ``values`` rendered as Airflow renders the flags;
    for train also build its configs, where the dataclasses check their fields."""
    flags = passed_through(job)
    argv = ["--run-root", "file:///unused/run", *REQUIRED.get(job.stage, [])]
    for name, value in values.items():
        flag, template = flags[name]
        argv += [flag, jinja2.Template(template).render(params={name: value})]
    args = module.parse_args(argv)
    if job.stage == "train":
        module.configs(args, vocab_size=4096)
    return args


def parser_action(module, job: SparkJob, flag: str, monkeypatch) -> argparse.Action:
    """The argparse action of ``flag``: the parser is caught as the job parses its arguments."""
    parsers = []
    original = argparse.ArgumentParser.parse_args

    def spy(self, *args, **kwargs):
        parsers.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", spy)
    parse(module, job, {})
    monkeypatch.undo()
    [action] = [a for a in parsers[0]._actions if flag in a.option_strings]
    return action


def accepted_extremes(schema: dict) -> list:
    """The smallest and largest values the form accepts for a numeric Param."""
    values = []
    for inclusive, exclusive, inward in (("minimum", "exclusiveMinimum", 1),
                                         ("maximum", "exclusiveMaximum", -1)):  # fmt: skip
        if exclusive in schema:
            bound = schema[exclusive]
            values.append(bound + inward * max(abs(bound), 1) * 1e-6)
        elif inclusive in schema:
            values.append(schema[inclusive])
    return values


@pytest.mark.parametrize(("job", "name"), WITH_DEFAULTS,
                         ids=[f"{j.stage}-{n}" for j, n in WITH_DEFAULTS])  # fmt: skip
def test_the_forms_default_is_the_jobs_default(jobs, params, job, name):
    args = parse(jobs[job.stage], job, {})
    assert params[name].value == getattr(args, name)


@pytest.mark.parametrize(("job", "name"), CASES, ids=[f"{j.stage}-{n}" for j, n in CASES])
def test_the_form_offers_exactly_the_jobs_choices(jobs, params, job, name, monkeypatch):
    action = parser_action(jobs[job.stage], job, passed_through(job)[name][0], monkeypatch)
    schema = params[name].schema
    choices = list(action.choices) if action.choices is not None else None
    assert schema.get("enum") == choices
    if schema.get("type") == "boolean":
        for value in (True, False):  # rendered as "True"/"False"
            assert getattr(parse(jobs[job.stage], job, {name: value}), name) is value


@pytest.mark.parametrize(("job", "name"), CASES, ids=[f"{j.stage}-{n}" for j, n in CASES])
def test_the_job_accepts_what_the_form_accepts_at_its_bounds(jobs, params, job, name):
    schema = params[name].schema
    for value in accepted_extremes(schema):
        value = round(value) if schema.get("type") == "integer" else value
        try:
            args = parse(jobs[job.stage], job, {name: value, **COMPANIONS.get(name, {})})
        except (SystemExit, PipelineError) as exc:
            pytest.fail(f"the form accepts {name}={value!r}, the {job.stage} job refuses it: "
                        f"{exc}")  # fmt: skip
        assert getattr(args, name) == pytest.approx(value)


def test_the_train_dataclasses_default_to_what_the_form_shows(jobs, params):
    """The train job's flags default to TrainConfig's fields and its DEFAULT_MODEL's block;
    the form must show the same values, whichever way the job's defaults change."""
    from sparklm.training import TrainConfig

    train_job = jobs["train"]
    [train] = [job for job in PIPELINE if job.stage == "train"]
    names = passed_through(train)
    train_defaults = TrainConfig().to_dict()
    model_defaults = train_job.DEFAULT_MODEL.to_dict()
    model_defaults["intermediate_size"] = 0  # the form's and the flag's "the MLP's default"
    checked = 0
    for defaults in (train_defaults, model_defaults):
        for name in names.keys() & defaults.keys():
            assert params[name].value == defaults[name], name
            checked += 1
    assert checked >= 30
