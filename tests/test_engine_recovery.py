"""At most once, in-process: a "crash" (a BaseException that is not an Exception) in the middle
of a run leaves it `running`; another worker takes it over when the lease runs out and never
repeats an effect it cannot prove did not happen."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pipelines import Gatehouse
from pipelines.inspect import run_history
from tests import engine_pipelines as ep
from tests.fakes.clock import FakeClock

LEASE = timedelta(seconds=30)


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


def _crash(gatehouse: Gatehouse, pipeline: str) -> Any:
    """Trigger `pipeline` and let it die mid-run; return the run as the database left it."""
    with pytest.raises(ep.Crash):
        gatehouse.trigger(pipeline, {"item": "widget", "amount": 9}, user="carol")
    [run] = gatehouse.runs(pipeline=pipeline)
    return gatehouse.run(run.id)


def test_crash_inside_a_tool_leaves_the_run_running_and_the_call_started(
    gatehouse: Gatehouse,
) -> None:
    ep.flags["crash"] = True

    run = _crash(gatehouse, "t_crashing_charge")

    assert run.status == "running"
    assert run.finished_at is None
    assert [(c.key, c.status) for c in run.calls] == [
        ("t_before#1", "succeeded"),
        ("t_charge#1", "started"),
    ]
    assert run.calls[1].idempotency_key == f"{run.id}:t_charge#1"
    assert ep.executions["t_charge"] == 1


def test_reclaimed_run_does_not_repeat_a_non_idempotent_tool_and_needs_attention(
    any_db_url: str, clock: FakeClock
) -> None:
    with ep.engines(any_db_url, clock) as make:
        dead = make("worker-dead", lease=LEASE)
        ep.flags["crash"] = True
        run = _crash(dead, "t_crashing_charge")
        key = f"{run.id}:t_charge#1"

        survivor = make("worker-alive", lease=LEASE)
        worker = survivor.worker()
        clock.advance(LEASE - timedelta(seconds=1))
        assert worker.run_one() is None, "the lease has not run out: the owner may be alive"

        clock.advance(timedelta(seconds=2))
        outcome = worker.run_one()

        assert outcome is not None and outcome.status == "needs_attention"
        after = survivor.run(run.id)
        assert after.status == "needs_attention"
        assert after.error is not None
        assert key in after.error and "not idempotent" in after.error
        assert after.finished_at is not None
        charge = after.calls[1]
        assert (charge.status, charge.idempotency_key) == ("outcome_unknown", key)
        assert ep.executions["t_charge"] == 1, "no silent second charge"
        assert ep.executions["after_charge"] == 0
        assert ep.executions["before_charge"] == 1
        history = run_history(survivor.rt, run.id)
        assert any(
            t["detail"] == "reclaimed from worker-dead by worker-alive"
            for t in history["transitions"]
        )
        unknown = [a for a in history["audit"] if a["event"] == "tool.outcome_unknown"]
        assert [a["idempotency_key"] for a in unknown] == [key]
        assert worker.run_until_idle() == 0


def test_reclaimed_run_retries_an_idempotent_tool_with_the_same_key_and_succeeds(
    any_db_url: str, clock: FakeClock
) -> None:
    with ep.engines(any_db_url, clock) as make:
        dead = make("worker-dead", lease=LEASE)
        ep.flags["crash"] = True
        run = _crash(dead, "t_crashing_idempotent_charge")
        key = f"{run.id}:t_charge_once#1"
        assert run.calls[1].status == "started"

        survivor = make("worker-alive", lease=LEASE)
        clock.advance(LEASE + timedelta(seconds=1))
        assert survivor.worker().run_until_idle() == 1

        after = survivor.run(run.id)
        assert after.status == "succeeded", after.error
        assert after.output == f"r-{key}"
        assert ep.executions["t_charge_once"] == 2, "the idempotent tool ran again"
        assert ep.effects["t_charge_once"] == [("widget", 9, key)], "and charged once"
        assert ep.executions["before_charge"] == 1
        assert ep.executions["after_charge"] == 1
        audit = run_history(survivor.rt, run.id)["audit"]
        retried = [a for a in audit if a["event"] == "tool.retried"]
        assert [a["idempotency_key"] for a in retried] == [key]


def test_crash_in_a_step_before_the_tool_reruns_the_step_and_calls_the_tool_once(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    ep.flags["crash_in_step"] = "before_charge"
    run = _crash(gatehouse, "t_crashing_charge")
    assert run.calls == [], "a step that never returned is not recorded"

    clock.advance(timedelta(minutes=10))  # the default lease is 5 minutes
    survivor = Gatehouse(gatehouse.db, clock=clock, worker_id="worker-alive")
    assert survivor.worker().run_until_idle() == 1

    after = gatehouse.run(run.id)
    assert after.status == "succeeded", after.error
    assert ep.executions["before_charge"] == 2
    assert ep.executions["t_charge"] == 1


def test_crash_after_a_tool_returned_does_not_repeat_the_tool(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    ep.flags["crash_in_step"] = "after_charge"
    run = _crash(gatehouse, "t_crashing_charge")
    assert [c.status for c in run.calls] == ["succeeded", "succeeded"]

    clock.advance(timedelta(minutes=10))
    survivor = Gatehouse(gatehouse.db, clock=clock, worker_id="worker-alive")
    assert survivor.worker().run_until_idle() == 1

    after = gatehouse.run(run.id)
    assert after.status == "succeeded", after.error
    assert ep.executions["t_charge"] == 1
    assert ep.executions["after_charge"] == 2
