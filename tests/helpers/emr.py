"""What the tests read back from moto's EMR: a run's clusters and the steps queued on them."""

import boto3

from llm_pipeline.pipeline import PIPELINE

# Each stage's step, as add_steps names it: a run queues each exactly once.
STEP_NAMES = sorted(f"llm_decoder {job.stage}" for job in PIPELINE)


def clusters_of(endpoint: str, run_id: str) -> list[dict]:
    """The clusters moto at ``endpoint`` holds for ``run_id``, each with its step names."""
    client = boto3.client("emr", endpoint_url=endpoint, region_name="us-east-1")
    clusters = [c for c in client.list_clusters()["Clusters"]
                if c["Name"] == f"llm-decoder {run_id}"]  # fmt: skip
    for cluster in clusters:
        steps = client.list_steps(ClusterId=cluster["Id"])["Steps"]
        cluster["StepNames"] = sorted(s["Name"] for s in steps)
    return clusters
