"""The settings spec and its three consumers: the trigger form, the jobs' command lines and the
config dataclasses. Each consumer is built from ``sparklm.settings``; these tests check the
builders once per consumer, over every setting, so a consumer edited by hand (a default, a
bound, a choice, a help text) fails here."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import jinja2
import pytest

from helpers.jobs import load_job
from llm_pipeline.params import pipeline_params
from llm_pipeline.pipeline import CODE_ROOT, PIPELINE, SparkJob
from sparklm import settings
from sparklm.runtime.errors import PipelineError
from sparklm.settings import SETTINGS, Setting, SettingError

# What each job needs besides its settings to parse its command line.
REQUIRED = {"publish": ["--registry", "file:///unused/registry"]}
# Bounds that depend on another setting: test each extreme with its companion.
COMPANIONS = {"early_rounds": {"rounds": 100_000}}
NUMERIC = [s for s in SETTINGS.values() if s.kind in ("integer", "number")]


@pytest.fixture(scope="module")
def jobs():
    return {job.stage: load_job(Path(job.script).stem) for job in PIPELINE}


def job_of(stage: str) -> SparkJob:
    return next(job for job in PIPELINE if job.stage == stage)


def parse(module, job: SparkJob, values: dict) -> argparse.Namespace:
    """The job's arguments with ``values`` rendered as the DAG renders its Params; for train
    also its configs, where the dataclasses check their fields."""
    templates = dict(job.flags)
    argv = ["--run-root", "file:///unused/run", *REQUIRED.get(job.stage, [])]
    for name, value in values.items():
        flag = SETTINGS[name].cli_flag
        params = {s.name: s.default for s in SETTINGS.values()} | {name: value}
        rendered = jinja2.Template(templates[flag]).render(params=params, **{CODE_ROOT: "/c"})
        argv += [flag, rendered]
    args = module.parse_args(argv)
    if job.stage == "train":
        module.configs(args, vocab_size=4096)
    return args


def extremes(setting: Setting) -> tuple[list[float], list[float]]:
    """The most extreme values the setting accepts, and values just outside its bounds."""
    inside, outside = [], []
    for bound, exclusive, inward in ((setting.minimum, setting.exclusive_minimum, 1),
                                     (setting.maximum, setting.exclusive_maximum, -1)):  # fmt: skip
        if bound is None:
            continue
        step = 1 if setting.kind == "integer" else max(abs(bound), 1) * 1e-6
        inside.append(bound + inward * step if exclusive else bound)
        outside.append(bound if exclusive else bound - inward * step)
    return inside, outside


def test_the_form_shows_every_setting_of_a_section_as_the_spec_defines_it():
    params = pipeline_params()
    assert list(params) == [s.name for s in SETTINGS.values() if s.section]
    for name, param in params.items():
        spec = SETTINGS[name]
        assert param.value == spec.default, name
        expected = {**spec.json_schema(), "title": spec.title, "section": spec.section}
        assert {k: param.schema.get(k) for k in expected} == expected, name
        assert param.description == spec.description, name


@pytest.mark.parametrize("stage", settings.STAGES)
def test_a_job_run_without_flags_uses_the_spec_defaults(jobs, stage):
    args = parse(jobs[stage], job_of(stage), {})
    for setting in settings.for_stage(stage):
        assert getattr(args, setting.name) == setting.default, setting.name


@pytest.mark.parametrize("stage", settings.STAGES)
def test_a_jobs_help_lists_every_setting_with_its_help(jobs, stage, capsys):
    with pytest.raises(SystemExit):
        jobs[stage].parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for setting in settings.for_stage(stage):
        assert setting.cli_flag in text, setting.name
        assert " ".join(setting.description.split())[:60] in text, setting.name


@pytest.mark.parametrize("stage", settings.STAGES)
def test_the_dag_passes_every_form_setting_of_a_stage_to_its_job(stage):
    flags = [flag for flag, _ in job_of(stage).flags]
    wanted = [s.cli_flag for s in settings.for_stage(stage) if s.section]
    assert [f for f in flags if f in wanted] == wanted


@pytest.mark.parametrize("setting", NUMERIC, ids=lambda s: s.name)
def test_a_job_accepts_what_the_form_accepts_and_refuses_the_rest(jobs, setting):
    """At each bound, through the DAG's template: the job and the spec's check agree."""
    inside, outside = extremes(setting)
    for stage in setting.stages:
        job = job_of(stage)
        if setting.cli_flag not in dict(job.flags):
            continue  # a command-line-only setting: the form never passes it
        for value in inside:
            args = parse(
                jobs[stage], job, {setting.name: value, **COMPANIONS.get(setting.name, {})}
            )
            assert getattr(args, setting.name) == pytest.approx(value)
        for value in [*outside, math.nan, math.inf]:
            with pytest.raises((PipelineError, SettingError)):
                parse(jobs[stage], job, {setting.name: value})


@pytest.mark.parametrize("setting", NUMERIC, ids=lambda s: s.name)
def test_no_number_setting_accepts_nan_or_infinity(setting):
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(SettingError, match="finite|an integer"):
            setting.check(value)


def test_the_config_dataclasses_take_their_defaults_from_the_spec(jobs):
    from sparklm.data.decompression import ReadLimits
    from sparklm.model.completion import Sampling
    from sparklm.model.memory_estimate import DEFAULT_MEMORY_BUDGET_GB
    from sparklm.model.training import TrainConfig
    from sparklm.registry.eval_set import DEFAULT_MAX_BYTES

    checked = {
        **{k: v for k, v in TrainConfig().to_dict().items() if k in SETTINGS},
        **ReadLimits().__dict__,
        **{("sample_seed" if k == "seed" else k): v for k, v in Sampling().__dict__.items()},
        "memory_budget_gb": DEFAULT_MEMORY_BUDGET_GB,
        "eval_max_bytes": DEFAULT_MAX_BYTES,
    }
    assert checked == {name: SETTINGS[name].default for name in checked}
    # The model the train job builds with no flags is the spec's, field by field.
    train = jobs["train"]
    model_cfg, _ = train.configs(parse(train, job_of("train"), {}), vocab_size=4096)
    model_fields = {s.name for s in settings.for_stage("train")} & set(model_cfg.to_dict())
    assert len(model_fields) == 14
    for name in model_fields - {"intermediate_size"}:
        assert getattr(model_cfg, name) == SETTINGS[name].default, name


def test_the_dataclasses_refuse_what_the_spec_refuses():
    from sparklm.model.completion import Sampling
    from sparklm.model.training import TrainConfig

    with pytest.raises(SettingError, match="--lr"):
        TrainConfig(lr=math.nan)
    with pytest.raises(SettingError, match="--temperature"):
        Sampling(temperature=-1.0)
    with pytest.raises(SettingError, match="--optimizer"):
        TrainConfig(optimizer="sgd")


def test_a_setting_moved_off_its_default_where_it_has_no_effect_is_named():
    defaults = {s.name: s.default for s in SETTINGS.values()}
    assert settings.ignored_settings(defaults) == []
    assert settings.ignored_settings({**defaults, "lr": 1e-3, "outer_lr": 0.5}) == [
        "--lr 0.001 has no effect: it applies only with --optimizer adamw, and this run has muon",
        "--outer-lr 0.5 has no effect: it applies only with --outer nesterov, and this run has avg",
    ]
    assert settings.ignored_settings({**defaults, "optimizer": "adamw", "lr": 1e-3}) == []
    assert settings.ignored_settings({**defaults, "schedule": "wsd", "decay_fraction": 0.3}) == []
    assert SETTINGS["muon_lr"].description.endswith("Applies only when optimizer is muon.")
    for setting in SETTINGS.values():
        if setting.only_when:
            other, value = setting.only_when
            assert value in SETTINGS[other].choices, setting.name


def test_the_train_job_warns_of_a_flag_its_other_flags_make_useless(jobs, caplog):
    train = jobs["train"]
    args = train.parse_args(["--run-root", "file:///tmp/x", "--lr", "1e-3"])
    with caplog.at_level("WARNING"):
        train.configs(args, vocab_size=256)
    assert "--lr 0.001 has no effect" in caplog.text


def test_the_pipeline_runs_the_stages_the_spec_lists_in_its_order():
    assert tuple(job.stage for job in PIPELINE) == settings.STAGES


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [("lr", "nan", "finite"), ("lr", "0", "> 0"), ("optimizer", "sgd", "one of adamw, muon"),
     ("qk_norm", "yes", "true or false"), ("n_layer", "2.5", "an integer"),
     ("model_name", "a/b", "does not match"), ("prompts", '["ok", 3]', "list of non-empty")],
)  # fmt: skip
def test_a_bad_value_is_named_with_its_flag_and_the_rule(name, text, message):
    with pytest.raises(SettingError, match=f"^{SETTINGS[name].cli_flag} .*{message}"):
        SETTINGS[name].parse(text)


def test_a_list_that_would_not_fit_in_one_command_line_argument_is_refused():
    """The prompts reach generate as one argument; Linux refuses one over 128 KiB."""
    setting = SETTINGS["prompts"]
    setting.check(["x" * 600] * 100)  # 60 KB
    with pytest.raises(SettingError, match="put them in a file"):
        setting.check(["<" * 600] * 100)  # 60 KB of text, 360 KB as the DAG renders it
    with pytest.raises(SettingError, match="put them in a file"):
        setting.check(["x" * 200_000])


def test_a_training_run_that_would_never_end_is_refused_in_the_form_and_the_job():
    """Each of rounds and local_steps may be 100,000; together they are refused at plan_run
    (check_values) and by the job's TrainConfig alike."""
    from sparklm.model.training import TrainConfig

    endless = {"rounds": 100_000, "local_steps": 100_000, "early_rounds": 0,
               "early_local_steps": 1}  # fmt: skip
    with pytest.raises(SettingError, match="10,000,000,000 optimizer steps"):
        settings.check_values(endless)
    with pytest.raises(SettingError, match="optimizer steps"):
        TrainConfig(rounds=100_000, local_steps=100_000)
    settings.check_values({**endless, "local_steps": 100})  # ten million: allowed
