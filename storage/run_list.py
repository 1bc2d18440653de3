"""The list of recent runs (`gatehouse runs`) in SQLAlchemy Core alone: the columns the list
shows, read without importing the ORM models (storage.models and sqlalchemy.orm cost a
one-shot command a noticeable share of its start).

The `runs` table is declared once, in storage.models; `RUNS` here names the columns this list
reads with the same types (UTC datetimes), and tests/test_run_list.py keeps the two alike.
`storage.queries.list_runs` is the same query returning whole rows, for the engine's views.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, Select, String, column, select, table

from storage.types import UTCDateTime

RUNS = table(
    "runs",
    column("id", String),
    column("pipeline", String),
    column("status", String),
    column("trigger_user", String),
    column("created_at", UTCDateTime),
    column("finished_at", UTCDateTime),
)


class ListedRun(NamedTuple):
    """One line of the list: a run's id, pipeline, state, who started it and when."""

    id: str
    pipeline: str
    status: str
    trigger_user: str | None
    created_at: datetime
    finished_at: datetime | None


Listed = TypeVar("Listed", bound=Select[Any])


def newest_filtered(
    query: Listed,
    columns: Any,
    *,
    pipeline: str | None,
    status: str | None,
    since: datetime | None,
    limit: int,
) -> Listed:
    """`query` over `columns` (a runs table's `.c`) newest first, filtered as both lists are."""
    query = query.order_by(columns.created_at.desc()).limit(limit)
    if pipeline is not None:
        query = query.where(columns.pipeline == pipeline)
    if status is not None:
        query = query.where(columns.status == status)
    if since is not None:
        query = query.where(columns.created_at >= since)
    return query


def list_runs(
    conn: Connection,
    *,
    pipeline: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 20,
) -> list[ListedRun]:
    """The newest runs first, filtered as `storage.queries.list_runs` filters them."""
    c = RUNS.c
    query = newest_filtered(
        select(c.id, c.pipeline, c.status, c.trigger_user, c.created_at, c.finished_at),
        c,
        pipeline=pipeline,
        status=status,
        since=since,
        limit=limit,
    )
    return [ListedRun(*row) for row in conn.execute(query)]
