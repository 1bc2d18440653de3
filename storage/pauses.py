"""Pipeline pauses: the circuit breaker's switch, one row per pipeline that was ever paused.

Pausing and resuming are compare-and-set updates, so two operators (or an operator and an
alert) switching at once change it once. A run that is about to make a call reads the switch
with `is_paused` in the transaction that would suspend it; on PostgreSQL that read takes a
share lock on the row, so a resume waits for that transaction and then sees the run waiting.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Table, select, update

from storage.claims import insert_unless_taken
from storage.fastsql import fast_scalar
from storage.models import PipelinePause, Run, RunEvent, RunStatus
from storage.rows import PipelinePauseRow

pauses_table: Table = PipelinePause.__table__  # type: ignore[assignment]


def pause(
    conn: Connection,
    pipeline: str,
    *,
    by: str,
    reason: str | None,
    source: str,
    now: datetime,
) -> bool:
    """Switch `pipeline` to paused; False when it already was (the row is left as it is)."""
    values = {
        "pipeline": pipeline,
        "paused": True,
        "changed_by": by,
        "reason": reason,
        "source": source,
        "changed_at": now,
    }
    if insert_unless_taken(conn, pauses_table, values, ("pipeline",)):
        return True
    statement = (
        update(pauses_table)
        .where(pauses_table.c.pipeline == pipeline, pauses_table.c.paused.is_(False))
        .values(**values)
    )
    return conn.execute(statement).rowcount == 1


def resume(conn: Connection, pipeline: str, *, by: str, reason: str | None, now: datetime) -> bool:
    """Switch `pipeline` back to running; False when it was not paused."""
    statement = (
        update(pauses_table)
        .where(pauses_table.c.pipeline == pipeline, pauses_table.c.paused.is_(True))
        .values(paused=False, changed_by=by, reason=reason, source="manual", changed_at=now)
    )
    return conn.execute(statement).rowcount == 1


def fetch_pause(conn: Connection, pipeline: str) -> PipelinePauseRow | None:
    """The pipeline's pause row while it is paused; None when it runs."""
    query = select(pauses_table).where(
        pauses_table.c.pipeline == pipeline, pauses_table.c.paused.is_(True)
    )
    row = conn.execute(query).first()
    return None if row is None else PipelinePauseRow(*row)


def paused_pipelines(conn: Connection) -> list[PipelinePauseRow]:
    """Every paused pipeline's row, by name."""
    query = (
        select(pauses_table)
        .where(pauses_table.c.paused.is_(True))
        .order_by(pauses_table.c.pipeline)
    )
    return [PipelinePauseRow(*row) for row in conn.execute(query)]


def is_paused(conn: Connection, pipeline: str) -> bool:
    """Read the switch inside the caller's transaction (share-locking the row on PostgreSQL:
    see the module docstring)."""
    query = select(pauses_table.c.paused).where(pauses_table.c.pipeline == pipeline)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    return bool(conn.execute(query).scalar())


def paused_on_driver(conn: Connection, pipeline: str) -> bool:
    """`is_paused` for a `driver_transaction` (a live run's call boundary, on every call: the
    cheap read; a run that finds its pipeline paused reads it again with `is_paused`)."""
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    sql = f"SELECT paused FROM pipeline_pauses WHERE pipeline = {mark}"
    return bool(fast_scalar(conn, sql, (pipeline,)))


HELD_BY_PAUSE = "pipeline paused"
"""How a run held at a call boundary by its pipeline's pause starts its `waiting` event's detail:
a resume queues exactly those runs (not the ones waiting for an approval or a person)."""


def runs_held_by_pause(conn: Connection, pipeline: str) -> list[str]:
    """The pipeline's waiting runs whose latest transition was a hold by its pause."""
    runs: Table = Run.__table__  # type: ignore[assignment]
    events: Table = RunEvent.__table__  # type: ignore[assignment]
    waiting = select(runs.c.id).where(
        runs.c.pipeline == pipeline, runs.c.status == RunStatus.WAITING
    )
    query = (
        select(events.c.run_id, events.c.detail)
        .where(events.c.run_id.in_(waiting))
        .order_by(events.c.run_id, events.c.id)
    )
    latest: dict[str, str | None] = {}
    for run_id, detail in conn.execute(query):
        latest[str(run_id)] = detail
    return [run_id for run_id, detail in latest.items() if (detail or "").startswith(HELD_BY_PAUSE)]
