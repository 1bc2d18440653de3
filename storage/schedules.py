"""Schedule fires and pause switches.

A fire is claimed by inserting its (schedule, fire time) row: the unique key lets exactly one
process create the fire's run, however many run the scheduler. The run is inserted in the same
transaction, so a claimed fire always has its run (or was deliberately skipped).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, Table, select

from storage.claims import insert_unless_taken, upsert
from storage.models import ScheduleFire, ScheduleState
from storage.rows import ScheduleFireRow, ScheduleStateRow

fires_table: Table = ScheduleFire.__table__  # type: ignore[assignment]
states_table: Table = ScheduleState.__table__  # type: ignore[assignment]


def claim_fire(
    conn: Connection,
    *,
    schedule: str,
    fire_time: datetime,
    worker: str,
    now: datetime,
    outcome: str,
    run_id: str | None = None,
    reason: str | None = None,
) -> bool:
    """Record this fire as handled by `worker`; False when another process already did.
    `reason`: why a skipped fire did not run, when it is not the misfire policy."""
    values = {
        "reason": reason,
        "schedule": schedule,
        "fire_time": fire_time,
        "claimed_by": worker,
        "claimed_at": now,
        "run_id": run_id,
        "outcome": outcome,
    }
    return insert_unless_taken(conn, fires_table, values, ("schedule", "fire_time"))


def has_later_fire(conn: Connection, schedule: str, fire_time: datetime) -> bool:
    """Whether a fire after `fire_time` is already recorded (an older one is then stale)."""
    query = (
        select(fires_table.c.id)
        .where(fires_table.c.schedule == schedule, fires_table.c.fire_time > fire_time)
        .limit(1)
    )
    return conn.execute(query).first() is not None


def latest_fire(conn: Connection, schedule: str) -> ScheduleFireRow | None:
    """The schedule's most recent fire row, or None."""
    query = (
        select(fires_table)
        .where(fires_table.c.schedule == schedule)
        .order_by(fires_table.c.fire_time.desc())
        .limit(1)
    )
    row = conn.execute(query).first()
    return None if row is None else ScheduleFireRow(*row)


def list_fires(
    conn: Connection, *, schedule: str | None = None, limit: int = 20
) -> list[ScheduleFireRow]:
    """Fire rows, newest fire time first; one schedule's or every schedule's."""
    query = select(fires_table).order_by(fires_table.c.fire_time.desc(), fires_table.c.id.desc())
    if schedule is not None:
        query = query.where(fires_table.c.schedule == schedule)
    return [ScheduleFireRow(*row) for row in conn.execute(query.limit(limit))]


def is_paused(conn: Connection, schedule: str) -> bool:
    query = select(states_table.c.paused).where(states_table.c.schedule == schedule)
    return bool(conn.execute(query).scalar())


def schedule_states(conn: Connection, schedules: Iterable[str]) -> dict[str, ScheduleStateRow]:
    """The pause rows of these schedules by name (a schedule without a row is running)."""
    names = list(schedules)
    if not names:
        return {}
    query = select(states_table).where(states_table.c.schedule.in_(names))
    states = (ScheduleStateRow(*row) for row in conn.execute(query))
    return {state.schedule: state for state in states}


def set_paused(
    conn: Connection, schedule: str, *, paused: bool, user: str | None, now: datetime
) -> None:
    values = {"schedule": schedule, "paused": paused, "changed_by": user, "changed_at": now}
    upsert(conn, states_table, values, ("schedule",))
