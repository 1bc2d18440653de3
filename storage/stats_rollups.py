"""Stats rollups: finished runs per pipeline and hour (and UTC day), kept off the hot path.

`roll_up` is run every minute by `gatehouse serve` (and before `gatehouse stats`). It never
adds to a row: it recomputes a range of hours from `runs` and replaces their rows, so running
it twice, or on two replicas, gives the same rows. Each call claims its range first by moving
the watermark in `stats_rollup_progress` with a compare-and-set (on PostgreSQL a second
replica's UPDATE waits for the first one's commit, then matches nothing and backs off).

- An hour `[h, h + 1 h)` is rolled once it ended `LAG` ago; a run counts in the hour of its
  `finished_at` (outcome, latency) and in the hour of its `created_at` (volume), however long
  it ran. The hour before the watermark is recomputed with the next one, for a run whose
  transaction committed after its hour was rolled (its `finished_at` is the time it computed
  before committing).
- A UTC day is rolled from its 24 hour rows once its last hour is past that repair.
- The readers (`storage.stats`) take whole days and hours from here and the rest of a window
  (its ragged ends and the tail after the watermark) from `runs`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Integer,
    Table,
    cast,
    delete,
    extract,
    func,
    insert,
    literal,
    select,
    update,
)

from storage.latency import Latencies, histogram, pack, packed_sum
from storage.models import FINISHED_RUN_STATUSES, StatsRollup, StatsRollupProgress
from storage.rows import StatsRollupRow
from storage.runs import runs_table

rollups_table: Table = StatsRollup.__table__  # type: ignore[assignment]
progress_table: Table = StatsRollupProgress.__table__  # type: ignore[assignment]

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
LAG = timedelta(minutes=2)  # an hour is rolled this long after it ended
REPAIR = HOUR  # the rolled hour recomputed with the next (late commits)
# The most one call rolls: a first roll-up over old history takes many short transactions, not
# one that holds SQLite's write lock for minutes (a week at a million runs a month: ~40 s).
CHUNK = timedelta(hours=6)
PROGRESS = "runs"
STATUS_COLUMNS = tuple(sorted(str(s) for s in FINISHED_RUN_STATUSES))


@dataclass
class Bucket:
    """The numbers of one pipeline over some time: rolled rows and runs read live add up here."""

    created: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    latencies: Latencies = field(default_factory=Latencies)

    def add_row(self, row: StatsRollupRow) -> None:
        self.created += int(row.created)
        for status in STATUS_COLUMNS:
            n = int(getattr(row, status))
            if n:
                self.by_status[status] = self.by_status.get(status, 0) + n
        self.latencies.add(Latencies.rolled(packed_sum([row.latency_histogram])))


@dataclass(frozen=True)
class Progress:
    hours_until: datetime | None
    days_until: datetime | None


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floor = floor_hour(moment)
    return floor if floor == moment else floor + HOUR


def floor_day(moment: datetime) -> datetime:
    return floor_hour(moment).replace(hour=0)


def ceil_day(moment: datetime) -> datetime:
    floor = floor_day(moment)
    return floor if floor == moment else floor + DAY


def run_seconds(conn: Connection) -> ColumnElement[float]:
    """A run's `finished_at - created_at` in seconds, computed in SQL (the roll-up and the
    readers use this one expression, so a run falls in the same histogram bin either way):
    exact to the microsecond on both. SQLite stores `YYYY-MM-DD HH:MM:SS.ffffff` (UTC): whole
    seconds from `strftime('%s')` plus the difference of the fractions (`julianday` would be
    off by up to ~50 µs)."""
    finished_at, created_at = runs_table.c.finished_at, runs_table.c.created_at
    if conn.dialect.name == "postgresql":
        return cast(extract("epoch", finished_at - created_at), Float)

    def whole(column: Any) -> Any:
        return cast(func.strftime("%s", column), Integer)

    def fraction(column: Any) -> Any:
        return cast(func.substr(column, 20), Float)

    seconds: ColumnElement[float] = (whole(finished_at) - whole(created_at)) + (
        fraction(finished_at) - fraction(created_at)
    )
    return seconds


def read_progress(conn: Connection) -> Progress:
    row = conn.execute(
        select(progress_table.c.hours_until, progress_table.c.days_until).where(
            progress_table.c.name == PROGRESS
        )
    ).first()
    return Progress(None, None) if row is None else Progress(row[0], row[1])


@dataclass(frozen=True)
class RollUpResult:
    """What one call did: the hours it rolled (`[since, until)`, none if `since is None`)."""

    since: datetime | None = None
    until: datetime | None = None
    days: int = 0

    @property
    def rolled(self) -> bool:
        return self.since is not None


def roll_up(conn: Connection, *, now: datetime, worker: str) -> RollUpResult:
    """Roll the hours that ended `LAG` before `now` and are not rolled yet (at most `CHUNK`
    of them), re-roll the hour before them, then the days whose hours are final. Returns
    what it rolled; nothing when another caller claimed the range first or nothing is due."""
    _ensure_progress_row(conn)
    progress = read_progress(conn)
    target = floor_hour(now - LAG)
    if progress.hours_until is None:
        first = _first_activity(conn)
        start = target if first is None else min(floor_hour(first), target)
    elif progress.hours_until >= target:
        return RollUpResult()
    else:
        start = progress.hours_until - REPAIR
    end = min(target, max(start, progress.hours_until or start) + CHUNK)
    days_until = progress.days_until or floor_day(start)
    days_end = max(days_until, floor_day(end - REPAIR))
    claimed = conn.execute(
        update(progress_table)
        .where(
            progress_table.c.name == PROGRESS,
            _is(progress_table.c.hours_until, progress.hours_until),
            _is(progress_table.c.days_until, progress.days_until),
        )
        .values(hours_until=end, days_until=days_end, rolled_by=worker, rolled_at=now)
    )
    if claimed.rowcount != 1:
        return RollUpResult()
    if start < end:
        _replace_hours(conn, start, end)
    days = _replace_days(conn, days_until, days_end) if days_until < days_end else 0
    return RollUpResult(start, end, days)


def rolled_buckets(
    conn: Connection,
    span: timedelta,
    since: datetime,
    until: datetime,
    pipelines: Iterable[str] | None,
) -> dict[str, Bucket]:
    """The rows of `span` starting in `[since, until)`, added up per pipeline.

    One row per pipeline comes back: the counts summed in SQL and the packed histograms
    (`storage.latency.pack`) joined into one string, which Python adds up as integers: no row
    object and no dict update per hour and bin (a week is ~1,500 rows, ~50,000 bins, with 50
    pipelines)."""
    t = rollups_table
    if conn.dialect.name == "postgresql":
        histograms: Any = func.string_agg(t.c.latency_histogram, literal(" "))
    else:
        histograms = func.group_concat(t.c.latency_histogram, literal(" "))
    query = (
        select(
            t.c.pipeline,
            func.sum(t.c.created),
            *(func.sum(t.c[status]) for status in STATUS_COLUMNS),
            histograms,
        )
        .where(
            t.c.span_seconds == int(span.total_seconds()),
            t.c.bucket_start >= since,
            t.c.bucket_start < until,
        )
        .group_by(t.c.pipeline)
    )
    if pipelines is not None:
        query = query.where(t.c.pipeline.in_(sorted(pipelines)))
    found: dict[str, Bucket] = {}
    for name, created, *counts, gathered in conn.execute(query):
        by_status = {s: int(n) for s, n in zip(STATUS_COLUMNS, counts, strict=True) if n}
        packed = packed_sum((gathered or "").split(" "))
        found[name] = Bucket(int(created), by_status, Latencies.rolled(packed))
    return found


# -- writing -------------------------------------------------------------------------------------


def _ensure_progress_row(conn: Connection) -> None:
    if read_progress_row_exists(conn):
        return
    statement: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement = pg_insert(progress_table).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(progress_table).on_conflict_do_nothing()
    conn.execute(statement, {"name": PROGRESS})


def read_progress_row_exists(conn: Connection) -> bool:
    query = select(progress_table.c.name).where(progress_table.c.name == PROGRESS)
    return conn.execute(query).first() is not None


def _is(column: ColumnElement[datetime | None], value: datetime | None) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def _first_activity(conn: Connection) -> datetime | None:
    """The earliest `created_at` (a run finishes after it is created), from `ix_runs_created`."""
    value: datetime | None = conn.execute(
        select(runs_table.c.created_at).order_by(runs_table.c.created_at).limit(1)
    ).scalar()
    return value


def _replace_hours(conn: Connection, since: datetime, until: datetime) -> None:
    """Recompute every (hour, pipeline) row of `[since, until)` from `runs` and replace them."""
    rows: dict[tuple[datetime, str], _HourRow] = {}
    created_at, finished_at = runs_table.c.created_at, runs_table.c.finished_at
    finished = {str(s) for s in FINISHED_RUN_STATUSES}
    outcomes = select(
        runs_table.c.pipeline, runs_table.c.status, finished_at, run_seconds(conn)
    ).where(finished_at >= since, finished_at < until)
    for name, status, done, seconds in conn.execute(outcomes):
        if str(status) not in finished:
            continue
        row = rows.setdefault((floor_hour(done), name), _HourRow())
        row.by_status[str(status)] = row.by_status.get(str(status), 0) + 1
        row.durations.append(float(seconds))
    volume = select(runs_table.c.pipeline, created_at).where(
        created_at >= since, created_at < until
    )
    for name, created in conn.execute(volume):
        rows.setdefault((floor_hour(created), name), _HourRow()).created += 1
    conn.execute(
        delete(rollups_table).where(
            rollups_table.c.span_seconds == int(HOUR.total_seconds()),
            rollups_table.c.bucket_start >= since,
            rollups_table.c.bucket_start < until,
        )
    )
    values = [
        _row_values(HOUR, start, name, row.created, row.by_status, histogram(row.durations))
        for (start, name), row in sorted(rows.items())
    ]
    if values:
        conn.execute(insert(rollups_table), values)


@dataclass
class _HourRow:
    created: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)


def _replace_days(conn: Connection, since: datetime, until: datetime) -> int:
    """Add up the hour rows of each UTC day in `[since, until)` into its day row."""
    days: dict[tuple[datetime, str], Bucket] = {}
    hours = select(rollups_table).where(
        rollups_table.c.span_seconds == int(HOUR.total_seconds()),
        rollups_table.c.bucket_start >= since,
        rollups_table.c.bucket_start < until,
    )
    for row in (StatsRollupRow(*r) for r in conn.execute(hours)):
        days.setdefault((floor_day(row.bucket_start), row.pipeline), Bucket()).add_row(row)
    conn.execute(
        delete(rollups_table).where(
            rollups_table.c.span_seconds == int(DAY.total_seconds()),
            rollups_table.c.bucket_start >= since,
            rollups_table.c.bucket_start < until,
        )
    )
    values = [
        _row_values(DAY, start, name, b.created, b.by_status, b.latencies.bins())
        for (start, name), b in sorted(days.items())
    ]
    if values:
        conn.execute(insert(rollups_table), values)
    return len({start for start, _ in days})


def _row_values(
    span: timedelta,
    start: datetime,
    pipeline: str,
    created: int,
    by_status: dict[str, int],
    counts: dict[int, int],
) -> dict[str, Any]:
    return {
        "span_seconds": int(span.total_seconds()),
        "bucket_start": start,
        "pipeline": pipeline,
        "created": created,
        **{status: by_status.get(status, 0) for status in STATUS_COLUMNS},
        "latency_histogram": pack(counts),
    }
