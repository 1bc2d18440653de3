"""Rate limits: counted from the audit table, shared by every process on the database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipelines import Gatehouse
from pipelines.inspect import run_history
from tests import engine_pipelines as ep
from tests.fakes.clock import FakeClock


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


def test_third_call_inside_the_window_waits_and_runs_when_the_window_frees(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    start = clock.now()
    first = gatehouse.trigger("t_limited_send", {"item": "a"})
    clock.advance(timedelta(minutes=1))
    second = gatehouse.trigger("t_limited_send", {"item": "b"})
    clock.advance(timedelta(minutes=1))
    third = gatehouse.trigger("t_limited_send", {"item": "c"})

    assert (first.status, second.status, third.status) == ("succeeded", "succeeded", "waiting")
    assert ep.executions["t_limited"] == 2
    [call] = gatehouse.run(third.id).calls
    assert (call.name, call.status) == ("t_limited", "rate_limited")
    history = run_history(gatehouse.rt, third.id)
    assert history["transitions"][-1]["to"] == "waiting"
    assert "rate limit of t_limited" in history["transitions"][-1]["detail"]
    limited = [a for a in history["audit"] if a["event"] == "tool.rate_limited"]
    assert len(limited) == 1
    assert limited[0]["detail"]["retry_at"] == (start + timedelta(hours=1)).isoformat()

    worker = gatehouse.worker()
    clock.advance(timedelta(minutes=57))  # 59 minutes after the first start
    assert worker.run_until_idle() == 0
    assert gatehouse.run(third.id).status == "waiting"

    clock.advance(timedelta(minutes=1))  # the first start leaves the window
    assert worker.run_until_idle() == 1

    finished = gatehouse.run(third.id)
    assert finished.status == "succeeded", finished.error
    assert finished.calls[0].status == "succeeded"
    assert ep.executions["t_limited"] == 3
    assert [item for item, _, _ in ep.effects["t_limited"]] == ["a", "b", "c"]


def test_window_slides_so_a_later_call_waits_for_the_next_oldest_start(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    start = clock.now()
    gatehouse.trigger("t_limited_send", {})
    clock.advance(timedelta(minutes=30))
    gatehouse.trigger("t_limited_send", {})
    clock.advance(timedelta(minutes=31))  # t+61m: the first start has left the window
    third = gatehouse.trigger("t_limited_send", {})
    fourth = gatehouse.trigger("t_limited_send", {})

    assert third.status == "succeeded"
    assert fourth.status == "waiting"
    worker = gatehouse.worker()
    clock.advance(start + timedelta(minutes=89) - clock.now())
    assert worker.run_until_idle() == 0
    clock.advance(timedelta(minutes=1))  # t+90m: the second start leaves the window
    assert worker.run_until_idle() == 1
    assert gatehouse.run(fourth.id).status == "succeeded"
    assert ep.executions["t_limited"] == 4


def test_tool_declared_to_reject_over_its_limit_rejects_the_run_and_never_sends(
    gatehouse: Gatehouse,
) -> None:
    runs = [gatehouse.trigger("t_limited_send_or_reject", {}) for _ in range(3)]

    assert [r.status for r in runs] == ["succeeded", "succeeded", "rejected"]
    assert runs[2].error is not None
    assert "t_limited_or_reject was rejected" in runs[2].error
    assert "rate limit 2/hour reached" in runs[2].error
    rejected = gatehouse.run(runs[2].id)
    assert rejected.status == "rejected"
    assert rejected.calls[0].status == "rejected"
    assert ep.executions["t_limited_or_reject"] == 2
    assert gatehouse.worker().run_until_idle() == 0


def test_two_gatehouses_on_one_database_share_the_limit(any_db_url: str, clock: FakeClock) -> None:
    with ep.engines(any_db_url, clock) as make:
        east = make("worker-east")
        west = make("worker-west")

        assert east.trigger("t_limited_send", {"item": "e1"}).status == "succeeded"
        assert west.trigger("t_limited_send", {"item": "w1"}).status == "succeeded"
        blocked_west = west.trigger("t_limited_send", {"item": "w2"})
        blocked_east = east.trigger("t_limited_send", {"item": "e2"})

        assert (blocked_west.status, blocked_east.status) == ("waiting", "waiting")
        assert ep.executions["t_limited"] == 2

        clock.advance(timedelta(hours=1, seconds=1))
        # Both windows free up together; the limit still lets only two through.
        assert west.worker().run_until_idle() == 2
        statuses = sorted(west.run(r.id).status for r in (blocked_west, blocked_east))
        assert statuses == ["succeeded", "succeeded"]
        assert ep.executions["t_limited"] == 4
        blocked = east.trigger("t_limited_send", {"item": "e3"})
        assert blocked.status == "waiting"
        assert ep.executions["t_limited"] == 4


def test_run_that_wakes_to_a_window_another_run_filled_waits_again(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    start = clock.now()
    gatehouse.trigger("t_limited_send", {})
    clock.advance(timedelta(minutes=10))
    gatehouse.trigger("t_limited_send", {})
    third = gatehouse.trigger("t_limited_send", {"item": "third"})
    fourth = gatehouse.trigger("t_limited_send", {"item": "fourth"})
    assert (third.status, fourth.status) == ("waiting", "waiting")

    clock.advance(start + timedelta(hours=1) - clock.now())  # one slot frees; both wake
    assert gatehouse.worker().run_until_idle() == 2

    statuses = {gatehouse.run(r.id).status for r in (third, fourth)}
    assert statuses == {"succeeded", "waiting"}, "one slot, one run; the other waits again"
    assert ep.executions["t_limited"] == 3
    clock.advance(timedelta(minutes=10))  # the second start leaves the window
    assert gatehouse.worker().run_until_idle() == 1
    assert {gatehouse.run(r.id).status for r in (third, fourth)} == {"succeeded"}
    assert ep.executions["t_limited"] == 4
