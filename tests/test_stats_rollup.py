"""Stats rollups: the numbers read through the hourly and daily rollups equal the numbers read
from `runs` alone (SQLite and PostgreSQL), with runs that finish long after they start, runs
committed after their hour was rolled and the live tail; percentiles stay within the stated
bound of the exact ones."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select, text, update

from storage import stats_rollups
from storage.db import Database
from storage.latency import (
    ABSOLUTE_ERROR_SECONDS,
    RELATIVE_ERROR,
    Latencies,
    bin_of,
    bin_value,
    histogram,
    histogram_percentile,
    pack,
    packed_sum,
    percentile,
    unpack,
)
from storage.runs import runs_table
from storage.stats import WindowStats, window_pieces, window_stats
from storage.stats_rollups import HOUR, LAG, rollups_table

NOW = datetime(2026, 11, 20, 14, 37, 12, 345678, tzinfo=UTC)
FINISHED = ["succeeded", "succeeded", "succeeded", "failed", "needs_attention", "rejected"]


@pytest.fixture
def database(any_db_url: str) -> Iterator[Database]:
    db = Database(any_db_url)
    yield db
    db.dispose()


def add_runs(db: Database, rows: list[dict[str, object]]) -> None:
    with db.transaction() as conn:
        conn.execute(insert(runs_table), rows)


def run_row(
    run_id: str, pipeline: str, created: datetime, took: float | None, status: str
) -> dict[str, object]:
    finished = None if took is None else created + timedelta(seconds=took)
    return {
        "id": run_id,
        "pipeline": pipeline,
        "status": status,
        "input": None,
        "created_at": created,
        "started_at": created,
        "finished_at": finished,
        "updated_at": finished or created,
    }


def seed_history(db: Database, count: int = 1500, seed: int = 3) -> None:
    """Ten days of three pipelines: mostly seconds, some waiting hours or days for a person
    (they finish in a later hour or day than they started), instant invalid input, and runs
    still in flight."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        created = NOW - timedelta(seconds=rng.uniform(0, 10 * 86400))
        pipeline = rng.choice(["alpha", "alpha", "beta", "gamma"])
        roll = rng.random()
        if roll < 0.05:
            took: float | None = rng.uniform(3600, 3 * 86400)  # a late finisher
        elif roll < 0.08:
            took = 0.0
        else:
            took = rng.lognormvariate(0.7, 1.0)
        status = "invalid_input" if took == 0.0 else rng.choice(FINISHED)
        if took is not None and created + timedelta(seconds=took) > NOW:
            took, status = None, "waiting"
        rows.append(run_row(f"r{n:05d}", pipeline, created, took, status))
    add_runs(db, rows)


def both_ways(db: Database, since: datetime, until: datetime) -> tuple[dict[str, WindowStats], ...]:
    with db.transaction() as conn:
        rolled = window_stats(conn, since=since, until=until)
        direct = window_stats(conn, since=since, until=until, use_rollups=False)
    return rolled, direct


def assert_same_numbers(rolled: dict[str, WindowStats], direct: dict[str, WindowStats]) -> None:
    assert rolled.keys() == direct.keys()
    for name, r in rolled.items():
        d = direct[name]
        assert (r.runs, r.finished, r.errors, r.by_status) == (
            d.runs,
            d.finished,
            d.errors,
            d.by_status,
        )
        assert r.latencies.bins() == d.latencies.bins()  # the same histogram, bin for bin
        assert d.latencies.exact is not None
        for fraction, got in ((0.5, r.p50_seconds), (0.95, r.p95_seconds)):
            exact = percentile(sorted(d.latencies.exact), fraction)
            assert_within_bound(got, exact)


def assert_within_bound(estimate: float | None, exact: float | None) -> None:
    assert (estimate is None) == (exact is None)
    if estimate is None or exact is None:
        return
    allowed = exact * RELATIVE_ERROR + ABSOLUTE_ERROR_SECONDS + 1e-9
    assert abs(estimate - exact) <= allowed, (estimate, exact)


def roll(db: Database, now: datetime) -> None:
    while True:
        with db.transaction() as conn:
            if not stats_rollups.roll_up(conn, now=now, worker="test").rolled:
                return


def test_rolled_windows_give_the_same_numbers_as_the_runs_themselves(database: Database) -> None:
    seed_history(database)
    roll(database, NOW)
    for since, until in [
        (NOW - timedelta(days=7), NOW),
        (NOW - timedelta(days=1), NOW),
        (NOW - timedelta(days=3, hours=5, minutes=17), NOW - timedelta(hours=2, seconds=3)),
        (NOW - timedelta(days=30), NOW + timedelta(hours=1)),
        (NOW - timedelta(minutes=30), NOW),
    ]:
        rolled, direct = both_ways(database, since, until)
        assert_same_numbers(rolled, direct)
    with database.transaction() as conn:
        spans = {p.span for p in window_pieces(conn, NOW - timedelta(days=7), NOW)}
    assert spans == {None, HOUR, stats_rollups.DAY}  # raw ends, hours and days all used


def test_the_live_tail_and_a_run_committed_after_its_hour_was_rolled_are_counted(
    database: Database,
) -> None:
    seed_history(database, count=300)
    # created a day ago and still waiting when the hours are rolled (counted in its created hour)
    add_runs(database, [run_row("tail", "alpha", NOW - timedelta(days=1), None, "waiting")])
    roll(database, NOW)
    with database.transaction() as conn:
        watermark = stats_rollups.read_progress(conn).hours_until
        assert watermark == NOW.replace(minute=0, second=0, microsecond=0)  # 14:00, LAG over
        # it fails now, in the live tail after the rolled hours
        conn.execute(
            update(runs_table)
            .where(runs_table.c.id == "tail")
            .values(status="failed", finished_at=NOW - timedelta(seconds=5))
        )
    # committed now, but its finished_at is in the last rolled hour (a clock behind, or a slow
    # commit): created and finished before the watermark
    add_runs(
        database, [run_row("late", "beta", watermark - timedelta(minutes=3), 60.0, "succeeded")]
    )
    week = (NOW - timedelta(days=7), NOW)
    rolled, direct = both_ways(database, *week)
    assert rolled["alpha"].errors == direct["alpha"].errors  # the tail is read from runs
    assert rolled["beta"].finished == direct["beta"].finished - 1  # missed until re-rolled
    assert rolled["beta"].runs == direct["beta"].runs - 1
    roll(database, NOW + HOUR)  # the next hour's roll-up recomputes the hour before it
    assert_same_numbers(*both_ways(database, *week))


def test_rolling_again_or_from_a_second_replica_changes_nothing(database: Database) -> None:
    seed_history(database, count=400)
    roll(database, NOW)

    def snapshot() -> list[tuple[object, ...]]:
        with database.transaction() as conn:
            query = select(rollups_table).order_by(
                rollups_table.c.span_seconds, rollups_table.c.bucket_start, rollups_table.c.pipeline
            )
            return [tuple(row)[1:] for row in conn.execute(query)]

    before = snapshot()
    assert before
    with database.transaction() as conn:
        assert not stats_rollups.roll_up(conn, now=NOW, worker="replica-2").rolled
        assert not stats_rollups.roll_up(conn, now=NOW + LAG / 2, worker="replica-2").rolled
    assert snapshot() == before
    with database.transaction() as conn:
        count = conn.execute(select(func.count()).select_from(rollups_table)).scalar()
    assert count == len(before)


@pytest.mark.postgres
def test_two_replicas_rolling_at_once_roll_the_range_once(postgres_url: str) -> None:
    database = Database(postgres_url)
    seed_history(database, count=300)
    roll(database, NOW - timedelta(days=1))
    outcome: dict[str, object] = {}
    with database.engine.connect() as first:
        with first.begin():
            claimed = stats_rollups.roll_up(first, now=NOW, worker="replica-1")
            assert claimed.rolled

            # replica 2 reads the old watermark and waits on replica 1's claim
            def second() -> None:
                with database.transaction() as conn:
                    outcome["pid"] = conn.execute(text("SELECT pg_backend_pid()")).scalar()
                    outcome["result"] = stats_rollups.roll_up(conn, now=NOW, worker="replica-2")

            thread = threading.Thread(target=second)
            thread.start()
            with database.engine.connect() as watcher:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    waiting = watcher.execute(
                        text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                        {"pid": outcome.get("pid", -1)},
                    ).scalar()
                    # pg_stat_activity is a snapshot taken once per transaction: end it so
                    # the next poll sees replica 2's state as it is now.
                    watcher.rollback()
                    if waiting == "Lock":
                        break
                    time.sleep(0.005)
                assert waiting == "Lock"  # replica 2 is blocked on replica 1's claim
        thread.join(timeout=30)
    result = outcome["result"]
    assert isinstance(result, stats_rollups.RollUpResult) and not result.rolled
    with database.transaction() as conn:
        assert stats_rollups.read_progress(conn).hours_until == claimed.until
    roll(database, NOW)
    assert_same_numbers(*both_ways(database, NOW - timedelta(days=7), NOW))
    database.dispose()


def test_a_first_roll_up_over_a_long_history_goes_a_chunk_at_a_time(database: Database) -> None:
    add_runs(
        database,
        [run_row(f"old{n}", "alpha", NOW - timedelta(days=n), 1.0, "succeeded") for n in range(20)],
    )
    calls = 0
    while True:
        with database.transaction() as conn:
            done = stats_rollups.roll_up(conn, now=NOW, worker="test")
        if not done.rolled:
            break
        assert done.until is not None and done.since is not None
        assert done.until - done.since <= stats_rollups.CHUNK + HOUR
        calls += 1
    assert calls == math.ceil(timedelta(days=19) / stats_rollups.CHUNK)  # 14:00 to 14:00
    assert_same_numbers(*both_ways(database, NOW - timedelta(days=25), NOW))


# -- the histogram -------------------------------------------------------------------------------


durations = st.lists(
    st.one_of(
        st.floats(min_value=0, max_value=0.002),
        st.floats(min_value=0, max_value=10),
        st.floats(min_value=0, max_value=5 * 86400),
    ),
    min_size=1,
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(durations, st.sampled_from([0.0, 0.05, 0.5, 0.9, 0.95, 0.99, 1.0]))
def test_histogram_percentiles_are_within_the_stated_bound(
    values: list[float], fraction: float
) -> None:
    exact = percentile(sorted(values), fraction)
    assert_within_bound(histogram_percentile(histogram(values), fraction), exact)


@given(st.floats(min_value=0, max_value=1e6))
def test_each_duration_is_within_the_bound_of_its_bins_value(seconds: float) -> None:
    assert_within_bound(bin_value(bin_of(seconds)), seconds)


def test_the_stated_resolution() -> None:
    assert pytest.approx(0.0593, abs=1e-4) == RELATIVE_ERROR  # what README and docstrings say
    assert histogram_percentile({}, 0.5) is None
    assert Latencies.of([0.0, 0.0]).percentile(0.5) == 0.0


bins = st.dictionaries(st.integers(0, 201), st.integers(0, 10**9), max_size=60)


@given(st.lists(bins, max_size=8))
def test_packed_histograms_add_up_like_the_bins(parts: list[dict[int, int]]) -> None:
    expected: dict[int, int] = {}
    for part in parts:
        for k, n in part.items():
            if n:
                expected[k] = expected.get(k, 0) + n
    assert unpack(packed_sum(pack(p) for p in parts)) == expected
    assert unpack(packed_sum([pack(expected)])) == expected
