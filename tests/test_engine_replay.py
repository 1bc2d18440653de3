"""Dry replay: today's code on a run's recorded input, reusing the record, with no side effects."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import MetaData, select

from pipelines import Gatehouse
from storage.db import Database
from tests import engine_pipelines as ep


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


def _snapshot(db: Database) -> dict[str, list[str]]:
    """Every row of every table in the database (as the database has them, not as the models
    say), so that any write at all shows up."""
    tables = MetaData()
    with db.transaction() as conn:
        tables.reflect(conn)
        return {
            name: sorted(repr(tuple(row)) for row in conn.execute(select(table)).all())
            for name, table in tables.tables.items()
        }


def _finished_checkout(gatehouse: Gatehouse) -> str:
    run = gatehouse.trigger("t_checkout", {"item": "widget", "amount": 3}, user="carol")
    gatehouse.approve(run.waiting_for[0], user="alice")
    finished = gatehouse.resume(run.id)
    assert finished is not None and finished.status == "succeeded"
    return run.id


def test_replay_of_a_finished_run_reuses_every_call_and_matches_its_output(
    gatehouse: Gatehouse,
) -> None:
    run_id = _finished_checkout(gatehouse)
    before = dict(ep.executions)

    report = gatehouse.replay(run_id)

    assert ep.executions == before, "nothing is re-executed"
    assert [(line.position, line.key, line.outcome) for line in report.lines] == [
        (1, "t_quote#1", "reused"),
        (2, "t_lookup#1", "reused"),
        (3, "t_pay#1", "reused"),
        (4, "t_confirm#1", "reused"),
    ]
    assert report.finished is True
    assert report.would_call == []
    assert report.divergence is None
    assert report.error is None
    assert report.output_matches is True
    assert report.output == gatehouse.run(run_id).output
    assert report.recorded_status == "succeeded"
    assert report.to_json()["output_matches"] is True


def test_replay_of_a_run_waiting_at_approval_reports_would_call_and_never_calls_the_tool(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("t_checkout", {"item": "widget", "amount": 3}, user="carol")

    report = gatehouse.replay(run.id)

    assert [line.outcome for line in report.lines] == ["reused", "reused", "would call"]
    assert report.would_call == [
        {"tool": "t_pay", "kind": "spend", "args": {"item": "widget", "amount": 300}}
    ]
    assert report.finished is False
    assert report.output_matches is None
    assert report.divergence is None
    assert ep.executions["t_pay"] == 0
    assert gatehouse.run(run.id).status == "waiting"


def test_replay_writes_nothing_to_the_database(gatehouse: Gatehouse) -> None:
    finished = _finished_checkout(gatehouse)
    waiting = gatehouse.trigger("t_checkout", {"amount": 1}, user="carol").id
    asking = gatehouse.trigger("t_ask_price", {}, user="carol").id
    refund = gatehouse.trigger(
        "refund_request", {"order_id": "ord_1002", "amount": "150.00", "reason": "late"}
    ).id
    failed = gatehouse.trigger("t_failing_step", {}).id
    invalid = gatehouse.trigger("t_checkout", {"amount": -1}).id
    before = _snapshot(gatehouse.db)
    executions = dict(ep.executions)

    reports = [gatehouse.replay(r) for r in (finished, waiting, asking, refund, failed, invalid)]
    ep.flags["variant"] = "extra_step"
    reports.append(gatehouse.replay(finished))

    assert _snapshot(gatehouse.db) == before
    assert ep.executions == executions
    assert [r.finished for r in reports] == [True, False, False, False, False, False, False]
    assert reports[1].would_call[0]["tool"] == "t_pay"
    assert reports[2].lines[-1].outcome == "would ask a human"
    assert reports[3].would_call[0]["tool"] == "issue_refund"
    assert reports[6].divergence is not None


def test_replay_reports_divergence_at_the_first_differing_call(gatehouse: Gatehouse) -> None:
    run_id = _finished_checkout(gatehouse)
    ep.flags["variant"] = "extra_step"

    report = gatehouse.replay(run_id)

    assert report.divergence == (
        "call 3: the record has tool 't_pay#1', today's code calls step 't_extra#1'"
    )
    assert [(line.position, line.outcome) for line in report.lines] == [
        (1, "reused"),
        (2, "reused"),
        (3, "diverged"),
    ]
    assert report.finished is False
    assert ep.executions["extra"] == 0


def test_replay_of_code_that_stops_early_says_where_the_record_goes_on(
    gatehouse: Gatehouse,
) -> None:
    run_id = _finished_checkout(gatehouse)
    ep.flags["variant"] = "stop_early"

    report = gatehouse.replay(run_id)

    assert report.finished is True
    assert report.divergence is not None
    assert "finished after 1 calls" in report.divergence
    assert "'t_lookup#1'" in report.divergence and "4 calls in all" in report.divergence
    assert report.output_matches is False


def test_replay_output_mismatch_when_code_outside_ctx_changed(gatehouse: Gatehouse) -> None:
    run_id = _finished_checkout(gatehouse)
    ep.flags["variant"] = "shout"

    report = gatehouse.replay(run_id)

    assert report.divergence is None, "the call sequence is the same"
    assert report.finished is True
    assert report.output_matches is False
    assert report.output["confirmation"] == f"CONFIRMED R-{run_id.upper()}:T_PAY#1"


def test_replay_of_a_failed_step_reuses_the_recorded_failure(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("t_failing_step", {"item": "gizmo"})

    report = gatehouse.replay(run.id)

    assert [line.outcome for line in report.lines] == ["reused (failed)"]
    assert report.error == "step 't_explode' failed: ValueError: no price list for gizmo"
    assert report.finished is False
    assert ep.executions["explode"] == 1


def test_replay_of_a_caught_rejection_follows_the_recorded_route(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("t_pay_or_escalate", {}, user="carol")
    gatehouse.reject(run.waiting_for[0], user="bob", reason="nope")
    gatehouse.resume(run.id)

    report = gatehouse.replay(run.id)

    assert [line.outcome for line in report.lines] == ["reused (rejected)", "reused"]
    assert report.output_matches is True
    assert ep.executions["escalate"] == 1


def test_replay_of_an_answered_human_task_reuses_the_answer(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("t_ask_price", {}, user="carol")
    gatehouse.answer(run.waiting_for[0], user="olga", answer={"price_cents": 99})
    gatehouse.resume(run.id)

    report = gatehouse.replay(run.id)

    assert [line.outcome for line in report.lines] == ["reused", "reused", "reused"]
    assert report.output == {"answer_type": "PriceAnswer", "price_cents": 99}
    assert report.output_matches is True


def test_replay_of_an_invalid_input_run_explains_instead_of_crashing(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("t_checkout", {"amount": -1})

    report = gatehouse.replay(run.id)

    assert report.error is not None and "amount" in report.error
    assert report.lines == []
    json: dict[str, Any] = report.to_json()
    assert json["recorded_status"] == "invalid_input"
