"""``python -m sparklm.runtime.summary``: one line per stage of the pipeline, in the DAG's order."""

from llm_pipeline.pipeline import PIPELINE
from sparklm.runtime.summary import summarize


def test_the_summary_lists_every_stage_of_the_pipeline_in_order(tmp_path):
    lines = summarize(f"file://{tmp_path}")
    assert [line.split()[0] for line in lines[1:]] == [job.stage for job in PIPELINE]
    assert all(line.endswith("not committed") for line in lines[1:])
