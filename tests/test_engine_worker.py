"""The worker: queued runs are claimed oldest first; `run_until_idle` says how many it ran."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipelines import Gatehouse
from tests import engine_pipelines as ep
from tests.fakes.clock import FakeClock


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


def _queue(gatehouse: Gatehouse, clock: FakeClock, items: list[str]) -> list[str]:
    ids = []
    for item in items:
        run = gatehouse.trigger("t_crashing_charge", {"item": item}, run_here=False)
        assert run.status == "queued"
        ids.append(run.id)
        clock.advance(timedelta(seconds=1))
    return ids


def test_trigger_without_running_here_queues_the_run_and_runs_nothing(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("t_checkout", {"amount": 2}, user="carol", run_here=False)

    assert run.status == "queued"
    assert run.finished_at is None
    assert ep.executions == {}
    stored = gatehouse.run(run.id)
    assert (stored.status, stored.calls, stored.input) == (
        "queued",
        [],
        {"item": "widget", "amount": 2},
    )


def test_worker_claims_queued_runs_oldest_first(gatehouse: Gatehouse, clock: FakeClock) -> None:
    ids = _queue(gatehouse, clock, ["first", "second", "third"])
    worker = gatehouse.worker()

    order = []
    for _ in ids:
        outcome = worker.run_one()
        assert outcome is not None and outcome.status == "succeeded"
        order.append(outcome.output.removeprefix("r-").removesuffix(":t_charge#1"))

    assert order == ids
    assert [item for item, _, _ in ep.effects["t_charge"]] == ["first", "second", "third"]
    assert worker.run_one() is None
    assert worker.executed == 3


def test_run_until_idle_returns_how_many_runs_it_executed(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    ids = _queue(gatehouse, clock, ["a", "b"])
    waiting = gatehouse.trigger("t_pay_only", {}, user="carol", run_here=False)
    worker = gatehouse.worker()

    assert worker.run_until_idle() == 3
    assert [gatehouse.run(i).status for i in ids] == ["succeeded", "succeeded"]
    assert gatehouse.run(waiting.id).status == "waiting"
    assert worker.run_until_idle() == 0

    gatehouse.approve(gatehouse.run(waiting.id).waiting_for[0], user="alice")
    assert worker.run_until_idle() == 1
    assert gatehouse.run(waiting.id).status == "succeeded"


def test_run_until_idle_stops_at_max_runs(gatehouse: Gatehouse, clock: FakeClock) -> None:
    ids = _queue(gatehouse, clock, ["a", "b", "c"])

    assert gatehouse.worker().run_until_idle(max_runs=2) == 2

    assert [gatehouse.run(i).status for i in ids] == ["succeeded", "succeeded", "queued"]


def test_queued_run_is_claimed_once_by_two_workers(any_db_url: str, clock: FakeClock) -> None:
    with ep.engines(any_db_url, clock) as make:
        first, second = make("worker-1"), make("worker-2")
        ids = _queue(first, clock, ["a", "b", "c"])

        ran = 0
        while True:
            done = [w.run_one() for w in (first.worker(), second.worker())]
            ran += sum(outcome is not None for outcome in done)
            if all(outcome is None for outcome in done):
                break

        assert ran == 3
        assert [first.run(i).status for i in ids] == ["succeeded"] * 3
        assert ep.executions["t_charge"] == 3
