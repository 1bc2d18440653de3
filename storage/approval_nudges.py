"""Approval reminders and escalations: when each is due, and the compare-and-sets that take one.

A nudge is taken by an `UPDATE … WHERE reminded_at IS NULL` (or `escalated_at`) that also
requires its approval to be pending and not past its deadline, in one statement: two sweepers
(replicas) take it once, and an approval that expired, or whose deadline passed, is never
nudged (expiry wins).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Table, and_, exists, or_, select, update

from storage.fastsql import fast_insert
from storage.models import Approval, ApprovalNudge, ApprovalStatus

nudges_table: Table = ApprovalNudge.__table__  # type: ignore[assignment]
approvals_table: Table = Approval.__table__  # type: ignore[assignment]


class NudgeRow(NamedTuple):
    """An `approval_nudges` row."""

    approval_id: str
    remind_at: datetime | None
    reminded_at: datetime | None
    escalate_at: datetime | None
    escalated_at: datetime | None
    escalate_to: Any


def insert_nudge(conn: Connection, **values: Any) -> None:
    fast_insert(conn, nudges_table, values)


def _still_open(now: datetime) -> Any:
    """The nudge's approval is pending and its deadline (if any) is still ahead."""
    return exists().where(
        approvals_table.c.id == nudges_table.c.approval_id,
        approvals_table.c.status == ApprovalStatus.PENDING.value,
        or_(approvals_table.c.expires_at.is_(None), approvals_table.c.expires_at > now),
    )


def due_nudges(conn: Connection, now: datetime, limit: int = 100) -> list[NudgeRow]:
    """The nudges with a reminder or an escalation due now, on approvals still open (one query:
    the worker asks on every tick)."""
    query = (
        select(nudges_table)
        .where(
            or_(
                and_(nudges_table.c.reminded_at.is_(None), nudges_table.c.remind_at <= now),
                and_(nudges_table.c.escalated_at.is_(None), nudges_table.c.escalate_at <= now),
            ),
            _still_open(now),
        )
        .order_by(nudges_table.c.approval_id)
        .limit(limit)
    )
    return [NudgeRow(*row) for row in conn.execute(query)]


def take_reminder(conn: Connection, approval_id: str, now: datetime) -> bool:
    """Compare-and-set: mark the reminder sent; False if another sweeper took it, or the
    approval was decided or expired meanwhile."""
    return _take(conn, approval_id, now, "reminded_at", "remind_at")


def take_escalation(conn: Connection, approval_id: str, now: datetime) -> bool:
    """Compare-and-set, like `take_reminder`, for the escalation."""
    return _take(conn, approval_id, now, "escalated_at", "escalate_at")


def _take(conn: Connection, approval_id: str, now: datetime, done: str, due: str) -> bool:
    """Set `done` to now where it is unset, `due` has come and the approval is still open."""
    n = nudges_table.c
    statement = (
        update(nudges_table)
        .where(n.approval_id == approval_id, n[done].is_(None), n[due] <= now, _still_open(now))
        .values({done: now})
    )
    return conn.execute(statement).rowcount == 1


def set_approvers(conn: Connection, approval_id: str, approvers: list[str]) -> bool:
    """The escalated approver list, on a still-pending approval (in the escalation's
    transaction, after `take_escalation` won)."""
    statement = (
        update(approvals_table)
        .where(
            and_(
                approvals_table.c.id == approval_id,
                approvals_table.c.status == ApprovalStatus.PENDING.value,
            )
        )
        .values(approvers=approvers)
    )
    return conn.execute(statement).rowcount == 1


def nudges_of(conn: Connection, approval_ids: Sequence[str]) -> dict[str, NudgeRow]:
    if not approval_ids:
        return {}
    query = select(nudges_table).where(nudges_table.c.approval_id.in_(list(approval_ids)))
    return {str(row[0]): NudgeRow(*row) for row in conn.execute(query)}
