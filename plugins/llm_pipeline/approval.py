"""The approval task of ``require_approval`` (the logic it applies is ``llm_pipeline.review``).

Imported by the DAG file, so it imports no job code at module level: the scheduler parses
the DAG often and ``sparklm`` is loaded only when a task runs.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator


def responder(result: dict[str, Any]) -> str:
    """The name of who answered, from the HITL result (``responded_by_user``)."""
    user = result.get("responded_by_user") or {}
    return str(user.get("name") or user.get("id") or "unknown")


class PromotionApproval(ApprovalOperator):
    """Asks whether to promote the version ``review_request`` describes.

    Approve lets the downstream ``promote`` task run; Reject skips it (ApprovalOperator's
    behaviour) and, here, records the rejection in the version's ``promotion.json`` first.
    """

    def __init__(self, *, request_task_id: str, **kwargs: Any) -> None:
        pull = f"ti.xcom_pull(task_ids='{request_task_id}')"
        super().__init__(subject=f"{{{{ {pull}['subject'] }}}}", body=f"{{{{ {pull}['body'] }}}}",
                         **kwargs)  # fmt: skip
        self.request_task_id = request_task_id

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        # Recorded before ApprovalOperator handles the answer: on Reject it skips the
        # downstream tasks by raising (Airflow 3's SkipMixin.skip), so nothing after it runs.
        if "error" not in event and event.get("chosen_options") == [self.REJECT]:
            from llm_pipeline.review import reject

            request = context["ti"].xcom_pull(task_ids=self.request_task_id)
            reject(request["registry"], request["model_name"], request["version"],
                   responder(event))  # fmt: skip
        return super().execute_complete(context=context, event=event)
