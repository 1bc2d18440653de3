"""The rows an operator's cancel, retry and resolve change: a run's open approvals and human
tasks (closed by a cancel, compare-and-set like a decision), a call taken out of the run's
record (a retry re-runs it), and how many attempts a run has had (its `run.retried` entries).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, func, select

from storage.approvals import approvals_table, tasks_table
from storage.calls import calls_table
from storage.fastsql import fast_select, fast_update
from storage.models import ApprovalStatus, AuditEntry, RunStatus, TaskStatus
from storage.rows import ApprovalRow, HumanTaskRow
from storage.runs import run_events_table

audit_table: Table = AuditEntry.__table__  # type: ignore[assignment]

RETRIED = "run.retried"


def pending_approvals_of_run(conn: Connection, run_id: str) -> list[ApprovalRow]:
    where = {"run_id": run_id, "status": ApprovalStatus.PENDING}
    return fast_select(conn, approvals_table, where, ApprovalRow)


def open_tasks_of_run(conn: Connection, run_id: str) -> list[HumanTaskRow]:
    where = {"run_id": run_id, "status": TaskStatus.OPEN}
    return fast_select(conn, tasks_table, where, HumanTaskRow)


def cancel_approval(
    conn: Connection, approval_id: str, *, by: str, at: datetime, reason: str
) -> bool:
    """Pending → cancelled, with who and why; False if it was decided first."""
    values = {"status": ApprovalStatus.CANCELLED, "decided_by": by, "decided_at": at}
    values["reason"] = reason
    where = {"id": approval_id, "status": ApprovalStatus.PENDING}
    return fast_update(conn, approvals_table, values, where) == 1


def cancel_task(conn: Connection, task_id: str, *, by: str, at: datetime, reason: str) -> bool:
    """Open → cancelled: `answered_by` is who cancelled it and `answer` `{"cancelled": reason}`
    (a cancelled task has no answer), so its card can say who and why."""
    values = {
        "status": TaskStatus.CANCELLED,
        "answered_by": by,
        "answered_at": at,
        "answer": {"cancelled": reason},
    }
    where = {"id": task_id, "status": TaskStatus.OPEN}
    return fast_update(conn, tasks_table, values, where) == 1


def detach_call(conn: Connection, call_id: str, *, meta: Any) -> None:
    """Take a call out of its run's record (no position, like a reversal): a replay no longer
    finds it, so the run makes that call afresh; the row stays for `gatehouse run` and audit,
    its `meta` saying which attempt replaced it."""
    fast_update(conn, calls_table, {"seq": None, "meta": meta}, {"id": call_id})


def ever_needed_attention(conn: Connection, run_id: str) -> bool:
    """Did the run ever end `needs_attention` (so it has a notice to keep up to date)?"""
    query = (
        select(run_events_table.c.id)
        .where(
            run_events_table.c.run_id == run_id,
            run_events_table.c.to_status == RunStatus.NEEDS_ATTENTION,
        )
        .limit(1)
    )
    return conn.execute(query).first() is not None


def attempts_of_run(conn: Connection, run_id: str) -> int:
    """1 for a run never retried, then one more per `run.retried` audit entry."""
    query = (
        select(func.count())
        .select_from(audit_table)
        .where(audit_table.c.run_id == run_id, audit_table.c.event == RETRIED)
    )
    return 1 + int(conn.execute(query).scalar_one())
