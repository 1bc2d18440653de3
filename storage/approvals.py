"""Approvals and human tasks: inserts and the compare-and-set decisions that end them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, select

from storage.fastsql import fast_execute, fast_insert, fast_select, fast_update
from storage.models import Approval, ApprovalStatus, HumanTask, TaskStatus
from storage.rows import ApprovalRow, HumanTaskRow

approvals_table: Table = Approval.__table__  # type: ignore[assignment]
tasks_table: Table = HumanTask.__table__  # type: ignore[assignment]


# On the driver (storage.fastsql): every decision runs it.
_DECIDE_BEFORE_DEADLINE = (
    "UPDATE approvals SET status = {mark}, decided_by = {mark}, decided_at = {mark}, "
    f"reason = {{mark}} WHERE id = {{mark}} AND status = '{ApprovalStatus.PENDING.value}' "
    "AND (expires_at IS NULL OR expires_at > {mark})"
)


def insert_approval(conn: Connection, **values: Any) -> None:
    fast_insert(conn, approvals_table, values)


def fetch_approval(conn: Connection, approval_id: str) -> ApprovalRow | None:
    rows = fast_select(conn, approvals_table, {"id": approval_id}, ApprovalRow)
    return rows[0] if rows else None


def approval_for_call(conn: Connection, call_id: str) -> ApprovalRow | None:
    rows = fast_select(conn, approvals_table, {"call_id": call_id}, ApprovalRow)
    return rows[0] if rows else None


def decide_approval(
    conn: Connection,
    approval_id: str,
    *,
    status: ApprovalStatus,
    by: str | None,
    at: datetime,
    reason: str | None,
) -> bool:
    """Compare-and-set: only a pending approval can be decided, and a person's decision only
    before the deadline; False if it was decided already (or its deadline passed)."""
    values = {"status": status, "decided_by": by, "decided_at": at, "reason": reason}
    if status == ApprovalStatus.EXPIRED:
        where = {"id": approval_id, "status": ApprovalStatus.PENDING}
        return fast_update(conn, approvals_table, values, where) == 1
    binds = [
        ("status", status),
        ("decided_by", by),
        ("decided_at", at),
        ("reason", reason),
        ("id", approval_id),
        ("expires_at", at),
    ]
    return fast_execute(conn, _DECIDE_BEFORE_DEADLINE, approvals_table, binds) == 1


def record_edit(conn: Connection, approval_id: str, *, args: Any, edited: Any) -> None:
    """In the deciding transaction, after the decision won: the edited arguments become the
    approval's, the original ones are kept in `edited`."""
    fast_update(conn, approvals_table, {"args": args, "edited": edited}, {"id": approval_id})


def due_expiries(conn: Connection, now: datetime, limit: int = 100) -> list[str]:
    query = (
        select(approvals_table.c.id)
        .where(
            approvals_table.c.status == ApprovalStatus.PENDING,
            approvals_table.c.expires_at <= now,
        )
        .order_by(approvals_table.c.expires_at)
        .limit(limit)
    )
    return [str(r) for r in conn.execute(query).scalars()]


def insert_task(conn: Connection, **values: Any) -> None:
    fast_insert(conn, tasks_table, values)


def fetch_task(conn: Connection, task_id: str) -> HumanTaskRow | None:
    rows = fast_select(conn, tasks_table, {"id": task_id}, HumanTaskRow)
    return rows[0] if rows else None


def task_for_call(conn: Connection, call_id: str) -> HumanTaskRow | None:
    rows = fast_select(conn, tasks_table, {"call_id": call_id}, HumanTaskRow)
    return rows[0] if rows else None


def answered_task_ids(conn: Connection, run_id: str) -> list[str]:
    """The run's answered tasks (usable inside a `driver_transaction`)."""
    rows = fast_select(conn, tasks_table, {"run_id": run_id}, HumanTaskRow)
    return [row.id for row in rows if row.status == TaskStatus.ANSWERED]


def answer_task(conn: Connection, task_id: str, *, answer: Any, by: str, at: datetime) -> bool:
    """Compare-and-set: only an open task can be answered; False if it already was."""
    values = {"status": TaskStatus.ANSWERED, "answer": answer, "answered_by": by, "answered_at": at}
    where = {"id": task_id, "status": TaskStatus.OPEN}
    return fast_update(conn, tasks_table, values, where) == 1
