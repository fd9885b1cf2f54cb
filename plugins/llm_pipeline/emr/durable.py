"""EMR cluster creation and step submission that survive their own worker.

A retried ``create_cluster`` must not start a second cluster (which nothing would terminate),
and a retried ``add_steps`` must not queue the five jobs twice. Both operators keep what they
created in Airflow's task state store (``ResumableJobMixin``: the rows outlive a try, a worker
restart and a SIGKILL, and every try of one task instance shares them), and a retry attaches
to it instead of creating it again. The store is written after the AWS call returns, so a try
that dies between the two is covered by looking the work up in EMR itself: the cluster by this
run's name and ``run_id`` tag, the steps by their names on the cluster. With that, the tasks
can be given retries, and a throttled API call or a restarted worker no longer fails the run.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrCreateJobFlowOperator,
)
from airflow.sdk import ResumableJobMixin
from botocore.exceptions import ClientError

# A cluster in these states is still this run's to use; any other has ended.
ACTIVE_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
FAULT_ENV = "LLM_FAULT"


def fail_first_try(point: str, context: Any) -> None:
    """For the tests: end the first try at ``point``, after the AWS call and before the task
    finished, when ``LLM_FAULT`` (comma-separated) names the point: ``<point>`` raises (a
    try that failed there), ``<point>:kill`` SIGKILLs the task's process (a dead worker)."""
    faults = os.environ.get(FAULT_ENV, "").split(",")
    if context["ti"].try_number != 1:
        return
    if f"{point}:kill" in faults:
        os.kill(os.getpid(), signal.SIGKILL)
    if point in faults:
        raise RuntimeError(f"injected fault at {point}: the worker died here")


class DurableCreateCluster(ResumableJobMixin, EmrCreateJobFlowOperator):
    """``EmrCreateJobFlowOperator`` whose retries attach to the cluster an earlier try made."""

    external_id_key = "emr_cluster_id"  # stored per task instance; never rename once deployed

    def execute(self, context: Any) -> str:
        return self.execute_resumable(context)

    def submit_job(self, context: Any) -> str:
        found = self.cluster_of_this_run(context) if context["ti"].try_number > 1 else None
        if found:
            self.log.info("Attaching to cluster %s, which an earlier try created", found)
            return found
        cluster_id = EmrCreateJobFlowOperator.execute(self, context)
        fail_first_try("create_cluster:created", context)
        return cluster_id

    def cluster_of_this_run(self, context: Any) -> str | None:
        """A live cluster with this run's name and ``run_id`` tag (``emr.tasks``), if any."""
        name = self.job_flow_overrides.get("Name")
        pages = self.hook.conn.get_paginator("list_clusters").paginate(
            ClusterStates=list(ACTIVE_STATES)
        )
        for cluster in (c for page in pages for c in page["Clusters"] if c["Name"] == name):
            tags = self.hook.conn.describe_cluster(ClusterId=cluster["Id"])["Cluster"]["Tags"]
            if {"Key": "run_id", "Value": context["run_id"][:256]} in tags:
                return str(cluster["Id"])
        return None

    def get_job_status(self, external_id: Any, context: Any) -> str:
        try:
            cluster = self.hook.conn.describe_cluster(ClusterId=external_id)["Cluster"]
        except ClientError:
            return "NOT_FOUND"
        return str(cluster["Status"]["State"])

    def is_job_active(self, status: str) -> bool:
        return status in ACTIVE_STATES

    def is_job_succeeded(self, status: str) -> bool:
        return False  # a cluster that ended cannot be attached to: a retry creates a new one

    def poll_until_complete(self, external_id: Any, context: Any) -> str:
        """Nothing to wait for (the steps' watchers wait); the id, which the mixin returns
        as the task's result when a retry attaches."""
        fail_first_try("create_cluster:stored", context)
        return str(external_id)

    def get_job_result(self, external_id: Any, context: Any) -> str:
        return str(external_id)


class DurableAddSteps(ResumableJobMixin, EmrAddStepsOperator):
    """``EmrAddStepsOperator`` whose retries return the steps an earlier try queued."""

    external_id_key = "emr_steps"  # {"cluster": id, "steps": [ids]}; never rename once deployed

    def execute(self, context: Any) -> list[str]:
        return self.execute_resumable(context)

    def submit_job(self, context: Any) -> dict[str, Any]:
        queued = self.steps_on_cluster() if context["ti"].try_number > 1 else None
        if queued:
            self.log.info("Steps %s were queued by an earlier try; not adding them again", queued)
        step_ids = queued or EmrAddStepsOperator.execute(self, context)
        fail_first_try("add_steps:added", context)
        return {"cluster": self.job_flow_id, "steps": list(step_ids)}

    def steps_on_cluster(self) -> list[str] | None:
        """The ids of this task's steps on the cluster, found by name (one ``AddJobFlowSteps``
        call queues all of them or none); None when they are not all there."""
        names = [step["Name"] for step in self.steps]
        pages = self.hook.conn.get_paginator("list_steps").paginate(ClusterId=self.job_flow_id)
        seen = {s["Name"]: s["Id"] for page in pages for s in page["Steps"]}
        return [seen[n] for n in names] if all(n in seen for n in names) else None

    def get_job_status(self, external_id: Any, context: Any) -> str:
        if external_id["cluster"] != self.job_flow_id:
            return "ON_ANOTHER_CLUSTER"  # the cluster was created again: queue them there
        pages = self.hook.conn.get_paginator("list_steps").paginate(ClusterId=self.job_flow_id)
        on_cluster = {s["Id"] for page in pages for s in page["Steps"]}
        return "QUEUED" if set(external_id["steps"]) <= on_cluster else "MISSING"

    def is_job_active(self, status: str) -> bool:
        return False  # queueing is immediate: the steps are there (succeeded) or not

    def is_job_succeeded(self, status: str) -> bool:
        return status == "QUEUED"

    def poll_until_complete(self, external_id: Any, context: Any) -> list[str]:
        fail_first_try("add_steps:stored", context)
        return list(external_id["steps"])

    def get_job_result(self, external_id: Any, context: Any) -> list[str]:
        return list(external_id["steps"])
