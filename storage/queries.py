"""Read queries for listings and detail views (the CLI, the bot's commands). A run's own rows
(its calls, approvals, tasks, events) are read on the driver (`storage.fastsql`): every
`Gatehouse.run()` and every resume reads them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select

from storage.approvals import approvals_table, tasks_table
from storage.audit import audit_table
from storage.calls import calls_table
from storage.fastsql import fast_select
from storage.models import ApprovalStatus, TaskStatus
from storage.rows import (
    ApprovalRow,
    AuditEntryRow,
    CallRow,
    HumanTaskRow,
    OpenTaskRow,
    PendingApprovalRow,
    RunEventRow,
    RunRow,
)
from storage.run_list import newest_filtered
from storage.runs import run_events_table, runs_table


def list_runs(
    conn: Connection,
    *,
    pipeline: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 20,
) -> list[RunRow]:
    query = newest_filtered(
        select(runs_table),
        runs_table.c,
        pipeline=pipeline,
        status=status,
        since=since,
        limit=limit,
    )
    return [RunRow(*row) for row in conn.execute(query)]


def all_calls(conn: Connection, run_id: str) -> list[CallRow]:
    """Every call of a run, reversals included, in the order they started."""
    order = "seq IS NULL, seq, started_at"
    return fast_select(conn, calls_table, {"run_id": run_id}, CallRow, order_by=order)


def approvals_of_run(conn: Connection, run_id: str) -> list[ApprovalRow]:
    where = {"run_id": run_id}
    return fast_select(conn, approvals_table, where, ApprovalRow, order_by="requested_at")


def tasks_of_run(conn: Connection, run_id: str) -> list[HumanTaskRow]:
    return fast_select(conn, tasks_table, {"run_id": run_id}, HumanTaskRow, order_by="opened_at")


def events_of_run(conn: Connection, run_id: str) -> list[RunEventRow]:
    return fast_select(conn, run_events_table, {"run_id": run_id}, RunEventRow, order_by="id")


def audit_of_run(conn: Connection, run_id: str) -> list[AuditEntryRow]:
    query = select(audit_table).where(audit_table.c.run_id == run_id).order_by(audit_table.c.id)
    return [AuditEntryRow(*row) for row in conn.execute(query)]


def pending_approvals(conn: Connection, limit: int = 200) -> list[PendingApprovalRow]:
    query = (
        select(approvals_table, runs_table.c.pipeline)
        .join(runs_table, runs_table.c.id == approvals_table.c.run_id)
        .where(approvals_table.c.status == ApprovalStatus.PENDING)
        .order_by(approvals_table.c.requested_at)
        .limit(limit)
    )
    return [PendingApprovalRow(*row) for row in conn.execute(query)]


def open_tasks(conn: Connection, limit: int = 200) -> list[OpenTaskRow]:
    query = (
        select(tasks_table, runs_table.c.pipeline)
        .join(runs_table, runs_table.c.id == tasks_table.c.run_id)
        .where(tasks_table.c.status == TaskStatus.OPEN)
        .order_by(tasks_table.c.opened_at)
        .limit(limit)
    )
    return [OpenTaskRow(*row) for row in conn.execute(query)]
