"""Alerts in the database: windowed error counts per pipeline, and the alert rows of every rule.

Counts come from the covering index `ix_runs_finished_pipeline_status` (finished_at, pipeline,
status): a range scan over the window and a GROUP BY, with no table lookups. An alert is opened
by one INSERT that the partial unique index (one `open` alert per rule and subject) turns into a
no-op for every evaluator but the first; everything after that is a compare-and-set UPDATE.

`details` (JSON) holds what the alert message shows and where its posting stands; it is only
ever changed by merging keys in SQL (`json_patch` on SQLite, `||` on PostgreSQL), so two
writers touching different keys never lose each other's update.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    Text,
    cast,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

from storage.models import FINISHED_RUN_STATUSES, Alert, RunStatus
from storage.rows import AlertRow
from storage.runs import runs_table

alerts_table: Table = Alert.__table__  # type: ignore[assignment]

OPEN = "open"
RECOVERED = "recovered"
ERROR_RATE = "error_rate"
ERROR_STATUSES = frozenset({str(RunStatus.FAILED), str(RunStatus.NEEDS_ATTENTION)})
_FINISHED = frozenset(str(s) for s in FINISHED_RUN_STATUSES)


@dataclass(frozen=True)
class ErrorCounts:
    """Runs of one pipeline that finished in a window, and how many of them ended in error."""

    finished: int = 0
    errors: int = 0

    @property
    def rate(self) -> float | None:
        return self.errors / self.finished if self.finished else None


def error_counts(
    conn: Connection,
    *,
    since: datetime,
    until: datetime,
    until_inclusive: bool = True,
    pipelines: Collection[str] | None = None,
) -> dict[str, ErrorCounts]:
    """Finished and errored runs per pipeline with `since <= finished_at <= until` (`< until`
    when not `until_inclusive`); only pipelines that have any.

    One range scan of the covering index. Grouped by (pipeline, status) and summed here: a
    `status IN (...)` condition would tempt SQLite's planner onto `ix_runs_status_wake` (every
    finished run, ~300 ms at a million) instead of the range (~1 ms for 15 minutes).
    """
    finished_at = runs_table.c.finished_at
    query = (
        select(runs_table.c.pipeline, runs_table.c.status, func.count())
        .where(
            finished_at >= since,
            finished_at <= until if until_inclusive else finished_at < until,
        )
        .group_by(runs_table.c.pipeline, runs_table.c.status)
    )
    if pipelines is not None:
        query = query.where(_filter_only(conn, runs_table.c.pipeline).in_(sorted(pipelines)))
    finished: dict[str, int] = {}
    errors: dict[str, int] = {}
    for name, status, count in conn.execute(query):
        if status in _FINISHED:
            finished[name] = finished.get(name, 0) + int(count)
            if status in ERROR_STATUSES:
                errors[name] = errors.get(name, 0) + int(count)
    return {name: ErrorCounts(n, errors.get(name, 0)) for name, n in finished.items()}


def errored_runs(
    conn: Connection, pipeline: str, *, since: datetime, until: datetime, limit: int = 5000
) -> list[tuple[str, str | None]]:
    """(run id, error) of the pipeline's runs that ended in error in the window, newest first."""
    query = (
        select(runs_table.c.id, runs_table.c.error)
        .where(
            runs_table.c.finished_at >= since,
            runs_table.c.finished_at <= until,
            _filter_only(conn, runs_table.c.pipeline) == pipeline,
            _filter_only(conn, runs_table.c.status).in_(sorted(ERROR_STATUSES)),
        )
        .order_by(runs_table.c.finished_at.desc(), runs_table.c.id)
        .limit(limit)
    )
    return [(str(run_id), error) for run_id, error in conn.execute(query)]


def _filter_only(conn: Connection, column: ColumnElement[str]) -> ColumnElement[str]:
    """The column as a plain filter, never an index key, on SQLite.

    Without statistics SQLite's planner prefers any equality (`pipeline = ?` on
    `ix_runs_pipeline_created`, `status IN (...)` on `ix_runs_status_wake`) to a range, and then
    reads every run of the pipeline (or status) for a window that holds a few hundred: 20-300 ms
    instead of 1-3. CAST hides the column from the planner, which keeps the `finished_at` range.
    PostgreSQL plans with statistics and gets the column unchanged."""
    return cast(column, Text) if conn.dialect.name == "sqlite" else column


# -- alert rows ----------------------------------------------------------------------------------


def open_alerts(conn: Connection) -> list[AlertRow]:
    """Every open alert (at most one per rule and subject)."""
    query = select(alerts_table).where(alerts_table.c.status == OPEN).order_by(alerts_table.c.id)
    return [AlertRow(*row) for row in conn.execute(query)]


def recent_alerts(conn: Connection, *, since: datetime, limit: int = 100) -> list[AlertRow]:
    """Open alerts, and the others opened since `since`; newest first."""
    query = (
        select(alerts_table)
        .where(or_(alerts_table.c.status == OPEN, alerts_table.c.opened_at >= since))
        .order_by(alerts_table.c.opened_at.desc(), alerts_table.c.id.desc())
        .limit(limit)
    )
    return [AlertRow(*row) for row in conn.execute(query)]


def get_alert(conn: Connection, alert_id: int) -> AlertRow | None:
    row = conn.execute(select(alerts_table).where(alerts_table.c.id == alert_id)).first()
    return None if row is None else AlertRow(*row)


def insert_open_alert(
    conn: Connection,
    *,
    pipeline: str,
    now: datetime,
    rate: float,
    baseline: float | None,
    window_runs: int,
    details: Mapping[str, Any],
    rule: str = ERROR_RATE,
    subject: str | None = None,
) -> AlertRow | None:
    """Open an alert unless the (rule, subject) has one open already (the subject defaults to
    the pipeline): the partial unique index makes the INSERT do nothing for every concurrent
    evaluator but one. Returns the new row, or None."""
    values = {
        "pipeline": pipeline,
        "rule": rule,
        "subject": subject if subject is not None else pipeline,
        "status": OPEN,
        "opened_at": now,
        "rate": rate,
        "baseline": baseline,
        "window_runs": window_runs,
        "details": dict(details),
    }
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(alerts_table).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(alerts_table).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - Gatehouse supports these two
        raise RuntimeError(f"alerts need SQLite or PostgreSQL, not {dialect}")
    row = conn.execute(stmt.returning(*alerts_table.c)).first()
    return None if row is None else AlertRow(*row)


def update_alert(
    conn: Connection,
    alert_id: int,
    *,
    status: str | None = None,
    details_key: tuple[str, str | None] | None = None,
    below_since: tuple[datetime | None] | None = None,
    values: Mapping[str, Any] | None = None,
    patch: Mapping[str, Any] | None = None,
) -> bool:
    """Compare-and-set: change the alert only if it is still in `status`, its `details_key`
    (key, value) still holds (None: absent or null), and its `below_since` is still the one
    given (a 1-tuple, since None is a value). `patch` merges keys into `details`.
    Returns whether this call changed the row."""
    stmt = update(alerts_table).where(alerts_table.c.id == alert_id)
    if status is not None:
        stmt = stmt.where(alerts_table.c.status == status)
    if details_key is not None:
        key, expected = details_key
        field = alerts_table.c.details[key].as_string()
        stmt = stmt.where(field.is_(None) if expected is None else field == expected)
    if below_since is not None:
        (seen,) = below_since
        column = alerts_table.c.below_since
        stmt = stmt.where(column.is_(None) if seen is None else column == seen)
    new_values: dict[str, Any] = dict(values or {})
    if patch:
        new_values["details"] = _merged_details(conn, patch)
    if not new_values:
        raise ValueError("update_alert needs values or a patch")
    return int(conn.execute(stmt.values(new_values)).rowcount) == 1


def _merged_details(conn: Connection, patch: Mapping[str, Any]) -> ColumnElement[Any]:
    """`details` with the top-level keys of `patch` set, computed by the database from the row's
    current value (a JSON null in `patch` removes the key on SQLite, stores null on PostgreSQL;
    both read back as None)."""
    text = json.dumps(dict(patch))
    if conn.dialect.name == "postgresql":
        return alerts_table.c.details.op("||")(literal(text).cast(JSONB))
    return func.json_patch(func.coalesce(alerts_table.c.details, "{}"), text)


def record_alert_message(conn: Connection, alert_id: int, *, channel: str, ts: str) -> bool:
    """Compare-and-set: store where the alert's message was posted, unless one is stored."""
    stmt = (
        update(alerts_table)
        .where(alerts_table.c.id == alert_id, alerts_table.c.ts.is_(None))
        .values(channel=channel, ts=ts)
    )
    return int(conn.execute(stmt).rowcount) == 1
