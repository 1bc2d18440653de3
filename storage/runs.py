"""Run rows and their state machine: inserts, compare-and-set transitions, claims, timers.

Every transition is a conditional UPDATE (`WHERE status IN (...)`, and for a running run
`AND claimed_by = worker`) plus a `run_events` row in the same transaction; a False return
means somebody else moved the run first.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, func, select, update

from storage.fastsql import fast_insert, fast_select, fast_update
from storage.models import Run, RunEvent, RunStatus
from storage.rows import ClaimedRun, OrphanCandidate, RunRow

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


def requeue_waiting(conn: Connection, run_id: str, *, now: datetime, detail: str) -> bool:
    """Queue a waiting run again, its timer cleared, for a worker to carry on (a decision, an
    answer, a timer or a resume woke it). Returns whether this call made the move."""
    return transition(
        conn,
        run_id,
        from_statuses=[RunStatus.WAITING],
        to_status=RunStatus.QUEUED,
        now=now,
        detail=detail,
        wake_at=None,
    )


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


def claim_fetched_run(
    conn: Connection, run_id: str, *, worker: str, now: datetime, lease: timedelta
) -> RunRow | None:
    """`claim_run`, returning the row as the claim left it (None: not claimed); the row is read
    once, before the claim, not again after it."""
    run = fetch_run(conn, run_id)
    if run is None:
        return None
    started_at = run.started_at if run.started_at is not None else now
    if not _claim(conn, run_id, worker=worker, now=now, lease=lease, started_at=started_at):
        return None
    return run._replace(
        status=RunStatus.RUNNING,
        claimed_by=worker,
        lease_until=now + lease,
        started_at=started_at,
        updated_at=now,
    )


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


def claim_queued_runs(
    conn: Connection, *, worker: str, now: datetime, lease: timedelta, limit: int
) -> list[ClaimedRun]:
    """Claim up to `limit` of the oldest queued runs, oldest first. On PostgreSQL it is one
    statement whose pick is `FOR UPDATE SKIP LOCKED`, so workers claiming at once take disjoint
    runs without waiting for each other; SQLite's `BEGIN IMMEDIATE` serializes the claim."""
    picked = (
        select(runs_table.c.id, runs_table.c.started_at)
        .where(runs_table.c.status == RunStatus.QUEUED)
        .order_by(runs_table.c.created_at)
        .limit(limit)
    )
    claimed = {
        "status": RunStatus.RUNNING,
        "claimed_by": worker,
        "lease_until": now + lease,
        "updated_at": now,
    }
    rows: list[Any]
    if conn.dialect.name == "postgresql":
        pick = picked.with_for_update(skip_locked=True).cte("picked")
        statement = (
            update(runs_table)
            .where(runs_table.c.id == pick.c.id, runs_table.c.status == RunStatus.QUEUED)
            .values(**claimed, started_at=func.coalesce(pick.c.started_at, now))
            .returning(runs_table.c.id, runs_table.c.created_at, pick.c.started_at)
        )
        rows = sorted(conn.execute(statement).all(), key=lambda row: (row.created_at, row.id))
    else:
        # SQLite's RETURNING cannot name the picked rows: read them, then claim them all (no
        # other writer can come between, under BEGIN IMMEDIATE).
        rows = list(conn.execute(picked.add_columns(runs_table.c.created_at)).all())
        if rows:
            conn.execute(
                update(runs_table)
                .where(runs_table.c.id.in_([row.id for row in rows]))
                .values(**claimed, started_at=func.coalesce(runs_table.c.started_at, now))
            )
    if rows:
        fast_insert(
            conn,
            run_events_table,
            [
                {
                    "run_id": row.id,
                    "from_status": RunStatus.QUEUED,
                    "to_status": RunStatus.RUNNING,
                    "at": now,
                    "detail": worker,
                }
                for row in rows
            ],
        )
    return [ClaimedRun(str(row.id), row.started_at) for row in rows]


def release_claims(
    conn: Connection, claims: Iterable[ClaimedRun], *, worker: str, now: datetime
) -> list[str]:
    """Put runs this worker claimed but never started back in the queue, as they were before
    the claim (the oldest-first order is kept: it is by creation time). Returns those released;
    a run no longer ours (taken over after its lease ran out) is left alone."""
    released = []
    for claim in claims:
        restored = {"started_at": claim.started_before} if claim.restores_started else {}
        if transition(
            conn,
            claim.id,
            from_statuses=[RunStatus.RUNNING],
            to_status=RunStatus.QUEUED,
            now=now,
            claimed_by=worker,
            detail=f"released unstarted by {worker}",
            **restored,
        ):
            released.append(claim.id)
    return released


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
