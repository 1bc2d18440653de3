"""Durable replay: a suspended run resumes from its record, and completed calls never run twice."""

from __future__ import annotations

import pytest

from pipelines import Gatehouse, StepFailed
from pipelines.inspect import run_history
from tests import engine_pipelines as ep
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


def _approval_of(gatehouse: Gatehouse, run_id: str) -> str:
    run = gatehouse.run(run_id)
    assert len(run.waiting_for) == 1, run
    return run.waiting_for[0]


def test_run_suspended_at_approval_resumes_after_decision_and_each_call_runs_once(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("t_checkout", {"item": "widget", "amount": 3}, user="carol")

    assert run.status == "waiting"
    assert ep.executions == {"make_quote": 1, "t_lookup": 1}
    approval_id = _approval_of(gatehouse, run.id)
    assert run.waiting_for == [approval_id]
    waiting = gatehouse.run(run.id)
    assert [(c.key, c.status) for c in waiting.calls] == [
        ("t_quote#1", "succeeded"),
        ("t_lookup#1", "succeeded"),
        ("t_pay#1", "awaiting_approval"),
    ]

    gatehouse.approve(approval_id, user="alice")
    assert gatehouse.run(run.id).status == "queued"
    assert ep.executions["t_pay"] == 0, "deciding must not run the tool by itself"

    finished = gatehouse.resume(run.id)

    assert finished is not None
    assert finished.status == "succeeded", finished.error
    assert ep.executions == {"make_quote": 1, "t_lookup": 1, "t_pay": 1, "confirm": 1}
    assert [(c.key, c.status) for c in finished.calls] == [
        ("t_quote#1", "succeeded"),
        ("t_lookup#1", "succeeded"),
        ("t_pay#1", "succeeded"),
        ("t_confirm#1", "succeeded"),
    ]
    assert finished.output["confirmation"] == f"confirmed r-{run.id}:t_pay#1"
    assert finished.waiting_for == []
    assert finished.finished_at is not None


def test_resuming_a_finished_run_again_runs_nothing(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("t_checkout", {"amount": 3}, user="carol")
    gatehouse.approve(_approval_of(gatehouse, run.id), user="alice")
    gatehouse.resume(run.id)
    before = dict(ep.executions)

    assert gatehouse.resume(run.id) is None
    assert gatehouse.worker().run_until_idle() == 0
    assert ep.executions == before


@pytest.mark.parametrize("resume_with", ["worker", "resume"])
def test_run_resumes_on_a_fresh_gatehouse_with_another_worker_id(
    any_db_url: str, clock: FakeClock, resume_with: str
) -> None:
    with ep.engines(any_db_url, clock) as make:
        first = make("worker-a")
        run = first.trigger("t_checkout", {"item": "gear", "amount": 2}, user="carol")
        assert run.status == "waiting"
        first.approve(_approval_of(first, run.id), user="bob")
        first.db.dispose()  # the first "process" is gone

        second = make("worker-b")
        if resume_with == "worker":
            assert second.worker().run_until_idle() == 1
        else:
            assert second.resume(run.id) is not None
        finished = second.run(run.id)

        assert finished.status == "succeeded", finished.error
        assert finished.output["price_cents"] == 200
        assert ep.executions == {"make_quote": 1, "t_lookup": 1, "t_pay": 1, "confirm": 1}
        claims = [t["detail"] for t in run_history(second.rt, run.id)["transitions"]]
        assert "worker-b" in claims


def test_step_returning_a_pydantic_model_gets_the_model_back_on_replay(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("t_checkout", {"item": "widget", "amount": 4}, user="carol")
    gatehouse.approve(_approval_of(gatehouse, run.id), user="alice")

    finished = gatehouse.resume(run.id)

    # The output is computed on the replay, where the quote and the stock come from the record.
    assert finished is not None and finished.status == "succeeded", finished
    assert finished.output["quote_type"] == "Quote"
    assert finished.output["stock_type"] == "Stock"
    assert finished.output["receipt_type"] == "Receipt"
    assert finished.output["price_cents"] == 400
    assert ep.executions["make_quote"] == 1
    quote_call = finished.calls[0]
    assert quote_call.output == {"item": "widget", "price_cents": 400}
    assert quote_call.input == ["widget", 4]


def test_step_that_raises_is_recorded_failed_and_fails_the_run_with_step_failed(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("t_failing_step", {"item": "gizmo"})

    assert run.status == "failed"
    assert run.error == "StepFailed: step 't_explode' failed: ValueError: no price list for gizmo"
    recorded = gatehouse.run(run.id)
    assert recorded.status == "failed"
    assert recorded.error == run.error
    [call] = recorded.calls
    assert (call.kind, call.key, call.status) == ("step", "t_explode#1", "failed")
    assert call.error == "ValueError: no price list for gizmo"
    assert call.finished_at is not None


def test_step_failed_is_a_gatehouse_error_naming_the_step() -> None:
    failed = StepFailed("t_explode", "ValueError: boom")
    assert failed.step == "t_explode"
    assert "t_explode" in str(failed) and "boom" in str(failed)


def test_pipeline_catching_a_failed_step_takes_the_same_route_on_replay(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("t_recovering_step", {"item": "gizmo", "amount": 7}, user="carol")
    assert run.status == "waiting"
    assert ep.executions["explode"] == 1

    gatehouse.approve(_approval_of(gatehouse, run.id), user="alice")
    finished = gatehouse.resume(run.id)

    assert finished is not None and finished.status == "succeeded", finished
    assert finished.output == {
        "route": "fallback after ValueError: no price list for gizmo",
        "receipt": f"r-{run.id}:t_pay#1",
    }
    assert ep.executions["explode"] == 1, "a recorded failure is raised again, not re-run"
    assert ep.executions["t_pay"] == 1
    assert [c.status for c in finished.calls] == ["failed", "succeeded"]


def test_changed_call_sequence_between_suspend_and_resume_fails_the_run_as_pipeline_changed(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("t_checkout", {"amount": 3}, user="carol")
    gatehouse.approve(_approval_of(gatehouse, run.id), user="alice")
    ep.flags["variant"] = "extra_step"  # a deploy inserted a step before the payment

    finished = gatehouse.resume(run.id)

    assert finished is not None
    assert finished.status == "failed"
    assert finished.error is not None
    assert "pipeline changed under a running run" in finished.error
    assert "call 3" in finished.error
    assert "'t_pay#1'" in finished.error and "'t_extra#1'" in finished.error
    assert ep.executions["extra"] == 0
    assert ep.executions["t_pay"] == 0, "a changed pipeline must not go on to pay"


def test_resumed_code_making_fewer_calls_than_recorded_fails_as_pipeline_changed(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("t_checkout", {"amount": 3}, user="carol")
    gatehouse.approve(_approval_of(gatehouse, run.id), user="alice")
    ep.flags["variant"] = "stop_early"

    finished = gatehouse.resume(run.id)

    assert finished is not None
    assert finished.status == "failed"
    assert finished.error is not None
    assert "pipeline changed under a running run" in finished.error
    assert "recorded 3 calls" in finished.error and "finished after 1" in finished.error
    assert finished.output is None
    assert ep.executions["t_pay"] == 0


def test_approval_requested_notification_carries_the_tool_arguments(
    gatehouse: Gatehouse, notifier: RecordingNotifier
) -> None:
    run = gatehouse.trigger("t_checkout", {"item": "bolt", "amount": 5}, user="carol")

    assert notifier.names() == ["approval_requested"]
    _, approval = notifier.events[0]
    assert approval.run_id == run.id
    assert approval.tool == "t_pay"
    assert approval.tool_kind == "spend"
    assert approval.args == {"item": "bolt", "amount": 500}
    assert approval.approvers == ["@finance-leads", "dave"]
    assert approval.trigger_user == "carol"
    assert approval.pipeline == "t_checkout"
    assert approval.status == "pending"
