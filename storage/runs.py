"""Run rows and their state machine: inserts, compare-and-set transitions, claims, timers.

Every transition is a conditional UPDATE (`WHERE status IN (...)`, and for a running run
`AND claimed_by = worker`) plus a `run_events` row in the same transaction; a False return
means somebody else moved the run first.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, Table, insert, select, update

from storage.models import Run, RunEvent, RunStatus

runs_table: Table = Run.__table__  # type: ignore[assignment]
run_events_table: Table = RunEvent.__table__  # type: ignore[assignment]
_INSERT_RUN = insert(runs_table)
_INSERT_EVENT = insert(run_events_table)


def insert_run(
    conn: Connection,
    *,
    run_id: str,
    pipeline: str,
    status: RunStatus,
    input: Any,
    now: datetime,
    trigger_user: str | None = None,
    trigger: str = "api",
    error: str | None = None,
    claimed_by: str | None = None,
    lease_until: datetime | None = None,
) -> None:
    """Insert a run; a run created already running (claimed by its creator) records both steps."""
    finished = status not in (RunStatus.QUEUED, RunStatus.RUNNING)
    conn.execute(
        _INSERT_RUN,
        {
            "id": run_id,
            "pipeline": pipeline,
            "status": status,
            "input": input,
            "output": None,
            "error": error,
            "trigger_user": trigger_user,
            "trigger": trigger,
            "created_at": now,
            "started_at": now if status == RunStatus.RUNNING else None,
            "finished_at": now if finished else None,
            "updated_at": now,
            "wake_at": None,
            "claimed_by": claimed_by,
            "lease_until": lease_until,
        },
    )
    events = [{"run_id": run_id, "from_status": None, "to_status": "queued", "at": now}]
    if status != RunStatus.QUEUED:
        events.append({"run_id": run_id, "from_status": "queued", "to_status": status, "at": now})
    conn.execute(_INSERT_EVENT, [{**e, "detail": None} for e in events])


def transition(
    conn: Connection,
    run_id: str,
    *,
    from_statuses: Iterable[RunStatus],
    to_status: RunStatus,
    now: datetime,
    claimed_by: str | None = None,
    detail: str | None = None,
    **fields: Any,
) -> bool:
    """Move a run to `to_status` if it is in one of `from_statuses` (and, when given, still
    claimed by `claimed_by`). Returns whether this call made the move."""
    sources = list(from_statuses)
    stmt = update(runs_table).where(runs_table.c.id == run_id)
    stmt = stmt.where(
        runs_table.c.status.in_(sources) if len(sources) > 1 else runs_table.c.status == sources[0]
    )
    if claimed_by is not None:
        stmt = stmt.where(runs_table.c.claimed_by == claimed_by)
    values: dict[str, Any] = {"status": to_status, "updated_at": now, **fields}
    if to_status != RunStatus.RUNNING:
        values.setdefault("claimed_by", None)
        values.setdefault("lease_until", None)
    result = conn.execute(stmt.values(values))
    if result.rowcount != 1:
        return False
    from_status = sources[0] if len(sources) == 1 else None
    conn.execute(
        _INSERT_EVENT,
        {
            "run_id": run_id,
            "from_status": from_status,
            "to_status": to_status,
            "at": now,
            "detail": detail,
        },
    )
    return True


def fetch_run(conn: Connection, run_id: str) -> Row[Any] | None:
    return conn.execute(select(runs_table).where(runs_table.c.id == run_id)).first()


def claim_run(
    conn: Connection, run_id: str, *, worker: str, now: datetime, lease: timedelta
) -> bool:
    """Claim one specific queued run (the CLI carrying on after a decision)."""
    run = fetch_run(conn, run_id)
    if run is None:
        return False
    started_at = run.started_at if run.started_at is not None else now
    return _claim(conn, run_id, worker=worker, now=now, lease=lease, started_at=started_at)


def _claim(
    conn: Connection,
    run_id: str,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    started_at: datetime,
    from_status: RunStatus = RunStatus.QUEUED,
) -> bool:
    stmt = (
        update(runs_table)
        .where(runs_table.c.id == run_id, runs_table.c.status == from_status)
        .values(
            status=RunStatus.RUNNING,
            claimed_by=worker,
            lease_until=now + lease,
            started_at=started_at,
            updated_at=now,
        )
    )
    if conn.execute(stmt).rowcount != 1:
        return False
    conn.execute(
        _INSERT_EVENT,
        {
            "run_id": run_id,
            "from_status": from_status,
            "to_status": RunStatus.RUNNING,
            "at": now,
            "detail": worker,
        },
    )
    return True


def claim_next_run(conn: Connection, *, worker: str, now: datetime, lease: timedelta) -> str | None:
    """Claim the oldest queued run. `FOR UPDATE SKIP LOCKED` on PostgreSQL lets several workers
    claim in parallel; SQLite's `BEGIN IMMEDIATE` already serializes the claim."""
    query = (
        select(runs_table.c.id, runs_table.c.started_at)
        .where(runs_table.c.status == RunStatus.QUEUED)
        .order_by(runs_table.c.created_at)
        .limit(1)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = conn.execute(query).first()
    if row is None:
        return None
    started_at = row.started_at if row.started_at is not None else now
    if _claim(conn, row.id, worker=worker, now=now, lease=lease, started_at=started_at):
        return str(row.id)
    return None


def reclaim_run(
    conn: Connection,
    run_id: str,
    *,
    previous_worker: str | None,
    worker: str,
    now: datetime,
    lease: timedelta,
) -> bool:
    """Take over a running run whose worker is gone (lease expired or process dead)."""
    stmt = update(runs_table).where(
        runs_table.c.id == run_id, runs_table.c.status == RunStatus.RUNNING
    )
    stmt = stmt.where(
        runs_table.c.claimed_by == previous_worker
        if previous_worker is not None
        else runs_table.c.claimed_by.is_(None)
    )
    result = conn.execute(stmt.values(claimed_by=worker, lease_until=now + lease, updated_at=now))
    if result.rowcount != 1:
        return False
    conn.execute(
        _INSERT_EVENT,
        {
            "run_id": run_id,
            "from_status": RunStatus.RUNNING,
            "to_status": RunStatus.RUNNING,
            "at": now,
            "detail": f"reclaimed from {previous_worker} by {worker}",
        },
    )
    return True


def orphaned_runs(conn: Connection) -> list[Row[Any, Any, Any]]:
    """Running runs with their owner and lease, for the reclaim check."""
    query = select(runs_table.c.id, runs_table.c.claimed_by, runs_table.c.lease_until).where(
        runs_table.c.status == RunStatus.RUNNING
    )
    return list(conn.execute(query).all())


def renew_lease(conn: Connection, run_id: str, *, worker: str, until: datetime) -> bool:
    stmt = (
        update(runs_table)
        .where(
            runs_table.c.id == run_id,
            runs_table.c.status == RunStatus.RUNNING,
            runs_table.c.claimed_by == worker,
        )
        .values(lease_until=until)
    )
    return conn.execute(stmt).rowcount == 1


def due_timers(conn: Connection, now: datetime, limit: int = 100) -> list[str]:
    """Waiting runs whose timer (rate-limit window) has passed."""
    query = (
        select(runs_table.c.id)
        .where(runs_table.c.status == RunStatus.WAITING, runs_table.c.wake_at <= now)
        .order_by(runs_table.c.wake_at)
        .limit(limit)
    )
    return [str(r) for r in conn.execute(query).scalars()]
