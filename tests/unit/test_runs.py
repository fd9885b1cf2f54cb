"""Run roots: named from run ids, validated so no run writes outside its own prefix."""

import pytest

from llm_pipeline.runs import RunRootError, require_s3, run_id_segment, run_root_for


def test_run_ids_become_one_safe_path_segment():
    segment = run_id_segment("manual__2026-11-27T20:00:00.123+00:00")
    assert segment == "manual__2026-11-27T20_00_00.123_00_00"
    assert "/" not in run_id_segment("a/../../b") and ".." not in run_id_segment("../..x")
    with pytest.raises(RunRootError):
        run_id_segment("///")


def test_default_run_root_is_the_base_plus_the_run_id():
    root = run_root_for("", "scheduled__2026-01-01T00:00:00+00:00", "s3://bucket/runs/")
    assert root == "s3://bucket/runs/scheduled__2026-01-01T00_00_00_00_00"
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
    require_s3({"run_root": "s3://b/r", "registry": "s3://b/m"})
    with pytest.raises(RunRootError, match="registry is 'file:///tmp/m'"):
        require_s3({"run_root": "s3://b/r", "registry": "file:///tmp/m"})
