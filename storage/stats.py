"""Per-pipeline numbers for a time window: volume, error rate, latency percentiles, LLM cost.

What each number counts (the window is `since <= t <= until`, both given by the caller):

- `runs`: runs *created* in the window (`created_at`), whatever their state now.
- `finished`, `by_status`: runs that *finished* in the window (`finished_at`), by final status.
- `errors`: of those, the ones that ended `failed` or `needs_attention` (the engine's own
  failures). `rejected`, `invalid_input` and `cancelled` are outcomes a person or the caller
  chose, so they count as finished but not as errors; `by_status` has them for anyone who
  wants another definition. `error_rate = errors / finished` (None when nothing finished).
- `p50_seconds`, `p95_seconds`: percentiles of `finished_at - created_at` over the runs that
  finished in the window, so a run's latency includes its time queued and waiting for people.
  Linear interpolation between the closest ranks, i.e. PostgreSQL's `percentile_cont`, which
  computes them there; on SQLite `percentile` below applies it in Python.
  Exact when the window holds at most `EXACT_LATENCY_RUNS` finished runs, and always for a
  pipeline with at most `QUIET_PIPELINE_RUNS` of them. Above that they are *estimates* from a
  systematic sample of about `LATENCY_SAMPLE_RUNS` runs (every run equally likely to be in it;
  the same window always draws the same sample): fetching every duration of a busy week took
  over a second at a million runs. With ~200 sampled runs a pipeline, expect p50 within a few
  percent and p95 within roughly ±2 percentile points of rank (more where the tail is spiky);
  the counts, error rate and cost stay exact. Sampled durations come from SQLite's `julianday`,
  good to well under a millisecond.
- `prompt_tokens`, `completion_tokens`: sums of those `meta` keys over the same LLM calls as
  `llm_cost_usd` (calls that did not report them count 0).
- `approvals_approved`, `_rejected`, `_expired`: approvals *requested* in the window, by their
  decision so far (pending ones are in `pending_counts`); `median_decision_seconds` is the
  median of `decided_at - requested_at` over the approved and rejected ones (None without any).
- `runs_with_task`: runs created in the window that opened a human task;
  `human_task_rate = runs_with_task / runs`.
- `llm_cost_usd`: the sum of `meta.cost_usd` over the LLM calls of the runs *created* in the
  window (the same runs as `runs`); `llm_calls` counts those calls and `priced_llm_calls` the
  ones with a known cost (no price configured, or no model: the cost is unknown and left out).
  `cost_per_run = llm_cost_usd / runs` — every run in the denominator, with or without LLM
  calls (None when there are no runs).

Pending work (`pending_counts`) is not windowed: approvals still `pending` and human tasks
still `open` right now, per pipeline.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    extract,
    func,
    literal,
    or_,
    select,
    text,
    union_all,
)

from storage.approvals import approvals_table, tasks_table
from storage.calls import calls_table
from storage.models import FINISHED_RUN_STATUSES, ApprovalStatus, CallKind, RunStatus, TaskStatus
from storage.runs import runs_table
from storage.types import UTCDateTime

ERROR_STATUSES = frozenset({RunStatus.FAILED, RunStatus.NEEDS_ATTENTION})
PERCENTILES = (0.5, 0.95)
EXACT_LATENCY_RUNS = 10_000  # a window with at most this many finished runs gets exact percentiles
LATENCY_SAMPLE_RUNS = 10_000  # above it, percentiles come from a sample of about this many
QUIET_PIPELINE_RUNS = 1_000  # a pipeline with this few finished runs is always measured exactly
SAMPLE_STRATA = 97  # slices of the window in the sample (prime: no lock-step with hours or days)


@dataclass(frozen=True)
class WindowStats:
    """One pipeline's numbers for one window (see the module docstring for what they count)."""

    pipeline: str
    since: datetime
    until: datetime
    runs: int = 0
    finished: int = 0
    errors: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    p50_seconds: float | None = None
    p95_seconds: float | None = None
    llm_cost_usd: float = 0.0
    llm_calls: int = 0
    priced_llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    approvals_approved: int = 0
    approvals_rejected: int = 0
    approvals_expired: int = 0
    median_decision_seconds: float | None = None
    runs_with_task: int = 0

    @property
    def window(self) -> timedelta:
        return self.until - self.since

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.finished if self.finished else None

    @property
    def cost_per_run(self) -> float | None:
        return self.llm_cost_usd / self.runs if self.runs else None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def approvals_decided(self) -> int:
        return self.approvals_approved + self.approvals_rejected + self.approvals_expired

    @property
    def human_task_rate(self) -> float | None:
        return self.runs_with_task / self.runs if self.runs else None


@dataclass(frozen=True)
class PendingCounts:
    approvals: int = 0
    tasks: int = 0

    @property
    def total(self) -> int:
        return self.approvals + self.tasks


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """`percentile_cont`: linear interpolation between the two closest ranks (None if empty)."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def window_stats(
    conn: Connection,
    *,
    since: datetime,
    until: datetime,
    pipelines: Iterable[str] | None = None,
) -> dict[str, WindowStats]:
    """Every pipeline with runs created or finished in the window (or only `pipelines`, each
    present even without runs), keyed by name."""
    wanted = None if pipelines is None else sorted(set(pipelines))
    volume = _volume(conn, since, until, wanted)
    outcomes = _outcomes(conn, since, until, wanted)
    latency = _latency(
        conn, since, until, wanted, {name: sum(by.values()) for name, by in outcomes.items()}
    )
    costs = _costs(conn, since, until, wanted)
    approvals = _approvals(conn, since, until, wanted)
    with_task = _runs_with_task(conn, since, until, wanted)
    names = set(wanted or ()) | set(volume) | set(outcomes)
    result = {}
    for name in sorted(names):
        by_status = outcomes.get(name, {})
        p50, p95 = latency.get(name, (None, None))
        cost, calls, priced, prompt, completion = costs.get(name, (0.0, 0, 0, 0, 0))
        decided = approvals.get(name, _Decisions())
        result[name] = WindowStats(
            pipeline=name,
            since=since,
            until=until,
            runs=volume.get(name, 0),
            finished=sum(by_status.values()),
            errors=sum(n for status, n in by_status.items() if status in ERROR_STATUSES),
            by_status=dict(sorted(by_status.items())),
            p50_seconds=p50,
            p95_seconds=p95,
            llm_cost_usd=cost,
            llm_calls=calls,
            priced_llm_calls=priced,
            prompt_tokens=prompt,
            completion_tokens=completion,
            approvals_approved=decided.counts.get(ApprovalStatus.APPROVED, 0),
            approvals_rejected=decided.counts.get(ApprovalStatus.REJECTED, 0),
            approvals_expired=decided.counts.get(ApprovalStatus.EXPIRED, 0),
            median_decision_seconds=percentile(sorted(decided.waits), 0.5),
            runs_with_task=with_task.get(name, 0),
        )
    return result


def pending_counts(
    conn: Connection, pipelines: Iterable[str] | None = None
) -> dict[str, PendingCounts]:
    """Approvals pending and human tasks open now, per pipeline (only pipelines that have any)."""
    wanted = None if pipelines is None else sorted(set(pipelines))
    approvals = _count_waiting(conn, approvals_table, ApprovalStatus.PENDING, wanted)
    tasks = _count_waiting(conn, tasks_table, TaskStatus.OPEN, wanted)
    return {
        name: PendingCounts(approvals=approvals.get(name, 0), tasks=tasks.get(name, 0))
        for name in sorted(set(approvals) | set(tasks))
    }


# -- the queries ---------------------------------------------------------------------------------


def _only(query: Select[Any], pipelines: list[str] | None) -> Select[Any]:
    return query if pipelines is None else query.where(runs_table.c.pipeline.in_(pipelines))


def _filter_only(conn: Connection, column: ColumnElement[str]) -> ColumnElement[str]:
    """The column as a plain filter, never an index key, on SQLite (see `storage.alerts`):
    without statistics its planner prefers `pipeline IN (...)` or `status IN (...)` on another
    index to the `finished_at` range, and reads every run of those pipelines or statuses."""
    return cast(column, Text) if conn.dialect.name == "sqlite" else column


def _finished_range(since: datetime, until: datetime) -> Any:
    finished_at = runs_table.c.finished_at
    return (finished_at >= since, finished_at <= until)


def _finished_only(
    conn: Connection, query: Select[Any], pipelines: list[str] | None
) -> Select[Any]:
    query = query.where(
        _filter_only(conn, runs_table.c.status).in_(sorted(str(s) for s in FINISHED_RUN_STATUSES))
    )
    if pipelines is not None:
        query = query.where(_filter_only(conn, runs_table.c.pipeline).in_(pipelines))
    return query


def _volume(
    conn: Connection, since: datetime, until: datetime, pipelines: list[str] | None
) -> dict[str, int]:
    """Runs created in the window, counted per pipeline on `ix_runs_pipeline_created`: one
    range count per pipeline, instead of a pass over the whole index or a table lookup per run.
    Without `pipelines`, the names come from a skip scan of the same index (a recursive query,
    one seek a name), all in one statement."""
    params = {"since": since, "until": until}
    types = {"since": UTCDateTime(), "until": UTCDateTime()}
    if pipelines is None:
        names_sql = (
            "WITH RECURSIVE names(name) AS ("
            " SELECT min(pipeline) FROM runs"
            " UNION ALL SELECT (SELECT min(pipeline) FROM runs WHERE pipeline > names.name)"
            " FROM names WHERE names.name IS NOT NULL)"
            " SELECT name, (SELECT count(*) FROM runs WHERE pipeline = names.name"
            " AND created_at >= :since AND created_at <= :until) FROM names"
            " WHERE name IS NOT NULL"
        )
        statement = text(names_sql).bindparams(*(bindparam(k, type_=t) for k, t in types.items()))
        rows = conn.execute(statement, params)
    elif not pipelines:
        return {}
    else:
        created_at = runs_table.c.created_at
        rows = conn.execute(
            union_all(
                *(
                    select(literal(name), func.count()).where(
                        runs_table.c.pipeline == name, created_at >= since, created_at <= until
                    )
                    for name in pipelines
                )
            )
        )
    return {str(name): int(count) for name, count in rows if count}


def _outcomes(
    conn: Connection, since: datetime, until: datetime, pipelines: list[str] | None
) -> dict[str, dict[str, int]]:
    """One range scan of the covering index `ix_runs_finished_pipeline_status`, grouped by
    (pipeline, status); statuses that are not final (none, normally) are dropped here."""
    query = (
        select(runs_table.c.pipeline, runs_table.c.status, func.count())
        .where(*_finished_range(since, until))
        .group_by(runs_table.c.pipeline, runs_table.c.status)
    )
    if pipelines is not None:
        query = query.where(_filter_only(conn, runs_table.c.pipeline).in_(pipelines))
    finished = {str(s) for s in FINISHED_RUN_STATUSES}
    found: dict[str, dict[str, int]] = {}
    for name, status, count in conn.execute(query):
        if str(status) in finished:
            found.setdefault(name, {})[str(status)] = int(count)
    return found


def _latency(
    conn: Connection,
    since: datetime,
    until: datetime,
    pipelines: list[str] | None,
    finished: dict[str, int],
) -> dict[str, tuple[float | None, float | None]]:
    """Exact percentiles for a window of at most `EXACT_LATENCY_RUNS` finished runs. Above
    that, the same interpolation over a systematic sample of the window (`_sample_slices`),
    except for quiet pipelines (at most `QUIET_PIPELINE_RUNS` finished), still measured exactly
    so a small pipeline never gets its percentiles from a handful of runs."""
    if sum(finished.values()) <= EXACT_LATENCY_RUNS:
        return _latency_exact(conn, since, until, pipelines)
    slices = _sample_slices(since, until, sum(finished.values()))
    quiet = sorted(name for name, n in finished.items() if n <= QUIET_PIPELINE_RUNS)
    busy = sorted(set(finished) - set(quiet))
    result = _latency_exact(conn, since, until, quiet) if quiet else {}
    if busy:
        if conn.dialect.name == "postgresql":
            result.update(_latency_postgres(conn, since, until, busy, slices))
        else:
            result.update(_latency_sampled_sqlite(conn, busy, slices))
    return result


def _latency_exact(
    conn: Connection, since: datetime, until: datetime, pipelines: list[str] | None
) -> dict[str, tuple[float | None, float | None]]:
    if conn.dialect.name == "postgresql":
        return _latency_postgres(conn, since, until, pipelines, None)
    return _latency_fetched(conn, since, until, pipelines)


def _sample_slices(
    since: datetime, until: datetime, finished: int
) -> list[tuple[datetime, datetime]]:
    """Time slices that hold about `LATENCY_SAMPLE_RUNS` of the window's finished runs.

    Systematic sampling on `finished_at`: the window is cut in `SAMPLE_STRATA` equal strata and
    the same random offset picks a slice of each, the last wrapping round to the start, so every
    instant of the window (every run) is in the sample with the same chance. The offset is drawn
    from a generator seeded with the window, so the same window always gives the same numbers."""
    span = until - since
    stratum = span / SAMPLE_STRATA
    length = stratum * min(1.0, LATENCY_SAMPLE_RUNS / finished)
    rng = random.Random(f"{since.isoformat()}|{until.isoformat()}")
    offset = stratum * rng.random()
    slices: list[tuple[datetime, datetime]] = []
    for k in range(SAMPLE_STRATA):
        start = since + stratum * k + offset
        end = start + length
        if end > until:
            slices.append((start, until))
            slices.append((since, since + (end - until)))
        else:
            slices.append((start, end))
    return slices


def _in_slices(slices: list[tuple[datetime, datetime]]) -> Any:
    finished_at = runs_table.c.finished_at
    return or_(*(and_(finished_at >= a, finished_at < b) for a, b in slices))


def _latency_postgres(
    conn: Connection,
    since: datetime,
    until: datetime,
    pipelines: list[str] | None,
    slices: list[tuple[datetime, datetime]] | None,
) -> dict[str, tuple[float | None, float | None]]:
    seconds = cast(extract("epoch", runs_table.c.finished_at - runs_table.c.created_at), Float)
    query = (
        select(
            runs_table.c.pipeline,
            *(func.percentile_cont(p).within_group(seconds) for p in PERCENTILES),
        )
        .where(*_finished_range(since, until))
        .group_by(runs_table.c.pipeline)
    )
    if slices is not None:
        query = query.where(_in_slices(slices))
    return {
        row[0]: (_float_or_none(row[1]), _float_or_none(row[2]))
        for row in conn.execute(_finished_only(conn, query, pipelines))
    }


def _latency_sampled_sqlite(
    conn: Connection, pipelines: list[str] | None, slices: list[tuple[datetime, datetime]]
) -> dict[str, tuple[float | None, float | None]]:
    """The sample's durations computed in SQL (`julianday`, to well under a millisecond), one
    `finished_at` range per slice in a UNION ALL so each is an index range scan."""
    finished_at, created_at = runs_table.c.finished_at, runs_table.c.created_at
    seconds = (func.julianday(finished_at) - func.julianday(created_at)) * 86400.0
    parts = [
        _finished_only(
            conn,
            select(runs_table.c.pipeline, seconds).where(finished_at >= a, finished_at < b),
            pipelines,
        )
        for a, b in slices
    ]
    durations: dict[str, list[float]] = {}
    for name, value in conn.execute(union_all(*parts)):
        durations.setdefault(name, []).append(max(0.0, float(value)))
    return _percentiles(durations)


def _latency_fetched(
    conn: Connection, since: datetime, until: datetime, pipelines: list[str] | None
) -> dict[str, tuple[float | None, float | None]]:
    """SQLite has no percentile function: fetch the two timestamps of each finished run (the
    typed columns give exact aware datetimes) and interpolate like `percentile_cont`."""
    query = select(runs_table.c.pipeline, runs_table.c.created_at, runs_table.c.finished_at).where(
        *_finished_range(since, until)
    )
    durations: dict[str, list[float]] = {}
    for name, created_at, finished_at in conn.execute(_finished_only(conn, query, pipelines)):
        durations.setdefault(name, []).append((finished_at - created_at).total_seconds())
    return _percentiles(durations)


def _percentiles(durations: dict[str, list[float]]) -> dict[str, tuple[float | None, float | None]]:
    result = {}
    for name, values in durations.items():
        values.sort()
        result[name] = (percentile(values, PERCENTILES[0]), percentile(values, PERCENTILES[1]))
    return result


def _costs(
    conn: Connection, since: datetime, until: datetime, pipelines: list[str] | None
) -> dict[str, tuple[float, int, int, int, int]]:
    """(sum of cost_usd, LLM calls, LLM calls with a cost, prompt tokens, completion tokens) of
    the runs created in the window.

    `meta["cost_usd"].as_float()` is SQLite's `json_extract` and PostgreSQL's `->>` cast to a
    float; a JSON null or a missing key is SQL NULL, which SUM and COUNT skip."""
    cost = calls_table.c.meta["cost_usd"].as_float()
    prompt = calls_table.c.meta["prompt_tokens"].as_integer()
    completion = calls_table.c.meta["completion_tokens"].as_integer()
    query = (
        select(
            runs_table.c.pipeline,
            func.sum(cost),
            func.count(),
            func.count(cost),
            func.sum(prompt),
            func.sum(completion),
        )
        .select_from(calls_table.join(runs_table, runs_table.c.id == calls_table.c.run_id))
        .where(
            calls_table.c.kind == str(CallKind.LLM),
            runs_table.c.created_at >= since,
            runs_table.c.created_at <= until,
        )
        .group_by(runs_table.c.pipeline)
    )
    return {
        row[0]: (float(row[1] or 0.0), int(row[2]), int(row[3]), int(row[4] or 0), int(row[5] or 0))
        for row in conn.execute(_only(query, pipelines))
    }


@dataclass
class _Decisions:
    counts: dict[str, int] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)


def _approvals(
    conn: Connection, since: datetime, until: datetime, pipelines: list[str] | None
) -> dict[str, _Decisions]:
    """Approvals *requested* in the window that are no longer pending, by status, and the
    waits (decided_at - requested_at) of those a person approved or rejected. Read from
    `ix_approvals_status_requested`; approvals are a small share of calls, so the waits are
    fetched and their median is exact."""
    requested_at = approvals_table.c.requested_at
    query = (
        select(
            runs_table.c.pipeline,
            approvals_table.c.status,
            requested_at,
            approvals_table.c.decided_at,
        )
        .select_from(approvals_table.join(runs_table, runs_table.c.id == approvals_table.c.run_id))
        .where(
            approvals_table.c.status.in_(
                [
                    str(ApprovalStatus.APPROVED),
                    str(ApprovalStatus.REJECTED),
                    str(ApprovalStatus.EXPIRED),
                ]
            ),
            requested_at >= since,
            requested_at <= until,
        )
    )
    found: dict[str, _Decisions] = {}
    for name, status, asked, decided_at in conn.execute(_only(query, pipelines)):
        entry = found.setdefault(name, _Decisions())
        entry.counts[str(status)] = entry.counts.get(str(status), 0) + 1
        if status != ApprovalStatus.EXPIRED and decided_at is not None:
            entry.waits.append(max(0.0, (decided_at - asked).total_seconds()))
    return found


def _runs_with_task(
    conn: Connection, since: datetime, until: datetime, pipelines: list[str] | None
) -> dict[str, int]:
    """Runs created in the window (the same runs as `runs`) that opened at least one human task.

    Driven from `human_tasks` (far fewer rows than runs): `id IN (tasks' run ids)` makes each
    task's run one key lookup. A join let SQLite start from the window's runs instead and probe
    the tasks once for each (about 300 ms for a week at a million runs)."""
    created_at = runs_table.c.created_at
    query = (
        select(runs_table.c.pipeline, func.count())
        .where(
            runs_table.c.id.in_(select(tasks_table.c.run_id)),
            created_at >= since,
            created_at <= until,
        )
        .group_by(runs_table.c.pipeline)
    )
    return {row[0]: int(row[1]) for row in conn.execute(_only(query, pipelines))}


def _count_waiting(
    conn: Connection, table: Table, status: str, pipelines: list[str] | None
) -> dict[str, int]:
    query = (
        select(runs_table.c.pipeline, func.count())
        .select_from(table.join(runs_table, runs_table.c.id == table.c.run_id))
        .where(table.c.status == status)
        .group_by(runs_table.c.pipeline)
    )
    return {row[0]: int(row[1]) for row in conn.execute(_only(query, pipelines))}


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
