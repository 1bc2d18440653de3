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
  Linear interpolation between the closest ranks, i.e. PostgreSQL's `percentile_cont`. Exact
  while the window is read from `runs` alone; once the stats rollups (`storage.stats_rollups`)
  cover part of it, they come from the latency histogram, **within ±5.93 % of the exact value
  plus at most 1 ms)** — the bins are in `storage.latency`. `latencies` holds what they came
  from, so windows and pipelines merge (`pipelines.operations.stats` adds up the overall row).
- `prompt_tokens`, `completion_tokens`: sums of those `meta` keys over the same LLM calls as
  `llm_cost_usd` (calls that did not report them count 0).
- `approvals_approved`, `_rejected`, `_expired`: approvals *requested* in the window, by their
  decision so far (pending ones are in `pending_counts`); `median_decision_seconds` is the
  median of `decided_at - requested_at` over the approved and rejected ones (None without any;
  `decision_waits` keeps them for the overall row).
- `runs_with_task`: runs created in the window that opened a human task;
  `human_task_rate = runs_with_task / runs`.
- `llm_cost_usd`: the sum of `meta.cost_usd` over the LLM calls of the runs *created* in the
  window (the same runs as `runs`); `llm_calls` counts those calls and `priced_llm_calls` the
  ones with a known cost (no price configured, or no model: the cost is unknown and left out).
  `cost_per_run = llm_cost_usd / runs` — every run in the denominator, with or without LLM
  calls (None when there are no runs).

Where the numbers are read from: `runs`, `finished`, `by_status` and the latencies come from the
hourly and daily rollups for the whole hours and days of the window that are rolled, and from
`runs` for the rest (its ragged ends and the tail after the rollups' watermark); both give the
same counts. Cost, tokens, approvals and human tasks are read from their tables, plus what pruned runs held
(`storage.prune`), kept per pipeline and hour: over whole hours, pruning changes no number.

Pending work (`pending_counts`) is not windowed: approvals still `pending` and human tasks
still `open` right now, per pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    func,
    literal,
    select,
    text,
    union_all,
)

from storage.approvals import approvals_table, tasks_table
from storage.calls import calls_table
from storage.latency import Latencies, merged, percentile
from storage.models import FINISHED_RUN_STATUSES, ApprovalStatus, CallKind, RunStatus, TaskStatus
from storage.prune import KeptStats, kept_stats
from storage.runs import runs_table
from storage.stats_rollups import (
    DAY,
    HOUR,
    Bucket,
    ceil_day,
    ceil_hour,
    floor_day,
    floor_hour,
    read_progress,
    rolled_buckets,
    run_seconds,
)
from storage.types import UTCDateTime

ERROR_STATUSES = frozenset({RunStatus.FAILED, RunStatus.NEEDS_ATTENTION})
PERCENTILES = (0.5, 0.95)

__all__ = ["PendingCounts", "WindowStats", "pending_counts", "percentile", "window_stats"]


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
    # What the percentiles came from, for merging windows (not part of the numbers shown).
    latencies: Latencies = field(default_factory=Latencies, compare=False, repr=False)
    decision_waits: tuple[float, ...] = field(default=(), compare=False, repr=False)

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


def window_stats(
    conn: Connection,
    *,
    since: datetime,
    until: datetime,
    pipelines: Iterable[str] | None = None,
    use_rollups: bool = True,
) -> dict[str, WindowStats]:
    """Every pipeline with runs created or finished in the window (or only `pipelines`, each
    present even without runs), keyed by name. `use_rollups=False` reads everything from `runs`
    (the reference the rollups are tested against; slow over a busy week)."""
    wanted = None if pipelines is None else sorted(set(pipelines))
    found = _run_numbers(conn, since, until, wanted, use_rollups)
    costs = _costs(conn, since, until, wanted)
    approvals = _approvals(conn, since, until, wanted)
    with_task = _runs_with_task(conn, since, until, wanted)
    _add_pruned(kept_stats(conn, since, until, wanted), costs, approvals, with_task)
    names = set(wanted or ()) | {n for n, b in found.items() if b.created or b.by_status}
    result = {}
    for name in sorted(names):
        bucket = found.get(name, Bucket())
        by_status = bucket.by_status
        cost, calls, priced, prompt, completion = costs.get(name, (0.0, 0, 0, 0, 0))
        decided = approvals.get(name, _Decisions())
        waits = tuple(sorted(decided.waits))
        result[name] = WindowStats(
            pipeline=name,
            since=since,
            until=until,
            runs=bucket.created,
            finished=sum(by_status.values()),
            errors=sum(n for status, n in by_status.items() if status in ERROR_STATUSES),
            by_status=dict(sorted(by_status.items())),
            p50_seconds=bucket.latencies.percentile(PERCENTILES[0]),
            p95_seconds=bucket.latencies.percentile(PERCENTILES[1]),
            llm_cost_usd=cost,
            llm_calls=calls,
            priced_llm_calls=priced,
            prompt_tokens=prompt,
            completion_tokens=completion,
            approvals_approved=decided.counts.get(ApprovalStatus.APPROVED, 0),
            approvals_rejected=decided.counts.get(ApprovalStatus.REJECTED, 0),
            approvals_expired=decided.counts.get(ApprovalStatus.EXPIRED, 0),
            median_decision_seconds=percentile(waits, 0.5),
            runs_with_task=with_task.get(name, 0),
            latencies=bucket.latencies,
            decision_waits=waits,
        )
    return result


def _add_pruned(
    kept: dict[str, KeptStats],
    costs: dict[str, tuple[float, int, int, int, int]],
    approvals: dict[str, _Decisions],
    with_task: dict[str, int],
) -> None:
    """Add what pruned runs held (`storage.prune`: their calls, approvals and tasks are gone;
    their counts and latencies are in the rollups) to the numbers read from the tables."""
    for name, k in kept.items():
        cost, calls, priced, prompt, completion = costs.get(name, (0.0, 0, 0, 0, 0))
        costs[name] = (
            cost + k.llm_cost_usd,
            calls + k.llm_calls,
            priced + k.priced_llm_calls,
            prompt + k.prompt_tokens,
            completion + k.completion_tokens,
        )
        decided = approvals.setdefault(name, _Decisions())
        for status, n in k.approvals.items():
            decided.counts[status] = decided.counts.get(status, 0) + n
        decided.waits.extend(k.decision_waits)
        if k.runs_with_task:
            with_task[name] = with_task.get(name, 0) + k.runs_with_task


def overall_latencies(windows: Iterable[WindowStats]) -> Latencies:
    """Every window's latencies together (exact while all of them are)."""
    return merged(w.latencies for w in windows)


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


# -- volume, outcomes and latency: rollups and runs ---------------------------------------------


@dataclass(frozen=True)
class _Piece:
    """A part of the window: rolled rows of `span` starting in `[since, until)`, or (span None)
    runs read from `runs` with `since <= t < until` (`<= until` when `inclusive`)."""

    since: datetime
    until: datetime
    span: timedelta | None = None
    inclusive: bool = False


def window_pieces(
    conn: Connection, since: datetime, until: datetime, *, use_rollups: bool = True
) -> list[_Piece]:
    """`[since, until]` cut into whole rolled days, whole rolled hours and the rest (raw)."""
    progress = read_progress(conn) if use_rollups else None
    if progress is None or progress.hours_until is None:
        return [_Piece(since, until, inclusive=True)]
    first_hour = ceil_hour(since)
    end_hour = min(floor_hour(until), progress.hours_until)
    if first_hour >= end_hour:
        return [_Piece(since, until, inclusive=True)]
    pieces = [_Piece(since, first_hour)]
    first_day = ceil_day(first_hour)
    end_day = min(floor_day(end_hour), progress.days_until or first_day)
    if first_day < end_day:
        pieces.append(_Piece(first_hour, first_day, HOUR))
        pieces.append(_Piece(first_day, end_day, DAY))
        pieces.append(_Piece(end_day, end_hour, HOUR))
    else:
        pieces.append(_Piece(first_hour, end_hour, HOUR))
    pieces.append(_Piece(end_hour, until, inclusive=True))
    return [p for p in pieces if p.since < p.until or p.inclusive]


def _run_numbers(
    conn: Connection,
    since: datetime,
    until: datetime,
    pipelines: list[str] | None,
    use_rollups: bool,
) -> dict[str, Bucket]:
    total: dict[str, Bucket] = {}
    for piece in window_pieces(conn, since, until, use_rollups=use_rollups):
        if piece.span is not None:
            found = rolled_buckets(conn, piece.span, piece.since, piece.until, pipelines)
        else:
            found = _raw_numbers(conn, piece, pipelines)
        for name, bucket in found.items():
            into = total.setdefault(name, Bucket())
            into.created += bucket.created
            for status, n in bucket.by_status.items():
                into.by_status[status] = into.by_status.get(status, 0) + n
            into.latencies.add(bucket.latencies)
    return total


def _raw_numbers(conn: Connection, piece: _Piece, pipelines: list[str] | None) -> dict[str, Bucket]:
    found = {name: Bucket(created=n) for name, n in _volume(conn, piece, pipelines).items()}
    finished = {str(s) for s in FINISHED_RUN_STATUSES}
    durations: dict[str, list[float]] = {}
    for name, status, seconds in conn.execute(_finished_in(conn, piece, pipelines)):
        if str(status) not in finished:
            continue
        bucket = found.setdefault(name, Bucket())
        bucket.by_status[str(status)] = bucket.by_status.get(str(status), 0) + 1
        durations.setdefault(name, []).append(float(seconds))
    for name, values in durations.items():
        found[name].latencies = Latencies.of(values)
    return found


def _only(query: Select[Any], pipelines: list[str] | None) -> Select[Any]:
    return query if pipelines is None else query.where(runs_table.c.pipeline.in_(pipelines))


def _filter_only(conn: Connection, column: ColumnElement[str]) -> ColumnElement[str]:
    """The column as a plain filter, never an index key, on SQLite (see `storage.alerts`):
    without statistics its planner prefers `pipeline IN (...)` or `status IN (...)` on another
    index to the `finished_at` range, and reads every run of those pipelines or statuses."""
    return cast(column, Text) if conn.dialect.name == "sqlite" else column


def _finished_in(conn: Connection, piece: _Piece, pipelines: list[str] | None) -> Select[Any]:
    """(pipeline, status, seconds from creation to finish) of the piece's finished runs, from
    the `finished_at` range (statuses checked by the caller: a `status IN (...)` condition
    tempts SQLite onto `ix_runs_status_wake`). The seconds are computed in SQL, as the
    roll-up computes them (`run_seconds`): fetching both timestamps as datetimes cost more
    than the rest of the window's reading."""
    finished_at = runs_table.c.finished_at
    query = select(runs_table.c.pipeline, runs_table.c.status, run_seconds(conn)).where(
        finished_at >= piece.since,
        finished_at <= piece.until if piece.inclusive else finished_at < piece.until,
    )
    if pipelines is not None:
        query = query.where(_filter_only(conn, runs_table.c.pipeline).in_(pipelines))
    return query


def _volume(conn: Connection, piece: _Piece, pipelines: list[str] | None) -> dict[str, int]:
    """Runs created in the piece, counted per pipeline on `ix_runs_pipeline_created`: one
    range count per pipeline, instead of a pass over the whole index or a table lookup per run.
    Without `pipelines`, the names come from a skip scan of the same index (a recursive query,
    one seek a name), all in one statement."""
    params = {"since": piece.since, "until": piece.until}
    types = {"since": UTCDateTime(), "until": UTCDateTime()}
    before = "<=" if piece.inclusive else "<"
    if pipelines is None:
        names_sql = (
            "WITH RECURSIVE names(name) AS ("
            " SELECT min(pipeline) FROM runs"
            " UNION ALL SELECT (SELECT min(pipeline) FROM runs WHERE pipeline > names.name)"
            " FROM names WHERE names.name IS NOT NULL)"
            " SELECT name, (SELECT count(*) FROM runs WHERE pipeline = names.name"
            f" AND created_at >= :since AND created_at {before} :until) FROM names"
            " WHERE name IS NOT NULL"
        )
        statement = text(names_sql).bindparams(*(bindparam(k, type_=t) for k, t in types.items()))
        rows = conn.execute(statement, params)
    elif not pipelines:
        return {}
    else:
        created_at = runs_table.c.created_at
        end = created_at <= piece.until if piece.inclusive else created_at < piece.until
        rows = conn.execute(
            union_all(
                *(
                    select(literal(name), func.count()).where(
                        runs_table.c.pipeline == name, created_at >= piece.since, end
                    )
                    for name in pipelines
                )
            )
        )
    return {str(name): int(count) for name, count in rows if count}


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
