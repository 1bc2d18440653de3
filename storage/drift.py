"""The figures the drift rules read: LLM calls per pipeline and call key (human exits, mean
confidence) in a window, and the daily counts of each categorical field's values.

LLM calls count in the window their run was *created* in (like the stats' cost and tokens): the
window's runs come from `ix_runs_created` and each run's calls from `ix_calls_run`, so no index is
added to `calls` (the hot path writes one row per call and stays as it is). A run that takes the
human exit waits for a person and may finish hours later: counting by creation sees the exits
when they happen, not when people have answered them.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    Text,
    case,
    cast,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from storage.calls import calls_table
from storage.models import (
    CallKind,
    CallStatus,
    DriftCount,
    DriftFigure,
    DriftRolledDay,
    RunStatus,
)
from storage.runs import runs_table

figures_table: Table = DriftFigure.__table__  # type: ignore[assignment]
counts_table: Table = DriftCount.__table__  # type: ignore[assignment]
rolled_table: Table = DriftRolledDay.__table__  # type: ignore[assignment]
VALUE_LIMIT = 400  # a longer value is cut (a free-text field marked categorical by mistake)

Source = Literal["input", "output", "llm"]
MISSING = "(missing)"  # a field absent or null in a record: a category of its own


@dataclass(frozen=True)
class CallCounts:
    """LLM calls in a window: how many, how many took the human exit, and the confidences the
    model gave (summed, for a mean that adds up across call keys)."""

    calls: int = 0
    human_exits: int = 0
    confident: int = 0
    confidence_sum: float = 0.0

    @property
    def human_exit_rate(self) -> float | None:
        return self.human_exits / self.calls if self.calls else None

    @property
    def mean_confidence(self) -> float | None:
        return self.confidence_sum / self.confident if self.confident else None

    def __add__(self, other: CallCounts) -> CallCounts:
        return CallCounts(
            self.calls + other.calls,
            self.human_exits + other.human_exits,
            self.confident + other.confident,
            self.confidence_sum + other.confidence_sum,
        )


def llm_call_counts(
    conn: Connection,
    *,
    since: datetime,
    until: datetime,
    until_inclusive: bool = True,
    pipelines: Collection[str] | None = None,
) -> dict[tuple[str, str], CallCounts]:
    """LLM calls of the runs created in the window, per (pipeline, call key); only pairs that
    have any. A call took the human exit when its `meta.human_exit` is true."""
    created_at = runs_table.c.created_at
    human_exit = calls_table.c.meta["human_exit"].as_boolean()
    confidence = calls_table.c.meta["confidence"].as_float()
    # Grouped by the pipeline as a plain value: grouped by the column, SQLite walks
    # `ix_runs_pipeline_created` (or every call) for its order instead of the time range.
    pipeline = _filter_only(conn, runs_table.c.pipeline)
    query = (
        select(
            pipeline,
            calls_table.c.key,
            func.count(),
            func.sum(case((human_exit.is_(True), 1), else_=0)),
            func.count(confidence),
            func.sum(confidence),
        )
        .select_from(runs_table.join(calls_table, calls_table.c.run_id == runs_table.c.id))
        .where(
            created_at >= since,
            created_at <= until if until_inclusive else created_at < until,
            calls_table.c.kind == str(CallKind.LLM),
        )
        .group_by(pipeline, calls_table.c.key)
    )
    if pipelines is not None:
        query = query.where(pipeline.in_(sorted(pipelines)))
    return {
        (str(name), str(key)): CallCounts(int(n), int(exits or 0), int(n_conf), float(total or 0))
        for name, key, n, exits, n_conf, total in conn.execute(query)
    }


def _filter_only(conn: Connection, column: ColumnElement[str]) -> ColumnElement[str]:
    """Keep SQLite's planner on the time range (see `storage.alerts._filter_only`)."""
    return cast(column, Text) if conn.dialect.name == "sqlite" else column


def llm_categorical_fields(
    conn: Connection, *, since: datetime, until: datetime
) -> dict[tuple[str, str], tuple[str, ...]]:
    """Which LLM calls record categorical output fields (`meta.categorical`, written by
    `ctx.llm`), per (pipeline, call key), among the runs created in the period."""
    fields_text = calls_table.c.meta["categorical"].as_string()
    query = (
        select(_filter_only(conn, runs_table.c.pipeline), calls_table.c.key, fields_text)
        .select_from(runs_table.join(calls_table, calls_table.c.run_id == runs_table.c.id))
        .where(
            runs_table.c.created_at >= since,
            runs_table.c.created_at <= until,
            calls_table.c.kind == str(CallKind.LLM),
            fields_text.is_not(None),
        )
        .distinct()
    )
    found: dict[tuple[str, str], tuple[str, ...]] = {}
    for name, key, text in conn.execute(query):
        names = json.loads(text) if isinstance(text, str) else text
        if isinstance(names, list):
            merged = dict.fromkeys([*found.get((name, key), ()), *map(str, names)])
            found[(str(name), str(key))] = tuple(merged)
    return found


def value_counts(
    conn: Connection,
    *,
    pipeline: str,
    source: Source,
    field: str,
    since: datetime,
    until: datetime,
    call_key: str | None = None,
) -> dict[str, int]:
    """Value → count of one field over the runs created in [since, until): of the pipeline's
    input, its output (succeeded runs), or one LLM call's answer (succeeded calls). One range of
    `ix_runs_pipeline_created`; a missing value counts as `MISSING`."""
    created_at = runs_table.c.created_at
    if source == "llm":
        value: Any = calls_table.c.output[field].as_string()
        query = (
            select(value, func.count())
            .select_from(runs_table.join(calls_table, calls_table.c.run_id == runs_table.c.id))
            .where(
                calls_table.c.kind == str(CallKind.LLM),
                calls_table.c.key == call_key,
                calls_table.c.status == str(CallStatus.SUCCEEDED),
            )
        )
    else:
        column = runs_table.c.input if source == "input" else runs_table.c.output
        value = column[field].as_string()
        query = select(value, func.count())
        if source == "output":  # a run that did not succeed has no output to compare
            query = query.where(runs_table.c.status == str(RunStatus.SUCCEEDED))
    query = query.where(
        runs_table.c.pipeline == pipeline, created_at >= since, created_at < until
    ).group_by(value)
    counts: dict[str, int] = {}
    for raw, n in conn.execute(query):
        label = MISSING if raw is None else str(raw)[:VALUE_LIMIT]
        counts[label] = counts.get(label, 0) + int(n)
    return counts


def pipelines_with_runs(conn: Connection, *, since: datetime, until: datetime) -> set[str]:
    """The pipelines with runs created in [since, until) (one range of `ix_runs_created`)."""
    pipeline = _filter_only(conn, runs_table.c.pipeline)
    query = (
        select(pipeline)
        .where(runs_table.c.created_at >= since, runs_table.c.created_at < until)
        .group_by(pipeline)
    )
    return {str(name) for (name,) in conn.execute(query)}


def rolled_days(conn: Connection, *, since: datetime, until: datetime) -> set[datetime]:
    query = select(rolled_table.c.day).where(
        rolled_table.c.day >= since, rolled_table.c.day < until
    )
    return set(conn.execute(query).scalars())


def _insert_ignoring_duplicates(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert, skipping rows another roll-up (a replica, `alerts check --drift`) wrote first:
    both counted the same day from the same runs."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(postgresql.insert(table).on_conflict_do_nothing(), rows)
    elif dialect == "sqlite":
        conn.execute(sqlite.insert(table).on_conflict_do_nothing(), rows)
    else:  # pragma: no cover - Gatehouse supports these two
        raise RuntimeError(f"drift needs SQLite or PostgreSQL, not {dialect}")


def add_day_counts(
    conn: Connection,
    *,
    day: datetime,
    pipeline: str,
    source: Source,
    field: str,
    call_key: str | None,
    counts: dict[str, int],
) -> None:
    _insert_ignoring_duplicates(
        conn,
        counts_table,
        [
            {
                "day": day,
                "pipeline": pipeline,
                "source": source,
                "call_key": call_key or "",
                "field": field,
                "value": value,
                "count": n,
            }
            for value, n in counts.items()
        ],
    )


def mark_rolled(conn: Connection, *, day: datetime, now: datetime) -> None:
    _insert_ignoring_duplicates(conn, rolled_table, [{"day": day, "rolled_at": now}])


FieldKey = tuple[str, str, str, str]  # (pipeline, source, call key or "", field)


def period_counts(
    conn: Connection, *, since: datetime, split: datetime, until: datetime
) -> dict[FieldKey, dict[str, tuple[int, int]]]:
    """Every field's values summed over the days in [since, split) (reference) and
    [split, until) (recent): field → value → (reference count, recent count)."""
    day = counts_table.c.day
    recent = case((day >= split, 1), else_=0)
    query = (
        select(
            counts_table.c.pipeline,
            counts_table.c.source,
            counts_table.c.call_key,
            counts_table.c.field,
            counts_table.c.value,
            recent,
            func.sum(counts_table.c.count),
        )
        .where(day >= since, day < until)
        .group_by(
            counts_table.c.pipeline,
            counts_table.c.source,
            counts_table.c.call_key,
            counts_table.c.field,
            counts_table.c.value,
            recent,
        )
    )
    found: dict[FieldKey, dict[str, list[int]]] = {}
    for pipeline, source, key, field, value, is_recent, n in conn.execute(query):
        pair = found.setdefault((pipeline, source, key, field), {}).setdefault(value, [0, 0])
        pair[int(is_recent)] += int(n)
    return {
        key: {value: (pair[0], pair[1]) for value, pair in sorted(values.items())}
        for key, values in sorted(found.items())
    }


def save_figures(conn: Connection, figures: list[dict[str, Any]], *, now: datetime) -> None:
    """Replace the stored drift figures with one evaluation's (`FieldDrift.to_json()`s)."""
    conn.execute(delete(figures_table).where(figures_table.c.evaluated_at <= now))
    if figures:
        conn.execute(
            insert(figures_table),
            [
                {
                    "pipeline": f["pipeline"],
                    "label": f["label"],
                    "psi": f["psi"],
                    "reference_count": f["reference_count"],
                    "recent_count": f["recent_count"],
                    "figures": f,
                    "evaluated_at": now,
                }
                for f in figures
            ],
        )


def max_psi_by_pipeline(conn: Connection) -> dict[str, tuple[float, str, datetime]]:
    """Per pipeline, the stored field with the largest PSI: (psi, label, evaluated at). Only
    fields with values in both periods count: against an empty reference window (a new
    pipeline, a new field) the PSI is only its floor's artefact, 8 or 9, not a shift."""
    query = (
        select(
            figures_table.c.pipeline,
            figures_table.c.psi,
            figures_table.c.label,
            figures_table.c.evaluated_at,
        )
        .where(figures_table.c.reference_count > 0, figures_table.c.recent_count > 0)
        .order_by(figures_table.c.pipeline, figures_table.c.psi.desc(), figures_table.c.label)
    )
    found: dict[str, tuple[float, str, datetime]] = {}
    for pipeline, value, label, at in conn.execute(query):
        found.setdefault(str(pipeline), (float(value), str(label), at))
    return found


def psi_missing_by_pipeline(conn: Connection) -> dict[str, tuple[str, datetime]]:
    """Per pipeline with stored figures but none comparable (`max_psi_by_pipeline`): why, and
    when it was evaluated. "no earlier data to compare" when no field had values in the
    reference window; "no recent data" when none had any in the recent one."""
    query = select(
        figures_table.c.pipeline,
        func.max(figures_table.c.reference_count),
        func.max(figures_table.c.recent_count),
        func.sum(
            case(
                (
                    (figures_table.c.reference_count > 0) & (figures_table.c.recent_count > 0),
                    1,
                ),
                else_=0,
            )
        ),
        func.max(figures_table.c.evaluated_at),
    ).group_by(figures_table.c.pipeline)
    missing: dict[str, tuple[str, datetime]] = {}
    for pipeline, reference, _recent, comparable, at in conn.execute(query):
        if comparable:
            continue
        why = "no earlier data to compare" if not reference else "no recent data"
        missing[str(pipeline)] = (why, at)
    return missing
