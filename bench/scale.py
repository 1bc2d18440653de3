"""Benchmark: the reading jobs at scale — 1,000,000 runs over 30 days in 50 pipelines.

    python bench/scale.py [--runs 1000000] [--repeats 15] [--postgres URL] [--fresh]

Seeds the runs straight through the driver (executemany on SQLite, COPY on PostgreSQL; the
engine would take hours), then times, as the median of several repeats:

- the weekly review's pick of 20 runs of the last 7 days (`pipelines.operations.review`, when present);
- one alert evaluation over the 50 pipelines (`pipelines.operations.alerts.evaluate`): the steady minute
  (nothing changes), and a minute that opens an alert (the alert is deleted between repeats);
- `gatehouse runs --pipeline P --limit 20` (`storage.queries.list_runs`);
- the 7-day stats of every pipeline (`pipelines.operations.stats.pipeline_stats`), read from the hourly and
  daily rollups (`storage.stats_rollups`, rolled once after seeding, as `gatehouse serve` keeps
  them) plus the last hour from `runs`; and, for comparison, the same read from `runs` alone;
- the roll-up job itself: a minute with nothing due, and a minute that rolls one hour.

Target: each under 100 ms median on SQLite. The seeded SQLite file is cached under /tmp (keyed
by the seed parameters and the migrations' text) and the PostgreSQL data in its own schema, so a
second run skips the seeding; `--fresh` seeds again. Run by hand; not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, text

from pipelines import Gatehouse
from pipelines.logs import configure_logging
from pipelines.operations.alerting import AlertPolicy, Thresholds
from pipelines.operations.alerts import evaluate
from pipelines.operations.stats import WEEK, pipeline_stats, roll_up_stats
from storage import queries, stats_rollups
from storage.alerts import alerts_table
from storage.db import MIGRATIONS_DIR, Database
from storage.stats import window_stats

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # the end of the seeded history
DAYS = 30
PIPELINES = 50
CACHE_DIR = Path("/tmp/gatehouse-bench")
PG_SCHEMA = "bench_scale"
SPIKING = "pipeline_07"  # fails 45% of 40 runs in the last 10 minutes
SPIKE_RUNS = 40

# (status, share) of finished runs; a few runs of the last hour are still in flight.
STATUS_MIX = [
    ("succeeded", 0.905),
    ("failed", 0.03),
    ("needs_attention", 0.01),
    ("rejected", 0.02),
    ("invalid_input", 0.025),
    ("cancelled", 0.01),
]
IN_FLIGHT = [("queued", 0.3), ("running", 0.2), ("waiting", 0.5)]
ERRORS = [
    "ToolFailed: crm.add_lead: 503 Service Unavailable",
    "StepFailed: classify: the model's answer failed validation 3 times",
    "ToolFailed: issue_refund: card_declined",
    "TimeoutError: upstream took longer than 30s",
    "KeyError: 'customer_email'",
    "NeedsAttention: send_email started but its outcome is unknown",
]
RUN_COLUMNS = (
    "id, pipeline, status, input, output, error, trigger_user, trigger, created_at, "
    "started_at, finished_at, updated_at"
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedRun:
    id: str
    pipeline: str
    status: str
    error: str | None
    created_at: datetime
    finished_at: datetime | None


def pipeline_names() -> list[str]:
    return [f"pipeline_{i:02d}" for i in range(PIPELINES)]


def generate_runs(count: int, seed: int = 7) -> Iterator[SeedRun]:
    """`count` runs in created order: a few busy pipelines and a long tail (Zipf-like), mostly
    seconds long with some waiting hours for a person, and the status mix above."""
    rng = random.Random(seed)
    names = pipeline_names()
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(names))]
    statuses = [s for s, _ in STATUS_MIX]
    shares = [w for _, w in STATUS_MIX]
    span = DAYS * 86400.0
    start = NOW - timedelta(days=DAYS)
    offsets = sorted(rng.random() * span for _ in range(count - SPIKE_RUNS))
    chosen = rng.choices(names, weights=weights, k=len(offsets))
    for offset, name in zip(offsets, chosen, strict=True):
        created = start + timedelta(seconds=offset)
        # Most runs take seconds; one in twenty waits for an approval or a human (minutes to hours).
        took = rng.lognormvariate(0.7, 0.8)
        if rng.random() < 0.05:
            took += rng.expovariate(1 / 3600)
        finished = created + timedelta(seconds=took)
        if finished > NOW:
            status = rng.choices([s for s, _ in IN_FLIGHT], [w for _, w in IN_FLIGHT])[0]
            yield SeedRun(_run_id(rng), name, status, None, created, None)
            continue
        status = rng.choices(statuses, shares)[0]
        error = rng.choice(ERRORS) if status in ("failed", "needs_attention") else None
        yield SeedRun(_run_id(rng), name, status, error, created, finished)
    # The spike: the last 10 minutes of one pipeline go wrong.
    for i in range(SPIKE_RUNS):
        created = NOW - timedelta(minutes=10) + timedelta(seconds=15 * i)
        failed = i % 20 < 9
        yield SeedRun(
            _run_id(rng),
            SPIKING,
            "failed" if failed else "succeeded",
            ERRORS[i % 2] if failed else None,
            created,
            created + timedelta(seconds=1),
        )


def _run_id(rng: random.Random) -> str:
    return f"run_{rng.getrandbits(64):016x}"


def _sqlite_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


# -- SQLite ------------------------------------------------------------------------------------


def schema_key() -> str:
    """A digest of every migration's text: a changed schema means a new seed."""
    digest = hashlib.sha256()
    for path in sorted(Path(MIGRATIONS_DIR, "versions").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def sqlite_path(runs: int) -> Path:
    return CACHE_DIR / f"scale-{runs}-{PIPELINES}p-{DAYS}d-schema{schema_key()}.db"


def roll_up_seeded(url: str) -> None:
    """Roll the seeded history up to `NOW`, as the serve job would have (a week a call)."""
    database = Database(url)
    started = time.perf_counter()
    hours = roll_up_stats(Gatehouse(database).rt, now=NOW, catch_up=True)
    log(f"  rolled {hours:,} hours of stats in {time.perf_counter() - started:.1f}s")
    database.dispose()


def seed_sqlite(runs: int, fresh: bool) -> str:
    path = sqlite_path(runs)
    if path.exists() and not fresh:
        log(f"SQLite: reusing {path}")
        return f"sqlite:///{path}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    for leftover in CACHE_DIR.glob(partial.name + "*"):
        leftover.unlink()
    Database(f"sqlite:///{partial}").upgrade()
    started = time.perf_counter()
    conn = sqlite3.connect(partial, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-400000")
    # Indexes are rebuilt once at the end: far faster than keeping five up to date per row.
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs' "
        "AND sql IS NOT NULL"
    ).fetchall()
    for name, _sql in indexes:
        conn.execute(f"DROP INDEX {name}")
    conn.execute("BEGIN")
    batch: list[tuple[Any, ...]] = []
    sql = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * 12)})"
    for n, run in enumerate(generate_runs(runs)):
        created = _sqlite_time(run.created_at)
        finished = _sqlite_time(run.finished_at)
        batch.append(
            (
                run.id,
                run.pipeline,
                run.status,
                f'{{"n": {n}}}',
                None,
                run.error,
                None,
                "schedule",
                created,
                created,
                finished,
                finished or created,
            )
        )
        if len(batch) == 50_000:
            conn.executemany(sql, batch)
            batch.clear()
    conn.executemany(sql, batch)
    conn.execute("COMMIT")
    for _name, index_sql in indexes:
        conn.execute(index_sql)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    roll_up_seeded(f"sqlite:///{partial}")
    for suffix in ("-wal", "-shm"):
        Path(str(partial) + suffix).unlink(missing_ok=True)
    partial.rename(path)
    log(f"SQLite: seeded {runs:,} runs in {time.perf_counter() - started:.1f}s into {path}")
    return f"sqlite:///{path}"


# -- PostgreSQL --------------------------------------------------------------------------------


def postgres_schema_url(url: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{PG_SCHEMA}"


def seed_postgres(url: str, runs: int, fresh: bool) -> str:
    import psycopg

    from storage.db import normalize_url

    admin = create_engine(normalize_url(url))
    target = postgres_schema_url(url)
    with admin.begin() as conn:
        exists = conn.execute(
            text(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = :s AND table_name = 'runs'"
            ),
            {"s": PG_SCHEMA},
        ).first()
        marker = (
            conn.execute(text(f"SELECT obj_description('\"{PG_SCHEMA}\".runs'::regclass)")).scalar()
            if exists
            else None
        )
    if marker == f"seeded {runs} schema {schema_key()}" and not fresh:
        admin.dispose()
        log(f"PostgreSQL: reusing schema {PG_SCHEMA}")
        return target
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{PG_SCHEMA}"'))
    admin.dispose()
    Database(target).upgrade()
    started = time.perf_counter()
    plain = normalize_url(url).replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=False, options=f"-csearch_path={PG_SCHEMA}") as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
            "AND tablename = 'runs' AND indexname <> 'runs_pkey'",
            (PG_SCHEMA,),
        ).fetchall()
        for name, _sql in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        with conn.cursor().copy(f"COPY runs ({RUN_COLUMNS}) FROM STDIN") as copy:
            for n, run in enumerate(generate_runs(runs)):
                copy.write_row(
                    (
                        run.id,
                        run.pipeline,
                        run.status,
                        json.dumps({"n": n}),
                        None,
                        run.error,
                        None,
                        "schedule",
                        run.created_at,
                        run.created_at,
                        run.finished_at,
                        run.finished_at or run.created_at,
                    )
                )
        for _name, index_sql in indexes:
            conn.execute(index_sql)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE runs")  # what autovacuum does after a load
    roll_up_seeded(target)
    with psycopg.connect(plain, autocommit=True, options=f"-csearch_path={PG_SCHEMA}") as conn:
        conn.execute("VACUUM ANALYZE stats_rollups")
        conn.execute(f"COMMENT ON TABLE runs IS 'seeded {runs} schema {schema_key()}'")
    log(f"PostgreSQL: seeded {runs:,} runs in {time.perf_counter() - started:.1f}s")
    return target


# -- timing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    name: str
    median_ms: float | None
    p90_ms: float | None = None
    note: str = ""
    cpu_ms: float | None = None  # this process's CPU time (median): less bent by a busy machine


def timed(
    name: str,
    work: Callable[[], Any],
    repeats: int,
    *,
    before: Callable[[], Any] | None = None,
    note: str = "",
) -> Timing:
    work()  # warm: statement caches, the page cache
    samples = []
    cpu = []
    for _ in range(repeats):
        if before is not None:
            before()
        started, started_cpu = time.perf_counter(), time.process_time()
        work()
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    samples.sort()
    p90 = samples[min(len(samples) - 1, int(len(samples) * 0.9))]
    return Timing(name, statistics.median(samples), p90, note, statistics.median(cpu))


def review_picks(database: Database) -> list[tuple[str, Callable[[], Any] | str]]:
    """The weekly review's pick (`pipelines.operations.review.pick_runs` over the 7-day window), uniform
    and stratified: a callable each, or why it cannot be timed."""
    name, stratified_name = "weekly pick, 20 of the last 7 days", "weekly pick, stratified"
    try:
        from pipelines.operations import review
        from storage.review import Window
    except ImportError:
        return [(name, "pipelines/operations/review.py is not there yet")]
    try:
        window = Window(NOW - review.WINDOW, NOW, review.REVIEWABLE_STATUSES)
    except (AttributeError, TypeError) as exc:
        return [(name, f"pipelines.operations.review changed its API ({exc})")]

    def pick(stratify: bool) -> Callable[[], Any]:
        def work() -> Any:
            with database.transaction() as conn:
                picked = review.pick_runs(conn, window, 20, stratify=stratify, rng=random.Random())
            assert len(picked) == 20, picked
            return picked

        return work

    found: list[tuple[str, Callable[[], Any] | str]] = []
    for label, stratify in ((name, False), (stratified_name, True)):
        try:
            pick(stratify)()
        except (AttributeError, TypeError) as exc:
            found.append((label, f"pipelines.operations.review.pick_runs changed its API ({exc})"))
        else:
            found.append((label, pick(stratify)))
    return found


def measure(url: str, repeats: int) -> list[Timing]:
    database = Database(url)
    gatehouse = Gatehouse(database)
    rt = gatehouse.rt
    policy = AlertPolicy()
    busiest = "pipeline_00"
    median_pipeline = f"pipeline_{PIPELINES // 2:02d}"

    def clear_alerts() -> None:
        with database.transaction() as conn:
            conn.execute(delete(alerts_table))

    def list_runs(pipeline: str) -> Callable[[], Any]:
        def work() -> Any:
            with database.transaction() as conn:
                return queries.list_runs(conn, pipeline=pipeline, limit=20)

        return work

    results = []
    for name, pick in review_picks(database):
        if isinstance(pick, str):
            results.append(Timing(name, None, note=pick))
        else:
            results.append(timed(name, pick, repeats))
    clear_alerts()
    opened = evaluate(rt, policy, now=NOW)
    assert [c.alert.pipeline for c in opened] == [SPIKING], opened
    results.append(
        timed(
            "alert evaluation, steady (1 alert open)",
            lambda: evaluate(rt, policy, now=NOW),
            repeats,
        )
    )
    results.append(
        timed(
            "alert evaluation that opens an alert",
            lambda: evaluate(rt, policy, now=NOW),
            repeats,
            before=clear_alerts,
        )
    )
    everyone_spikes = AlertPolicy(default=Thresholds(threshold=0.0, factor=1.0, min_volume=1))
    results.append(
        timed(
            "alert evaluation, worst case: 50 baselines",
            lambda: evaluate(rt, everyone_spikes, now=NOW),
            repeats,
            before=clear_alerts,
            note="every pipeline over its threshold: 50 alerts opened each time",
        )
    )
    clear_alerts()
    results.append(timed(f"runs --pipeline {busiest} --limit 20", list_runs(busiest), repeats))
    results.append(
        timed(
            f"runs --pipeline {median_pipeline} --limit 20",
            list_runs(median_pipeline),
            repeats,
        )
    )
    results.append(
        timed(
            "7-day stats, every pipeline",
            lambda: pipeline_stats(rt, now=NOW, windows=(WEEK,)),
            repeats,
            note="rollups + the last hour from runs",
        )
    )

    def stats_from_runs() -> Any:
        with database.transaction() as conn:
            return window_stats(conn, since=NOW - WEEK, until=NOW, use_rollups=False)

    results.append(
        timed(
            "7-day stats from runs alone",
            stats_from_runs,
            max(3, repeats // 5),
            note="no rollups: the reference, not a target",
        )
    )
    results.extend(roll_up_timings(database, repeats))
    database.dispose()
    return results


def roll_up_timings(database: Database, repeats: int) -> list[Timing]:
    """The serve job's minute: nothing due (the usual minute), and the minute that rolls the
    hour that just ended (the last seeded hour, re-rolled each repeat by moving the watermark
    back one hour)."""
    progress = stats_rollups.progress_table

    def tick(now: datetime) -> Callable[[], Any]:
        def work() -> Any:
            with database.transaction() as conn:
                return stats_rollups.roll_up(conn, now=now, worker="bench")

        return work

    def move_back() -> None:
        with database.transaction() as conn:
            conn.execute(
                progress.update().values(
                    hours_until=stats_rollups.floor_hour(NOW - stats_rollups.LAG),
                    days_until=stats_rollups.floor_day(NOW - stats_rollups.LAG),
                )
            )

    quiet = timed("roll-up minute, nothing due", tick(NOW), repeats)
    hour = timed(
        "roll-up minute that rolls an hour",
        tick(NOW + stats_rollups.HOUR),
        repeats,
        before=move_back,
        note="~1,400 runs (and the hour before, again)",
    )
    move_back()
    return [quiet, hour]


def print_table(title: str, timings: list[Timing]) -> None:
    width = max(len(t.name) for t in timings)
    print(f"\n{title}")
    print(f"  {'work':<{width}}  {'median':>9}  {'p90':>9}  {'cpu':>9}  target < 100 ms")
    for t in timings:
        if t.median_ms is None:
            print(f"  {t.name:<{width}}  {'skipped':>9}  {'':>9}  {'':>9}  ({t.note})")
            continue
        verdict = "ok" if t.median_ms < 100 else "OVER"
        line = (
            f"  {t.name:<{width}}  {t.median_ms:>6.2f} ms  {t.p90_ms or 0:>6.2f} ms"
            f"  {t.cpu_ms or 0:>6.2f} ms  {verdict}"
        )
        print(line + (f"  ({t.note})" if t.note else ""))


def main() -> None:
    """Prints the load average first: on a shared machine the wall-clock medians follow it;
    the cpu column (this process only, so not PostgreSQL's own work) bends less."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--postgres", metavar="URL", help="also seed and time PostgreSQL")
    parser.add_argument("--fresh", action="store_true", help="seed again, ignoring the cache")
    parser.add_argument("--no-sqlite", action="store_true", help="only PostgreSQL")
    args = parser.parse_args()
    configure_logging("console", "error")
    log(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if not args.no_sqlite:
        url = seed_sqlite(args.runs, args.fresh)
        timings = measure(url, args.repeats)
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print_table(f"SQLite, {args.runs:,} runs, {PIPELINES} pipelines (load {load})", timings)
    if args.postgres:
        url = seed_postgres(args.postgres, args.runs, args.fresh)
        timings = measure(url, args.repeats)
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print_table(f"PostgreSQL, {args.runs:,} runs, {PIPELINES} pipelines (load {load})", timings)


if __name__ == "__main__":
    main()
