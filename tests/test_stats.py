"""Stats per pipeline (volume, error rate, p50/p95 latency, cost per run, pending) on real rows,
SQLite and PostgreSQL, checked against numbers worked out by hand."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import insert

from pipelines import Gatehouse, StaticDirectory
from pipelines.operations.stats import DAY, WEEK, pipeline_stats, roll_up_stats
from storage.calls import calls_table
from storage.db import Database
from storage.latency import ABSOLUTE_ERROR_SECONDS, RELATIVE_ERROR
from storage.runs import runs_table
from storage.stats import percentile
from tests import engine_pipelines as ep
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock

SMALL = {"order_id": "ord_1001", "amount": "12.50", "reason": "arrived scratched"}
LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}
HOUR = timedelta(hours=1)


@pytest.fixture
def engine(any_db_url: str, clock: FakeClock) -> Iterator[Gatehouse]:
    database = Database(any_db_url)
    yield Gatehouse(database, clock=clock, directory=StaticDirectory(GROUPS))
    database.dispose()


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


def add_run(
    gatehouse: Gatehouse,
    run_id: str,
    *,
    pipeline: str = "alpha",
    created: datetime,
    took: float | None,
    status: str,
) -> None:
    """A run row as the engine leaves it: finished ones have finished_at = created + took."""
    finished = None if took is None else created + timedelta(seconds=took)
    with gatehouse.db.transaction() as conn:
        conn.execute(
            insert(runs_table),
            {
                "id": run_id,
                "pipeline": pipeline,
                "status": status,
                "input": {"n": run_id},
                "created_at": created,
                "started_at": created,
                "finished_at": finished,
                "updated_at": finished or created,
            },
        )


def add_call(gatehouse: Gatehouse, run_id: str, seq: int, *, kind: str, meta: Any) -> None:
    with gatehouse.db.transaction() as conn:
        conn.execute(
            insert(calls_table),
            {
                "id": f"{run_id}_c{seq}",
                "run_id": run_id,
                "seq": seq,
                "key": f"c#{seq}",
                "kind": kind,
                "name": "c",
                "status": "succeeded",
                "started_at": gatehouse.rt.clock.now(),
                "meta": meta,
            },
        )


def seed_alpha(gatehouse: Gatehouse) -> datetime:
    """The rows the hand-computed numbers below are about (pipeline "alpha", not registered)."""
    now = gatehouse.rt.clock.now()
    add_run(gatehouse, "r1", created=now - 1 * HOUR, took=1, status="succeeded")
    add_run(gatehouse, "r2", created=now - 2 * HOUR, took=2, status="succeeded")
    add_run(gatehouse, "r3", created=now - 3 * HOUR, took=3, status="failed")
    add_run(gatehouse, "r4", created=now - 4 * HOUR, took=4, status="needs_attention")
    add_run(gatehouse, "r5", created=now - 5 * HOUR, took=10, status="rejected")
    add_run(gatehouse, "r6", created=now - 6 * HOUR, took=None, status="waiting")
    # created 2 days ago, finished an hour ago: in the 24 h outcomes, not in the 24 h volume
    add_run(
        gatehouse,
        "r7",
        created=now - 2 * DAY,
        took=(2 * DAY - HOUR).total_seconds(),
        status="succeeded",
    )
    add_run(gatehouse, "r8", created=now - 3 * DAY, took=0, status="invalid_input")
    add_run(gatehouse, "r9", created=now - 8 * DAY, took=30, status="failed")  # outside 7 d

    add_call(gatehouse, "r1", 0, kind="llm", meta={"model": "m", "cost_usd": 0.01})
    add_call(gatehouse, "r1", 1, kind="llm", meta={"model": "m", "cost_usd": 0.02})
    add_call(gatehouse, "r3", 0, kind="llm", meta={"model": None, "cost_usd": None})
    add_call(gatehouse, "r6", 0, kind="llm", meta={"model": "m"})
    add_call(gatehouse, "r6", 1, kind="step", meta={"cost_usd": 5.0})  # not an LLM call
    add_call(gatehouse, "r7", 0, kind="llm", meta={"cost_usd": 0.04})
    add_call(gatehouse, "r9", 0, kind="llm", meta={"cost_usd": 1.0})  # its run is too old
    return now


def test_last_24_hours_count_volume_by_creation_and_outcomes_by_finish(engine: Gatehouse) -> None:
    now = seed_alpha(engine)

    alpha = pipeline_stats(engine.rt, now=now).get("alpha")

    assert alpha is not None
    day = alpha.window(DAY)
    assert day is not None
    assert (day.since, day.until) == (now - DAY, now)
    assert day.runs == 6  # r1..r6
    assert day.finished == 6  # r1..r5 and r7
    assert day.by_status == {"failed": 1, "needs_attention": 1, "rejected": 1, "succeeded": 3}
    assert day.errors == 2
    assert day.error_rate == pytest.approx(2 / 6)
    # durations 1, 2, 3, 4, 10, 169200 s: p50 = 3 + 0.5 * (4 - 3), p95 = 10 + 0.75 * (169200 - 10)
    assert day.p50_seconds == pytest.approx(3.5)
    assert day.p95_seconds == pytest.approx(126902.5)
    # r1's two calls; r3's unknown cost and r6's missing key count as calls without a price
    assert (day.llm_calls, day.priced_llm_calls) == (4, 2)
    assert day.llm_cost_usd == pytest.approx(0.03)
    assert day.cost_per_run == pytest.approx(0.03 / 6)


def test_last_7_days_include_older_runs_and_leave_out_the_8_day_old_one(engine: Gatehouse) -> None:
    now = seed_alpha(engine)

    week = pipeline_stats(engine.rt, now=now).get("alpha").window(WEEK)  # type: ignore[union-attr]

    assert week is not None
    assert week.runs == 8
    assert week.finished == 7
    assert week.by_status["invalid_input"] == 1
    assert week.errors == 2
    assert week.error_rate == pytest.approx(2 / 7)
    # durations 0, 1, 2, 3, 4, 10, 169200 s: p50 = 3, p95 = 10 + 0.7 * (169200 - 10)
    assert week.p50_seconds == pytest.approx(3.0)
    assert week.p95_seconds == pytest.approx(118443.0)
    assert (week.llm_calls, week.priced_llm_calls) == (5, 3)
    assert week.llm_cost_usd == pytest.approx(0.07)
    assert week.cost_per_run == pytest.approx(0.07 / 8)


def test_a_given_window_ends_at_the_given_now(engine: Gatehouse) -> None:
    now = seed_alpha(engine)

    report = pipeline_stats(engine.rt, now=now, windows=[3 * HOUR], pipeline="alpha")

    assert [p.pipeline for p in report.pipelines] == ["alpha"]
    [window] = report.pipelines[0].windows
    assert window.runs == 3  # r1..r3 (r3 created exactly at the start: the window includes it)
    assert window.finished == 4  # r1, r2, r3, r7
    assert window.errors == 1
    # An hour earlier both ends are inclusive: r1 created at the end, r4 at the start, and r7
    # finished at the end; r1 had not finished yet.
    earlier = pipeline_stats(engine.rt, now=now - HOUR, windows=[3 * HOUR], pipeline="alpha")
    [window] = earlier.pipelines[0].windows
    assert (window.runs, window.finished, window.errors) == (4, 4, 2)  # r1..r4; r2, r3, r4, r7


def test_runs_of_the_shipped_refund_pipeline_and_what_waits_for_people(
    engine: Gatehouse, clock: FakeClock
) -> None:
    start = clock.now()
    small = engine.trigger("refund_request", SMALL, user="carol")
    large = engine.trigger("refund_request", LARGE, user="carol")
    invalid = engine.trigger("refund_request", {**SMALL, "order_id": "nope"}, user="carol")
    assert (small.status, large.status, invalid.status) == ("succeeded", "waiting", "invalid_input")
    clock.advance(timedelta(minutes=10))
    [approval] = engine.run(large.id).approvals
    engine.approve(approval.id, user="bob")
    assert engine.resume(large.id) is not None and engine.run(large.id).status == "succeeded"
    still_waiting = engine.trigger(
        "refund_request", {**LARGE, "order_id": "ord_1004"}, user="alice"
    )
    asked = engine.trigger("t_ask_price", {"item": "gizmo"}, user="carol")
    assert (still_waiting.status, asked.status) == ("waiting", "waiting")

    report = pipeline_stats(engine.rt)  # the engine's clock ends the windows

    assert report.now == start + timedelta(minutes=10)
    refunds = report.get("refund_request")
    assert refunds is not None
    day = refunds.window(DAY)
    assert day is not None
    assert (day.runs, day.finished, day.errors, day.error_rate) == (4, 3, 0, 0.0)
    assert day.by_status == {"invalid_input": 1, "succeeded": 2}
    # durations 0, 0, 600 s: p50 = 0, p95 = 0 + 0.9 * 600
    assert day.p50_seconds == pytest.approx(0.0)
    assert day.p95_seconds == pytest.approx(540.0)
    assert (day.llm_calls, day.llm_cost_usd, day.cost_per_run) == (0, 0.0, 0.0)
    assert (refunds.pending.approvals, refunds.pending.tasks) == (1, 0)
    ask = report.get("t_ask_price")
    assert ask is not None and (ask.pending.approvals, ask.pending.tasks) == (0, 1)
    # one approval decided (approved after 10 minutes), one still pending and not counted
    assert (day.approvals_approved, day.approvals_rejected, day.approvals_expired) == (1, 0, 0)
    assert day.median_decision_seconds == pytest.approx(600.0)
    assert (day.runs_with_task, day.human_task_rate) == (0, 0.0)
    ask_day = ask.window(DAY)
    assert ask_day is not None
    assert (ask_day.runs, ask_day.runs_with_task, ask_day.human_task_rate) == (1, 1, 1.0)
    assert ask_day.median_decision_seconds is None


def test_tokens_are_summed_over_the_llm_calls_of_the_runs_created_in_the_window(
    engine: Gatehouse,
) -> None:
    now = engine.rt.clock.now()
    add_run(engine, "t1", created=now - HOUR, took=1, status="succeeded")
    add_run(engine, "t2", created=now - 2 * DAY, took=1, status="succeeded")
    add_call(engine, "t1", 0, kind="llm", meta={"prompt_tokens": 120, "completion_tokens": 30})
    add_call(engine, "t1", 1, kind="llm", meta={"prompt_tokens": 80})  # no completion reported
    add_call(engine, "t1", 2, kind="step", meta={"prompt_tokens": 999})  # not an LLM call
    add_call(engine, "t2", 0, kind="llm", meta={"prompt_tokens": 5, "completion_tokens": 5})

    alpha = pipeline_stats(engine.rt, now=now).get("alpha")

    assert alpha is not None
    day, week = alpha.window(DAY), alpha.window(WEEK)
    assert day is not None and week is not None
    assert (day.prompt_tokens, day.completion_tokens, day.tokens) == (200, 30, 230)
    assert (week.prompt_tokens, week.completion_tokens) == (205, 35)


def test_every_registered_pipeline_is_listed_even_without_runs(engine: Gatehouse) -> None:
    report = pipeline_stats(engine.rt)

    refunds = report.get("refund_request")
    assert refunds is not None
    assert [w.window for w in refunds.windows] == [DAY, WEEK]
    for window in refunds.windows:
        assert (window.runs, window.finished, window.errors) == (0, 0, 0)
        assert window.error_rate is None and window.cost_per_run is None
        assert window.p50_seconds is None and window.p95_seconds is None
    assert refunds.pending.total == 0
    assert [p.pipeline for p in report.pipelines] == sorted(p.pipeline for p in report.pipelines)


@pytest.mark.parametrize("windows", [[], [timedelta(0)], [DAY, -HOUR]])
def test_windows_must_be_positive(engine: Gatehouse, windows: list[timedelta]) -> None:
    with pytest.raises(ValueError, match="window"):
        pipeline_stats(engine.rt, windows=windows)


def test_percentile_of_nothing_is_none_and_of_one_value_is_that_value() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=2, max_size=50))
def test_percentile_interpolates_like_percentile_cont(values: list[float]) -> None:
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    assert percentile(ordered, 0.5) == pytest.approx(cuts[49], rel=1e-9, abs=1e-6)
    assert percentile(ordered, 0.95) == pytest.approx(cuts[94], rel=1e-9, abs=1e-6)


def add_runs_fast(gatehouse: Gatehouse, rows: list[dict[str, Any]]) -> None:
    with gatehouse.db.transaction() as conn:
        conn.execute(insert(runs_table), rows)


def spread_runs(now: datetime, pipeline: str, count: int, seconds: Any) -> list[dict[str, Any]]:
    """`count` succeeded runs finishing evenly over the last 24 h, run i taking `seconds(i)`."""
    rows = []
    for i in range(count):
        finished = now - DAY * (i + 0.5) / count
        created = finished - timedelta(seconds=seconds(i))
        rows.append(
            {
                "id": f"run_{pipeline}_{i:05d}",
                "pipeline": pipeline,
                "status": "succeeded",
                "input": {},
                "created_at": created,
                "started_at": created,
                "finished_at": finished,
                "updated_at": finished,
            }
        )
    return rows


def test_a_rolled_window_estimates_percentiles_from_the_histogram_within_the_bound(
    engine: Gatehouse,
) -> None:
    now = engine.rt.clock.now()
    # durations 1..2000 s in a shuffled order (exact p50 = 1000.5, p95 = 1900.05)
    order = list(range(1, 2001))
    random.Random(7).shuffle(order)
    add_runs_fast(engine, spread_runs(now, "busy", 2000, lambda i: order[i]))
    add_runs_fast(engine, spread_runs(now, "quiet", 11, lambda i: i))  # 0..10 s
    exact = pipeline_stats(engine.rt, now=now, windows=[DAY])

    assert roll_up_stats(engine.rt, now=now, catch_up=True) > 0
    rolled = pipeline_stats(engine.rt, now=now, windows=[DAY])

    for name in ("busy", "quiet"):
        before = exact.get(name).window(DAY)  # type: ignore[union-attr]
        after = rolled.get(name).window(DAY)  # type: ignore[union-attr]
        assert before is not None and after is not None
        assert (after.runs, after.finished, after.by_status) == (
            before.runs,
            before.finished,
            before.by_status,
        )
        for got, want in (
            (after.p50_seconds, before.p50_seconds),
            (after.p95_seconds, before.p95_seconds),
        ):
            assert got is not None and want is not None
            assert abs(got - want) <= want * RELATIVE_ERROR + ABSOLUTE_ERROR_SECONDS
    busy = exact.get("busy").window(DAY)  # type: ignore[union-attr]
    assert busy is not None
    assert (busy.p50_seconds, busy.p95_seconds) == (pytest.approx(1000.5), pytest.approx(1900.05))


def test_overall_sums_every_pipeline_and_merges_latencies_and_decision_waits(
    engine: Gatehouse,
) -> None:
    now = seed_alpha(engine)
    add_run(engine, "b1", pipeline="beta", created=now - HOUR, took=5, status="failed")

    total = pipeline_stats(engine.rt, now=now).overall(DAY)

    assert (total.runs, total.finished, total.errors) == (7, 7, 3)
    assert total.by_status["failed"] == 2
    assert total.llm_cost_usd == pytest.approx(0.03)
    # durations 1, 2, 3, 4, 5, 10, 169200 s across both pipelines: p50 = 4,
    # p95 = 10 + 0.7 * (169200 - 10)
    assert total.p50_seconds == pytest.approx(4.0)
    assert total.p95_seconds == pytest.approx(118443.0)
