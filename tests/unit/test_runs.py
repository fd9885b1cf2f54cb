"""Run roots: named from run ids, validated so no run writes outside its own prefix."""

import os
import re
import string
from random import Random

import pytest

from helpers.paths import REPO
from helpers.registry import publish_by_hand
from llm_pipeline.params import pipeline_params
from llm_pipeline.plan import (
    Deployment,
    PlanError,
    RunRootError,
    make_plan,
    require_s3,
    run_id_segment,
    run_root_for,
)
from sparklm.settings import DEFAULT_CORPUS

SAFE = re.compile(r"[A-Za-z0-9._-]+")


def test_run_ids_become_one_safe_path_segment():
    segment = run_id_segment("manual__2026-11-27T20:00:00.123+00:00")
    assert segment.startswith("manual__2026-11-27T20_00_00.123_00_00-")
    for hostile in ("a/../../b", "../..x", "///", "..", "."):
        segment = run_id_segment(hostile)
        assert "/" not in segment and not segment.startswith(".")  # one segment, not . or ..


def test_different_run_ids_always_get_different_run_roots():
    """Over Airflow's whole run-id alphabet (its default allowed_run_id_pattern) and ids that
    differ only where the readable part replaces characters."""
    alphabet = string.ascii_letters + string.digits + "_.~:+-"
    random = Random(0)
    ids = {"manual__2026-01-01T00:00:00+00:00", "manual__2026-01-01T00_00_00_00_00",
           "manual__2026-01-01T00~00~00+00~00", *alphabet}  # fmt: skip
    ids |= {"".join(random.choices(alphabet, k=random.randint(1, 40))) for _ in range(5000)}
    ids |= {f"run{c}{d}" for c in alphabet for d in alphabet}
    segments = {run_id_segment(run_id) for run_id in ids}
    assert len(segments) == len(ids)
    assert all(SAFE.fullmatch(s) and s.strip(".") == s for s in segments)


def test_default_run_root_is_the_base_plus_the_run_id():
    run_id = "scheduled__2026-01-01T00:00:00+00:00"
    root = run_root_for("", run_id, "s3://bucket/runs/")
    assert root == f"s3://bucket/runs/{run_id_segment(run_id)}"
    assert root.startswith("s3://bucket/runs/scheduled__2026-01-01T00_00_00_00_00-")
    assert run_root_for("s3://b/explicit/", "ignored", "s3://b/runs") == "s3://b/explicit"


@pytest.mark.parametrize(
    "uri",
    ["s3://bucket/runs/../other", "file:///tmp/./x", "s3:///no-bucket", "file://host/path",
     "relative/path", "http://bucket/x", "s3://bucket//double"],
)  # fmt: skip
def test_run_roots_that_could_escape_are_refused(uri):
    with pytest.raises(RunRootError):
        run_root_for(uri, "run", "s3://bucket/runs")


def test_emr_needs_every_location_on_s3():
    require_s3({"run_root": "s3://bkt/r", "registry": "s3://bkt/m"})
    with pytest.raises(RunRootError, match="registry is 'file:///tmp/m'"):
        require_s3({"run_root": "s3://bkt/r", "registry": "file:///tmp/m"})


@pytest.mark.parametrize(
    ("uri", "reason"),
    [("file:////", "filesystem root"), ("file:///", "must be an absolute|filesystem root"),
     ("s3://bucket", "whole bucket"), ("s3://bucket/", "whole bucket"),
     (f"file://{os.path.expanduser('~')}", "home directory"),
     (f"file://{REPO}", "project checkout"), ("pkg://gensim/test_data", "file:/// or s3://")],
)  # fmt: skip
def test_run_roots_that_are_not_a_runs_own_are_refused(uri, reason):
    with pytest.raises(RunRootError, match=reason):
        run_root_for(uri, "run", "s3://bucket/runs")


@pytest.mark.parametrize(
    ("runs_base", "conf", "message"),
    [("s3://bkt/runs", {"run_root": "s3://bkt/runs/exp-*"},
      r"^run root 's3://bkt/runs/exp-\*' contains the glob character '\*', .* choose a run "
      "root without"),
     ("file:///srv/run?", {}, r"^run root 'file:///srv/run\?/manual__1-\w+' contains the glob "
      r"character '\?'"),
     ("s3://bkt/runs", {"registry": "s3://bkt/reg-[1]"},
      r"^registry 's3://bkt/reg-\[1\]' contains the glob character '\[', .* choose a "
      "registry without")],
)  # fmt: skip
def test_run_roots_and_registries_with_glob_characters_are_refused(runs_base, conf, message):
    deployment = Deployment(runs_base=runs_base, registry="s3://bkt/reg",
                            default_corpora=(DEFAULT_CORPUS,))  # fmt: skip
    with pytest.raises(RunRootError, match=message):
        make_plan(params(**conf), "manual__1", deployment)


def params(**overrides):
    return {**{name: p.value for name, p in pipeline_params().items()}, **overrides}


def plan(conf, corpus_prefixes="*", registry_prefixes="*"):
    deployment = Deployment(runs_base="s3://bkt/runs", registry="s3://bkt/reg",
                            default_corpora=(DEFAULT_CORPUS,), corpus_prefixes=corpus_prefixes,
                            registry_prefixes=registry_prefixes)  # fmt: skip
    return make_plan(conf, "manual__1", deployment)


def test_plan_run_warns_of_a_param_the_others_make_useless(caplog):
    with caplog.at_level("WARNING"):
        plan(params(lr=1e-3))
    wanted = "lr 0.001 has no effect: it applies only with optimizer adamw, and this run has muon"
    assert wanted in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        plan(params(optimizer="adamw", lr=1e-3))
    assert "has no effect" not in caplog.text


def test_the_plan_carries_the_allow_lists_to_the_jobs():
    got = plan(params(), corpus_prefixes="", registry_prefixes="s3://bkt/other/")
    assert got == {"run_root": f"s3://bkt/runs/{run_id_segment('manual__1')}",
                   "registry": "s3://bkt/reg",
                   "corpus_prefixes": DEFAULT_CORPUS,
                   "registry_prefixes": "s3://bkt/reg,s3://bkt/other/",
                   "init_from": ""}  # fmt: skip
    assert plan(params(registry="s3://bkt/other/x"), registry_prefixes="s3://bkt/other/")
    assert plan(params())["corpus_prefixes"] == "*"


@pytest.mark.parametrize(
    ("conf", "lists", "message"),
    [
        ({"corpus": "s3://other/corpus/*.txt"}, {"corpus_prefixes": ""},
         "corpus 's3://other/corpus/\\*.txt' is outside the allowed locations"),
        ({"corpus": "/home/u/.aws/credentials"}, {}, "hidden folder or file '.aws'"),
        ({"corpus": "pkg://gensim/../../.."}, {}, "inside its package"),
        ({"prompts_uri": "file:///etc/shadow"}, {"corpus_prefixes": "s3://bkt/"},
         "prompts|outside the allowed"),
        ({"eval_input": "file:///etc/passwd"}, {"corpus_prefixes": "s3://bkt/"},
         "corpus 'file:///etc/passwd' is outside the allowed locations"),
        ({"registry": "s3://bkt/elsewhere"}, {"registry_prefixes": ""},
         "registry 's3://bkt/elsewhere' is outside the allowed locations"),
        ({"context_len": 8192, "n_layer": 96, "n_embd": 8192, "n_head": 64}, {},
         r"77,\d+,\d+,\d+ parameters .* over the memory budget of 8 GB"),
        ({"n_embd": 1024, "memory_budget_gb": 0.5}, {}, "over the memory budget of 0.5 GB"),
        # Small in n_embd and n_layer; the MLP's width is what does not fit.
        ({"intermediate_size": 65536, "n_layer": 8}, {}, "over the memory budget of 8 GB"),
        # Each value allowed alone; together the train job's model or schedule refuses them.
        ({"n_embd": 100, "n_head": 3}, {}, r"n_embd \(100\) must be divisible by n_head \(3\)"),
        ({"n_embd": 96, "n_head": 32, "position": "rope"}, {},
         "the head size n_embd/n_head = 3 must be even"),
        ({"early_rounds": 20, "rounds": 12}, {}, r"early_rounds \(20\) must be at most rounds"),
    ],
)  # fmt: skip
def test_runs_the_jobs_would_refuse_are_refused_in_the_plan(conf, lists, message):
    with pytest.raises(PlanError, match=message):
        plan(params(**conf), **lists)


def plan_in(registry, conf, run_type="manual", retrain_init_from=""):
    deployment = Deployment(runs_base="s3://bkt/runs", registry=f"file://{registry}",
                            default_corpora=(DEFAULT_CORPUS,),
                            retrain_init_from=retrain_init_from)  # fmt: skip
    return make_plan(conf, "manual__1", deployment, run_type=run_type)


def test_init_from_is_resolved_once_to_the_version_folder(tmp_path):
    """Every stage gets the folder plan_run resolved: latest.json moving during the run
    cannot give tokenize and train different versions."""
    version = publish_by_hand(tmp_path / "reg")
    assert plan_in(tmp_path / "reg", params(model_name="m", init_from="latest"))[
        "init_from"] == version  # fmt: skip
    assert plan_in(tmp_path / "reg", params(model_name="m", init_from="v1"))["init_from"] == version


@pytest.mark.parametrize(
    ("conf", "message"),
    [({"init_from": "v9"}, "no published version at .*/m/v9"),
     ({"init_from": "file:///elsewhere/m/v1"}, "is not a version of 'm' in this run's registry"),
     ({"init_from": "v1", "n_embd": 64}, "the n_embd Param is 64, but version v1 .* has n_embd 16"),
     ({"init_from": "v1", "context_len": 64},
      "the context_len Param is 64, but version v1 .* has context_len 16")],
)  # fmt: skip
def test_a_version_that_cannot_be_continued_fails_the_plan(tmp_path, conf, message):
    publish_by_hand(tmp_path / "reg")
    with pytest.raises(PlanError, match=message):
        plan_in(tmp_path / "reg", params(model_name="m", **conf))


def test_scheduled_runs_continue_from_what_the_deployment_chose(tmp_path):
    version = publish_by_hand(tmp_path / "reg")
    conf = params(model_name="m")
    assert plan_in(tmp_path / "reg", conf, "scheduled", "latest")["init_from"] == version
    assert plan_in(tmp_path / "reg", conf, "asset_triggered", "v1")["init_from"] == version
    assert plan_in(tmp_path / "reg", conf, "asset_triggered")["init_from"] == ""
    # A run triggered by hand with init_from empty trains from scratch, whatever the Variable.
    assert plan_in(tmp_path / "reg", conf, "manual", "latest")["init_from"] == ""
    with pytest.raises(PlanError, match="the llm_retrain_init_from Variable '../v1' does not "
                                        "match .*: fix the Variable"):  # fmt: skip
        plan_in(tmp_path / "reg", conf, "scheduled", "../v1")
