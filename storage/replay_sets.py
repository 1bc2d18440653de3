"""Which runs a replay check reads: the finished runs of a window and the waiting runs.

A finished run replays against a complete record (it never resumes); a waiting run resumes on
whatever code is deployed next, so every waiting run is read, whatever its age. Runs rejected at
their input (`invalid_input`) never ran a call and are not read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, Table, select

from storage.models import Run, RunStatus
from storage.rows import RunRow

runs_table: Table = Run.__table__  # type: ignore[assignment]

REPLAYED_FINISHED = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.REJECTED,
    RunStatus.NEEDS_ATTENTION,
    RunStatus.CANCELLED,
)


def _rows(conn: Connection, query: Select[Any]) -> list[RunRow]:
    return [RunRow(*row) for row in conn.execute(query)]


def finished_runs(
    conn: Connection,
    *,
    since: datetime,
    pipelines: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[RunRow]:
    """Runs that finished at or after `since` (newest first), at most `limit` of them."""
    query = (
        select(*runs_table.c)
        .where(
            runs_table.c.finished_at >= since,
            runs_table.c.status.in_([str(s) for s in REPLAYED_FINISHED]),
        )
        .order_by(runs_table.c.finished_at.desc(), runs_table.c.id)
    )
    if pipelines is not None:
        query = query.where(runs_table.c.pipeline.in_(list(pipelines)))
    if limit is not None:
        query = query.limit(limit)
    return _rows(conn, query)


def waiting_runs(conn: Connection, *, pipelines: Sequence[str] | None = None) -> list[RunRow]:
    """Every waiting run (oldest first)."""
    query = (
        select(*runs_table.c)
        .where(runs_table.c.status == str(RunStatus.WAITING))
        .order_by(runs_table.c.created_at, runs_table.c.id)
    )
    if pipelines is not None:
        query = query.where(runs_table.c.pipeline.in_(list(pipelines)))
    return _rows(conn, query)
