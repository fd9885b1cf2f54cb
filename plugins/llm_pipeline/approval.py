"""The approval task of ``require_approval`` (the logic it applies is ``llm_pipeline.review``).

Imported by the DAG file, so it imports no job code at module level: the scheduler parses
the DAG often and ``sparklm`` is loaded only when a task runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException


def responder(result: dict[str, Any]) -> str:
    """The name of who answered, from the HITL result (``responded_by_user``)."""
    user = result.get("responded_by_user") or {}
    return str(user.get("name") or user.get("id") or "unknown")


def approver(result: dict[str, Any]) -> str:
    """Who approved, from the HITL result of ``PromotionApproval``.

    ``promote`` runs only after Approve (Reject skips it), unless someone clears it by hand
    in the UI: any answer but Approve then fails it for good instead of promoting.
    """
    chosen = result.get("chosen_options")
    if chosen != [ApprovalOperator.APPROVE]:
        raise AirflowFailException(
            f"ERROR: the approval's answer was {chosen}, not {[ApprovalOperator.APPROVE]}: "
            "nothing is promoted. To ask again, rerun the publish task with require_approval"
        )
    return responder(result)


@contextmanager
def final() -> Iterator[None]:
    """Fail the task without a retry on a registry error (a stale approval, a missing
    record): asking again or rerunning cannot change it. Storage faults still retry."""
    from sparklm.registry.versions import RegistryError

    try:
        yield
    except RegistryError as exc:
        raise AirflowFailException(f"ERROR: {exc}") from None


class PromotionApproval(ApprovalOperator):
    """Asks whether to promote the version ``review_request`` describes.

    Approve lets the downstream ``promote`` task run; Reject skips it (ApprovalOperator's
    behaviour) and, here, records the rejection in the version's ``promotion.json`` first.

    An answer given within a second or two of the request (an automated approver, or a person
    already on the "Required actions" page) can fail the try on Airflow 3.3.2: when the
    scheduler reads the parked worker's exit only after the answer queued the resumed try, it
    takes that exit for the resumed try's end ("state mismatch" in the audit log). The DAG
    gives this task one retry, which asks again; answer once the request has been up a few
    seconds.
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
            with final():
                reject(request["registry"], request["model_name"], request["version"],
                       responder(event))  # fmt: skip
        return super().execute_complete(context=context, event=event)
