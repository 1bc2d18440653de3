"""Recorded `ctx` calls (one `CallRecord` each, read and written whole), and the rate-limit
count that guards a tool's start.

A tool's start is one transaction: lock the tool's counter (PostgreSQL advisory lock; SQLite's
`BEGIN IMMEDIATE` already holds the write lock), count its `tool.started` audit rows in the
window, and either record the start or report when the window frees up. Every process sharing
the database therefore shares the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Table, func, select, text

from storage.audit import audit_table
from storage.fastsql import fast_insert, fast_select, fast_update
from storage.models import Call, CallKind, CallStatus

calls_table: Table = Call.__table__  # type: ignore[assignment]


class CallRecord(NamedTuple):
    """One recorded `ctx` call, as a row of `calls`: written whole and read back whole.

    Immutable; a NamedTuple rather than a frozen dataclass because it is built for every call
    of every run (three times cheaper to build and to `_replace`). Build it with keywords.

    `seq` is the call's position in its run (None for an out-of-band reversal); a call that is
    not over yet has no `finished_at`."""

    id: str
    run_id: str
    seq: int | None
    key: str
    kind: CallKind
    name: str
    status: CallStatus
    input: Any
    started_at: datetime
    output: Any = None
    error: str | None = None
    idempotency_key: str | None = None
    finished_at: datetime | None = None
    wake_at: datetime | None = None
    reversed_by: str | None = None
    meta: Any = None


def _record(row: Any) -> CallRecord:
    return CallRecord(
        id=row.id,
        run_id=row.run_id,
        seq=row.seq,
        key=row.key,
        kind=CallKind(row.kind),
        name=row.name,
        status=CallStatus(row.status),
        input=row.input,
        started_at=row.started_at,
        output=row.output,
        error=row.error,
        idempotency_key=row.idempotency_key,
        finished_at=row.finished_at,
        wake_at=row.wake_at,
        reversed_by=row.reversed_by,
        meta=row.meta,
    )


def insert_call(conn: Connection, record: CallRecord) -> None:
    fast_insert(conn, calls_table, _row(record))


def insert_calls(conn: Connection, records: list[CallRecord]) -> None:
    """Several records in one statement (a run's steps, written with its next boundary)."""
    fast_insert(conn, calls_table, [_row(record) for record in records])


def _row(record: CallRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "run_id": record.run_id,
        "seq": record.seq,
        "key": record.key,
        "kind": record.kind,
        "name": record.name,
        "status": record.status,
        "input": record.input,
        "output": record.output,
        "error": record.error,
        "idempotency_key": record.idempotency_key,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "wake_at": record.wake_at,
        "reversed_by": record.reversed_by,
        "meta": record.meta,
    }


def update_call(conn: Connection, call_id: str, **values: Any) -> bool:
    """Set some of a recorded call's columns (its status and what came with it)."""
    return fast_update(conn, calls_table, values, {"id": call_id}) == 1


def recorded_calls(conn: Connection, run_id: str) -> list[CallRecord]:
    """The run's calls in order (reversals, which have no position, excluded)."""
    calls = fast_select(conn, calls_table, {"run_id": run_id}, order_by="seq")
    return [_record(call) for call in calls if call.seq is not None]


def recorded_calls_of(conn: Connection, run_ids: Sequence[str]) -> dict[str, list[CallRecord]]:
    """`recorded_calls` of many runs at once (a replay check): one query per 500 runs."""
    found: dict[str, list[CallRecord]] = {run_id: [] for run_id in run_ids}
    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start : start + 500]
        rows = conn.execute(
            select(calls_table)
            .where(calls_table.c.run_id.in_(chunk), calls_table.c.seq.is_not(None))
            .order_by(calls_table.c.run_id, calls_table.c.seq)
        )
        for row in rows:
            found[row.run_id].append(_record(row))
    return found


def fetch_call(conn: Connection, call_id: str) -> CallRecord | None:
    rows = fast_select(conn, calls_table, {"id": call_id})
    return _record(rows[0]) if rows else None


@dataclass(frozen=True)
class RateLimit:
    max_calls: int
    period: timedelta


@dataclass(frozen=True)
class StartDecision:
    started: bool
    retry_at: datetime | None = None
    used: int = 0


def _lock_tool_counter(conn: Connection, tool: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": "gatehouse.rate:" + tool}
        )


def tool_starts_in_window(conn: Connection, tool: str, since: datetime) -> list[datetime]:
    query = (
        select(audit_table.c.at)
        .where(
            audit_table.c.tool == tool,
            audit_table.c.event == "tool.started",
            audit_table.c.at > since,
        )
        .order_by(audit_table.c.at)
    )
    return [row for row in conn.execute(query).scalars()]


def count_tool_starts(conn: Connection, tool: str, since: datetime) -> int:
    query = select(func.count()).where(
        audit_table.c.tool == tool, audit_table.c.event == "tool.started", audit_table.c.at > since
    )
    return int(conn.execute(query).scalar_one())


def check_rate_limit(
    conn: Connection, *, tool: str, now: datetime, limit: RateLimit | None
) -> StartDecision:
    """Inside the transaction that records a tool's start: may it start now?

    Locks the tool's counter first so that two processes cannot both see the last free slot.
    """
    if limit is None:
        return StartDecision(started=True)
    _lock_tool_counter(conn, tool)
    starts = tool_starts_in_window(conn, tool, now - limit.period)
    used = len(starts)
    if used >= limit.max_calls:
        # A slot frees when the oldest start that keeps the window full leaves it.
        oldest_blocking = starts[used - limit.max_calls]
        return StartDecision(started=False, retry_at=oldest_blocking + limit.period, used=used)
    return StartDecision(started=True, used=used + 1)
