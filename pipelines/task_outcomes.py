"""What a run did after a person answered its task, for the task's card: it went on and ended
(succeeded, with its output's own message; failed, rejected, needs attention, cancelled, with the
error), or it is waiting for an approval or another task.

Both ends are here. The owing end, `owe_task_cards`, writes the answered tasks' outbox rows in
the transaction that moves the run to its next stop (an approval requested, another task
opened, the run's end), so a restart in between still ends with the card showing it. The
showing end, `with_after`, reads the run when the outbox delivers the card, so the card says
what is true then (a card delivered after the run moved on shows where it is now).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from pipelines.runtime import Runtime
from pipelines.views import TaskAfter, TaskView
from storage import approvals as task_rows
from storage import queries
from storage.calls import CallRecord
from storage.models import ApprovalStatus, CallStatus, RunStatus, TaskStatus
from storage.runs import fetch_run

# The task card is re-rendered whole from the task's state at delivery: the same event as the
# answer itself.
CARD_EVENT = "task_answered"
MESSAGE_LIMIT = 500


def person_answered(recorded: Iterable[CallRecord]) -> bool:
    """Did a person answer one of this run's steps (just now, or earlier)? Read from the run's
    record, so a run nobody answered costs no query at its next stop."""
    return any(
        call.status == CallStatus.AWAITING_HUMAN
        or (isinstance(call.meta, dict) and call.meta.get("answered_by") == "human")
        for call in recorded
    )


def owe_task_cards(rt: Runtime, conn: Connection, run_id: str, now: datetime) -> list[str]:
    """In the transaction that moves the run on: owe each answered task of the run a card
    update. Returns the task ids (to nudge the sender with after the commit)."""
    answered = task_rows.answered_task_ids(conn, run_id)
    for task_id in answered:
        rt.enqueue(conn, CARD_EVENT, task_id, now)
    return answered


def nudge_task_cards(rt: Runtime, task_ids: Iterable[str]) -> None:
    """After the commit: let the outbox sender deliver those cards now (a local notifier, the
    terminal, prints the run's progress itself)."""
    if rt.sender is not None:
        for task_id in task_ids:
            rt.sender.nudge(task_id)


def with_after(rt: Runtime, task: TaskView) -> TaskView:
    """The answered task's view carrying what its run did next, when the run has moved on."""
    if task.status != TaskStatus.ANSWERED:
        return task
    after = after_answer(rt, task)
    return replace(task, after=after) if after is not None else task


def after_answer(rt: Runtime, task: TaskView) -> TaskAfter | None:
    """Where the run stands after `task`'s answer; None while it has not moved on yet (queued
    or running: the card is updated again at its next stop)."""
    with rt.db.transaction() as conn:
        run = fetch_run(conn, task.run_id)
        if run is None:
            return None
        status = RunStatus(run.status)
        if status == RunStatus.WAITING:
            for approval in queries.approvals_of_run(conn, run.id):
                if approval.status == ApprovalStatus.PENDING:
                    return TaskAfter(status="waiting", approval_id=approval.id, tool=approval.tool)
            for other in queries.tasks_of_run(conn, run.id):
                if other.status == TaskStatus.OPEN and other.id != task.id:
                    return TaskAfter(status="waiting", task_id=other.id, task_name=other.name)
            return TaskAfter(status="waiting")
    if status in (RunStatus.QUEUED, RunStatus.RUNNING):
        return None
    return TaskAfter(
        status=str(status),
        message=_message(run.output) if status == RunStatus.SUCCEEDED else None,
        error=run.error,
    )


def _message(output: Any) -> str | None:
    """The pipeline's own line about what it did: an output's `message` field, when it has one."""
    if isinstance(output, dict):
        message = output.get("message")
        if isinstance(message, str) and message.strip():
            return message[:MESSAGE_LIMIT]
    return None
