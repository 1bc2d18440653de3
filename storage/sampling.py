"""Reads of `runs` for sampling a window of finished runs, through indexes only.

A bounded count or listing of the window through `ix_runs_finished_pipeline_status`, one
primary-key seek per random key (`id >= key ORDER BY id LIMIT 1`, a whole batch of keys in one
statement), a pipeline's recent runs through `ix_runs_pipeline_created`: never a sort of the
window. The SQL is written per dialect and sent to the driver: SQLite has to be told which
index to walk (left to itself it takes `ix_runs_status_wake` for `status IN (...)` and reads
every finished run there is, or ranges over `finished_at` and sorts the window by id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from sqlalchemy import Connection

# SQLite names the index behind a non-integer PRIMARY KEY itself.
_SQLITE_RUNS_PK = "sqlite_autoindex_runs_1"
_SQLITE_FINISHED = "ix_runs_finished_pipeline_status"
_SQLITE_PIPELINE_CREATED = "ix_runs_pipeline_created"

# What `ix_runs_finished_pipeline_status` holds for a run: its rowid on SQLite, its id on
# PostgreSQL (see `window_handles`).
RunHandle: TypeAlias = int | str


@dataclass(frozen=True)
class Window:
    """Runs that finished in `[since, until)` with one of `statuses`."""

    since: datetime
    until: datetime
    statuses: frozenset[str]


def _bind_time(conn: Connection, value: datetime) -> Any:
    # The same text the column type stores on SQLite (naive UTC, microseconds), so the string
    # comparison in SQL is a time comparison; psycopg takes aware datetimes.
    utc = value.astimezone(UTC)
    if conn.dialect.name == "sqlite":
        return utc.replace(tzinfo=None).isoformat(" ", "microseconds")
    return utc


def _fetch(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """Rows of a read sent straight to the driver, inside the transaction SQLAlchemy holds
    (its result layer costs about 4 µs a row, more than the index read it wraps)."""
    cursor = conn.connection.driver_connection.execute(sql, tuple(params))  # type: ignore[union-attr]
    return list(cursor.fetchall())


def _mark(conn: Connection) -> str:
    return "?" if conn.dialect.name == "sqlite" else "%s"


def _runs(conn: Connection, sqlite_index: str) -> str:
    # Without statistics SQLite prefers `ix_runs_status_wake` for `status IN (...)`, which
    # walks every finished run ever; name the index that bounds the work instead.
    return f"runs INDEXED BY {sqlite_index}" if conn.dialect.name == "sqlite" else "runs"


def _statuses_sql(statuses: Iterable[str]) -> str:
    # Our own enum values, inlined: constant text lets PostgreSQL plan for them.
    for status in statuses:
        if not status.replace("_", "").isalpha():
            raise ValueError(f"not a run status: {status!r}")
    return ", ".join(f"'{s}'" for s in sorted(statuses))


def _window_sql(conn: Connection, window: Window) -> tuple[str, list[Any]]:
    m = _mark(conn)
    sql = (
        f"finished_at >= {m} AND finished_at < {m} AND status IN ({_statuses_sql(window.statuses)})"
    )
    return sql, [_bind_time(conn, window.since), _bind_time(conn, window.until)]


def count_window(conn: Connection, window: Window, *, cap: int) -> int:
    """How many runs the window holds, counting no further than `cap` (index only)."""
    where, params = _window_sql(conn, window)
    source = _runs(conn, _SQLITE_FINISHED)
    sql = f"SELECT count(*) FROM (SELECT 1 FROM {source} WHERE {where} LIMIT {int(cap)}) AS w"
    return int(_fetch(conn, sql, params)[0][0])


def window_handles(conn: Connection, window: Window, *, limit: int) -> list[tuple[RunHandle, str]]:
    """(handle, pipeline) of up to `limit` runs of the window, in index order (not random).

    A handle is what the index holds: the rowid on SQLite (read without touching the table,
    four times faster than reading ids), the run id on PostgreSQL. `run_ids_of` turns the few
    handles kept into run ids.
    """
    where, params = _window_sql(conn, window)
    handle = "rowid" if conn.dialect.name == "sqlite" else "id"
    source = _runs(conn, _SQLITE_FINISHED)
    sql = f"SELECT {handle}, pipeline FROM {source} WHERE {where} LIMIT {int(limit)}"
    return [(r[0], str(r[1])) for r in _fetch(conn, sql, params)]


def run_ids_of(
    conn: Connection, handles: Sequence[RunHandle], window: Window | None = None
) -> dict[RunHandle, str]:
    """Handle → run id for `handles` (those of `window`'s runs only, when given)."""
    if not handles:
        return {}
    sqlite_db = conn.dialect.name == "sqlite"
    if window is None and not sqlite_db:
        return {h: str(h) for h in handles}
    m = _mark(conn)
    handle = "rowid" if sqlite_db else "id"
    sql = f"SELECT {handle}, id FROM runs WHERE {handle} IN ({', '.join(m for _ in handles)})"
    params: list[Any] = list(handles)
    if window is not None:
        where, window_params = _window_sql(conn, window)
        sql += f" AND {where}"
        params += window_params
    return {r[0]: str(r[1]) for r in _fetch(conn, sql, params)}


def first_runs_at_or_after(
    conn: Connection, keys: Sequence[str], window: Window, *, pipeline: str | None = None
) -> list[str | None]:
    """For each key, the id of the window's first run at or after it by id (None past the last
    one): one primary-key seek per key, all in one statement. With random ids, a uniformly
    random key lands on a uniformly random run."""
    if not keys:
        return []
    where, params = _window_sql(conn, window)
    m = _mark(conn)
    if pipeline is not None:
        where += f" AND pipeline = {m}"
        params.append(pipeline)
    values = ", ".join(f"({m})" for _ in keys)
    alias = "k" if conn.dialect.name == "sqlite" else "k(column1)"  # SQLite names it column1
    sql = (
        f"SELECT (SELECT id FROM {_runs(conn, _SQLITE_RUNS_PK)} WHERE id >= k.column1 AND {where} "
        f"ORDER BY id LIMIT 1) FROM (VALUES {values}) AS {alias}"
    )
    return [None if r[0] is None else str(r[0]) for r in _fetch(conn, sql, (*params, *keys))]


def pipeline_names(conn: Connection) -> list[str]:
    """Every pipeline that has runs, hopping through `ix_runs_pipeline_created` (one index seek
    per name, however many runs each has)."""
    sql = (
        "WITH RECURSIVE names(name) AS (SELECT min(pipeline) FROM runs UNION ALL "
        "SELECT (SELECT min(pipeline) FROM runs WHERE pipeline > names.name) FROM names "
        "WHERE names.name IS NOT NULL) SELECT name FROM names WHERE name IS NOT NULL"
    )
    return [str(r[0]) for r in _fetch(conn, sql)]


def runs_table_size(conn: Connection) -> int:
    """About how many rows `runs` has, at no cost: SQLite's largest rowid, PostgreSQL's
    planner estimate (0 when it has none yet)."""
    if conn.dialect.name == "sqlite":
        found = _fetch(conn, "SELECT max(rowid) FROM runs")
    else:
        found = _fetch(conn, "SELECT reltuples FROM pg_class WHERE oid = to_regclass('runs')")
    return max(int(found[0][0] or 0), 0) if found else 0


def count_created(
    conn: Connection, pipelines: Sequence[str], *, since: datetime, until: datetime, cap: int
) -> dict[str, int]:
    """How many runs of each pipeline were created in `[since, until)`, counting no further
    than `cap` (`ix_runs_pipeline_created` alone; all pipelines in one statement)."""
    if not pipelines:
        return {}
    m = _mark(conn)
    source = _runs(conn, _SQLITE_PIPELINE_CREATED)
    alias = "k" if conn.dialect.name == "sqlite" else "k(column1)"
    sql = (
        f"SELECT k.column1, (SELECT count(*) FROM (SELECT 1 FROM {source} "
        f"WHERE pipeline = k.column1 AND created_at >= {m} AND created_at < {m} "
        f"LIMIT {int(cap)}) AS c) FROM (VALUES {', '.join(f'({m})' for _ in pipelines)}) AS {alias}"
    )
    bound = (_bind_time(conn, since), _bind_time(conn, until), *pipelines)
    return {str(r[0]): int(r[1]) for r in _fetch(conn, sql, bound)}


def created_handles(
    conn: Connection, pipeline: str, *, since: datetime, until: datetime, limit: int
) -> list[RunHandle]:
    """Handles (see `window_handles`) of up to `limit` runs of `pipeline` created in
    `[since, until)`, through `ix_runs_pipeline_created`."""
    m = _mark(conn)
    handle = "rowid" if conn.dialect.name == "sqlite" else "id"
    source = _runs(conn, _SQLITE_PIPELINE_CREATED)
    sql = (
        f"SELECT {handle} FROM {source} WHERE pipeline = {m} "
        f"AND created_at >= {m} AND created_at < {m} LIMIT {int(limit)}"
    )
    bound = (pipeline, _bind_time(conn, since), _bind_time(conn, until))
    return [r[0] for r in _fetch(conn, sql, bound)]
