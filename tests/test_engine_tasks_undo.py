"""Human tasks (ctx.ask_human, answered and validated) and undo (a tool's reverse, audited)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from pipelines import Gatehouse, TaskView
from pipelines.catalog.connectors import tables as demo_tables
from pipelines.errors import (
    AlreadyAnswered,
    AlreadyReversed,
    InvalidAnswer,
    NotAnApprover,
    NotAnAssignee,
    NotReversible,
    ReversalFailed,
)
from pipelines.inspect import run_history
from tests import engine_pipelines as ep
from tests.fakes.notifier import RecordingNotifier


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


def _audit(gatehouse: Gatehouse, run_id: str, event: str) -> list[dict[str, Any]]:
    return [a for a in run_history(gatehouse.rt, run_id)["audit"] if a["event"] == event]


# -- human tasks -------------------------------------------------------------------------


def _open_task(gatehouse: Gatehouse) -> TaskView:
    run = gatehouse.trigger("t_ask_price", {"item": "gizmo"}, user="carol")
    assert run.status == "waiting"
    [task] = gatehouse.run(run.id).tasks
    assert run.waiting_for == [task.id]
    return task


def test_ask_human_suspends_the_run_and_opens_a_task_with_its_form(
    gatehouse: Gatehouse, notifier: RecordingNotifier
) -> None:
    task = _open_task(gatehouse)

    assert task.status == "open"
    assert task.question == "What should gizmo cost?"
    assert task.context == {"item": "gizmo"}
    assert task.assignees == ["@ops", "dave"]
    assert set(task.output_schema["properties"]) == {"price_cents", "note"}
    assert [item.id for item in gatehouse.pending()] == [task.id]
    assert notifier.names() == ["task_opened"]
    assert notifier.events[0][1].pipeline == "t_ask_price"
    run = gatehouse.run(task.run_id)
    assert [(c.kind, c.status) for c in run.calls] == [
        ("step", "succeeded"),
        ("human", "awaiting_human"),
    ]
    assert ep.executions == {"before_question": 1}


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ({"price_cents": 0}, "price_cents"),
        ({"price_cents": "cheap"}, "price_cents"),
        ({}, "price_cents"),
        ("250", "(input)"),
    ],
)
def test_answer_that_fails_the_model_is_refused_and_changes_nothing(
    gatehouse: Gatehouse, notifier: RecordingNotifier, answer: Any, field: str
) -> None:
    task = _open_task(gatehouse)

    with pytest.raises(InvalidAnswer, match="PriceAnswer") as refused:
        gatehouse.answer(task.id, user="olga", answer=answer)

    assert field in str(refused.value)
    run = gatehouse.run(task.run_id)
    assert run.status == "waiting"
    assert run.tasks[0].status == "open"
    assert run.tasks[0].answer is None
    assert notifier.names() == ["task_opened"]
    assert _audit(gatehouse, run.id, "task.answered") == []


def test_valid_answer_resumes_the_run_and_the_result_is_the_model(
    gatehouse: Gatehouse, notifier: RecordingNotifier
) -> None:
    task = _open_task(gatehouse)

    answered = gatehouse.answer(task.id, user="olga", answer={"price_cents": 250, "note": "ok"})

    assert (answered.status, answered.answered_by) == ("answered", "olga")
    assert answered.answer == {"price_cents": 250, "note": "ok"}
    assert gatehouse.run(task.run_id).status == "queued"
    assert notifier.names() == ["task_opened", "task_answered"]
    assert notifier.events[-1][1].pipeline == "t_ask_price"
    assert gatehouse.pending() == []

    finished = gatehouse.resume(task.run_id)

    assert finished is not None and finished.status == "succeeded", finished
    assert finished.output == {"answer_type": "PriceAnswer", "price_cents": 250}
    human = finished.calls[1]
    assert (human.kind, human.status) == ("human", "succeeded")
    assert human.output == {"price_cents": 250, "note": "ok"}
    assert ep.executions == {"before_question": 1, "after_answer": 1}
    assert [a["actor"] for a in _audit(gatehouse, task.run_id, "task.answered")] == ["olga"]


def test_answering_twice_gets_already_answered(gatehouse: Gatehouse) -> None:
    task = _open_task(gatehouse)
    gatehouse.answer(task.id, user="olga", answer={"price_cents": 250})

    with pytest.raises(AlreadyAnswered, match="olga"):
        gatehouse.answer(task.id, user="dave", answer={"price_cents": 999})
    gatehouse.resume(task.run_id)
    with pytest.raises(AlreadyAnswered):
        gatehouse.answer(task.id, user="olga", answer={"price_cents": 1})

    assert gatehouse.run(task.run_id).output["price_cents"] == 250


@pytest.mark.parametrize("user", ["mallory", "alice"])
def test_only_assignees_may_answer_and_refusals_are_audited(
    gatehouse: Gatehouse, user: str
) -> None:
    task = _open_task(gatehouse)

    with pytest.raises(NotAnAssignee, match="@ops, dave"):
        gatehouse.answer(task.id, user=user, answer={"price_cents": 250})

    assert gatehouse.run(task.run_id).tasks[0].status == "open"
    assert [a["actor"] for a in _audit(gatehouse, task.run_id, "refused")] == [user]


def test_assignee_listed_by_user_id_may_answer(gatehouse: Gatehouse) -> None:
    task = _open_task(gatehouse)

    assert gatehouse.answer(task.id, user="dave", answer={"price_cents": 7}).status == "answered"


# -- undo --------------------------------------------------------------------------------


def _refund(gatehouse: Gatehouse) -> Any:
    run = gatehouse.trigger(
        "refund_request",
        {"order_id": "ord_1001", "amount": "12.50", "reason": "arrived broken"},
        user="carol",
    )
    assert run.status == "succeeded", run.error
    [call] = [c for c in gatehouse.run(run.id).calls if c.name == "issue_refund"]
    return call


def _demo_state(gatehouse: Gatehouse) -> tuple[int, list[str]]:
    with gatehouse.db.transaction() as conn:
        refunded = conn.execute(
            select(demo_tables.orders.c.refunded_cents).where(demo_tables.orders.c.id == "ord_1001")
        ).scalar_one()
        statuses = list(conn.execute(select(demo_tables.refunds.c.status)).scalars())
    return refunded, statuses


def test_undo_of_a_refund_runs_its_reverse_as_an_audited_reversal_call(
    gatehouse: Gatehouse,
) -> None:
    call = _refund(gatehouse)
    assert _demo_state(gatehouse) == (1250, ["issued"])

    reversal = gatehouse.undo(call.id, user="bob")

    assert (reversal.kind, reversal.name, reversal.status) == (
        "reversal",
        "issue_refund",
        "succeeded",
    )
    assert reversal.key == "undo:issue_refund#1"
    assert reversal.input["undoes"] == call.id
    assert reversal.input["args"] == call.input
    assert reversal.input["result"] == call.output
    assert reversal.idempotency_key == f"undo:{call.idempotency_key}"
    assert _demo_state(gatehouse) == (0, ["reversed"])
    run = gatehouse.run(call_run_id := _run_id_of(gatehouse, call.id))
    original = next(c for c in run.calls if c.id == call.id)
    assert original.reversed_by == reversal.id
    assert run.calls[-1].id == reversal.id
    assert run.status == "succeeded", "undo does not change the run's outcome"
    [started] = _audit(gatehouse, call_run_id, "tool.reverse_started")
    [done] = _audit(gatehouse, call_run_id, "tool.reversed")
    assert (started["actor"], done["actor"]) == ("bob", "bob")
    assert done["call_id"] == reversal.id
    assert done["detail"] == {"undoes": call.id}


def _run_id_of(gatehouse: Gatehouse, call_id: str) -> str:
    for run in gatehouse.runs(limit=100):
        if any(c.id == call_id for c in gatehouse.run(run.id).calls):
            return run.id
    raise AssertionError(f"no run has call {call_id}")


def test_undoing_twice_gets_already_reversed(gatehouse: Gatehouse) -> None:
    call = _refund(gatehouse)
    first = gatehouse.undo(call.id, user="alice")

    with pytest.raises(AlreadyReversed, match=first.id):
        gatehouse.undo(call.id, user="bob")

    assert _demo_state(gatehouse) == (0, ["reversed"])


def test_undo_of_a_tool_without_reverse_is_not_reversible(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("t_credit_and_stamp", {"amount": 3}, user="carol")
    stamp = next(c for c in gatehouse.run(run.id).calls if c.name == "t_stamp")

    with pytest.raises(NotReversible, match="declares no reverse"):
        gatehouse.undo(stamp.id, user="alice")

    assert gatehouse.run(run.id).calls[-1].reversed_by is None


def test_undo_of_a_step_call_is_not_reversible(gatehouse: Gatehouse) -> None:
    call = _refund(gatehouse)
    run = gatehouse.run(_run_id_of(gatehouse, call.id))
    step = next(c for c in run.calls if c.kind == "step")

    with pytest.raises(NotReversible, match="only tool calls"):
        gatehouse.undo(step.id, user="alice")


def test_undo_by_a_non_approver_is_refused_audited_and_reverses_nothing(
    gatehouse: Gatehouse,
) -> None:
    call = _refund(gatehouse)
    run_id = _run_id_of(gatehouse, call.id)

    with pytest.raises(NotAnApprover, match="@finance-leads"):
        gatehouse.undo(call.id, user="olga")

    assert _demo_state(gatehouse) == (1250, ["issued"])
    assert [a["actor"] for a in _audit(gatehouse, run_id, "refused")] == ["olga"]
    assert [c.kind for c in gatehouse.run(run_id).calls].count("reversal") == 0


def test_failed_reverse_is_recorded_and_can_be_retried(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("t_credit_and_stamp", {"amount": 3}, user="carol")
    credit = next(c for c in gatehouse.run(run.id).calls if c.name == "t_credit")
    ep.flags["reverse_fails"] = True

    with pytest.raises(ReversalFailed, match="ledger is down"):
        gatehouse.undo(credit.id, user="alice")

    after_failure = gatehouse.run(run.id)
    assert next(c for c in after_failure.calls if c.id == credit.id).reversed_by is None
    [failed] = [c for c in after_failure.calls if c.kind == "reversal"]
    assert failed.status == "failed" and "ledger is down" in (failed.error or "")
    assert len(_audit(gatehouse, run.id, "tool.reverse_failed")) == 1

    ep.flags["reverse_fails"] = False
    retried = gatehouse.undo(credit.id, user="alice")

    assert retried.status == "succeeded"
    final = gatehouse.run(run.id)
    assert next(c for c in final.calls if c.id == credit.id).reversed_by == retried.id
    assert [c.status for c in final.calls if c.kind == "reversal"] == ["failed", "succeeded"]
    assert ep.executions["reverse_credit"] == 2
    assert ep.effects["reversed"] == [
        (credit.output["receipt_id"], f"undo:{credit.idempotency_key}")
    ]
