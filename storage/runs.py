"""Run rows and their state machine: inserts, compare-and-set transitions, claims, timers.

Every transition is a conditional UPDATE (`WHERE status IN (...)`, and for a running run
`AND claimed_by = worker`) plus a `run_events` row in the same transaction; a False return
means somebody else moved the run first.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, select

from storage.fastsql import fast_insert, fast_select, fast_update
from storage.models import Run, RunEvent, RunStatus
from storage.rows import OrphanCandidate, RunRow

runs_table: Table = Run.__table__  # type: ignore[assignment]
run_events_table: Table = RunEvent.__table__  # type: ignore[assignment]


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
    detail: str | None = None,
) -> None:
    """Insert a run; a run created already running (claimed by its creator) records both steps.
    `detail`: the `queued` event's (a traced caller's traceparent)."""
    finished = status not in (RunStatus.QUEUED, RunStatus.RUNNING)
    fast_insert(
        conn,
        runs_table,
        {
            "id": run_id,
            "pipeline": pipeline,
            "status": status,
            "input": input,
            "error": error,
            "trigger_user": trigger_user,
            "trigger": trigger,
            "created_at": now,
            "started_at": now if status == RunStatus.RUNNING else None,
            "finished_at": now if finished else None,
            "updated_at": now,
            "claimed_by": claimed_by,
            "lease_until": lease_until,
        },
    )
    events: list[dict[str, Any]] = [
        {"run_id": run_id, "to_status": RunStatus.QUEUED, "at": now, "detail": detail}
    ]
    if status != RunStatus.QUEUED:
        events.append(
            {
                "run_id": run_id,
                "from_status": RunStatus.QUEUED,
                "to_status": status,
                "at": now,
                "detail": None,
            }
        )
    fast_insert(conn, run_events_table, events)


def _record_event(
    conn: Connection,
    run_id: str,
    from_status: str | None,
    to_status: str,
    now: datetime,
    detail: str | None,
) -> None:
    fast_insert(
        conn,
        run_events_table,
        {
            "run_id": run_id,
            "from_status": from_status,
            "to_status": to_status,
            "at": now,
            "detail": detail,
        },
    )


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
    sources = tuple(from_statuses)
    where: dict[str, Any] = {"id": run_id, "status": sources if len(sources) > 1 else sources[0]}
    if claimed_by is not None:
        where["claimed_by"] = claimed_by
    values: dict[str, Any] = {"status": to_status, "updated_at": now, **fields}
    if to_status != RunStatus.RUNNING:
        values.setdefault("claimed_by", None)
        values.setdefault("lease_until", None)
    if fast_update(conn, runs_table, values, where) != 1:
        return False
    _record_event(conn, run_id, sources[0] if len(sources) == 1 else None, to_status, now, detail)
    return True


def fetch_run(conn: Connection, run_id: str) -> RunRow | None:
    """The run's row, or None."""
    rows = fast_select(conn, runs_table, {"id": run_id}, RunRow)
    return rows[0] if rows else None


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
) -> bool:
    values = {
        "status": RunStatus.RUNNING,
        "claimed_by": worker,
        "lease_until": now + lease,
        "started_at": started_at,
        "updated_at": now,
    }
    if fast_update(conn, runs_table, values, {"id": run_id, "status": RunStatus.QUEUED}) != 1:
        return False
    _record_event(conn, run_id, RunStatus.QUEUED, RunStatus.RUNNING, now, worker)
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
    values = {"claimed_by": worker, "lease_until": now + lease, "updated_at": now}
    where = {"id": run_id, "status": RunStatus.RUNNING, "claimed_by": previous_worker}
    if fast_update(conn, runs_table, values, where) != 1:
        return False
    detail = f"reclaimed from {previous_worker} by {worker}"
    _record_event(conn, run_id, RunStatus.RUNNING, RunStatus.RUNNING, now, detail)
    return True


def orphaned_runs(conn: Connection) -> list[OrphanCandidate]:
    """Running runs with their owner and lease, for the reclaim check."""
    query = select(runs_table.c.id, runs_table.c.claimed_by, runs_table.c.lease_until).where(
        runs_table.c.status == RunStatus.RUNNING
    )
    return [OrphanCandidate(*row) for row in conn.execute(query)]


def renew_lease(conn: Connection, run_id: str, *, worker: str, until: datetime) -> bool:
    where = {"id": run_id, "status": RunStatus.RUNNING, "claimed_by": worker}
    return fast_update(conn, runs_table, {"lease_until": until}, where) == 1


def due_timers(conn: Connection, now: datetime, limit: int = 100) -> list[str]:
    """Waiting runs whose timer (rate-limit window) has passed."""
    query = (
        select(runs_table.c.id)
        .where(runs_table.c.status == RunStatus.WAITING, runs_table.c.wake_at <= now)
        .order_by(runs_table.c.wake_at)
        .limit(limit)
    )
    return [str(r) for r in conn.execute(query).scalars()]
