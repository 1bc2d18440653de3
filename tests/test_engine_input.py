"""Bad input and unknown ids: specific errors that say what is wrong, and nothing half-written."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines import Gatehouse
from pipelines.errors import (
    GatehouseError,
    ReasonRequired,
    UnknownApproval,
    UnknownCall,
    UnknownPipeline,
    UnknownRun,
    UnknownTask,
)
from pipelines.inspect import run_history
from tests import engine_pipelines as ep


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


def test_invalid_input_is_recorded_as_an_invalid_input_run_listing_every_field_error(
    gatehouse: Gatehouse,
) -> None:
    bad = {"order_id": "order-7", "amount": "-3"}  # and no reason at all

    run = gatehouse.trigger("refund_request", bad, user="carol")

    assert run.status == "invalid_input"
    assert run.error is not None
    assert run.error.startswith("invalid input for refund_request: ")
    for field in ("order_id: ", "amount: ", "reason: "):
        assert field in run.error, run.error
    assert "Field required" in run.error
    recorded = gatehouse.run(run.id)
    assert (recorded.status, recorded.error) == ("invalid_input", run.error)
    assert recorded.input == bad
    assert recorded.trigger_user == "carol"
    assert recorded.finished_at is not None
    assert recorded.calls == [] and recorded.approvals == [] and recorded.tasks == []
    assert run_history(gatehouse.rt, run.id)["audit"] == []
    assert [r.id for r in gatehouse.runs(status="invalid_input")] == [run.id]


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"item": "", "amount": -1}, ["item: ", "amount: "]),
        ({"amount": "lots"}, ["amount: "]),
        ("not an object", ["(input): "]),
        (None, ["(input): "]),
    ],
)
def test_invalid_input_runs_no_step(gatehouse: Gatehouse, payload: Any, fields: list[str]) -> None:
    run = gatehouse.trigger("t_checkout", payload, user="carol")

    assert run.status == "invalid_input"
    assert all(field in (run.error or "") for field in fields), run.error
    assert ep.executions == {}
    assert gatehouse.run(run.id).calls == []
    assert gatehouse.worker().run_until_idle() == 0


def test_unknown_pipeline_names_the_registered_ones_and_records_nothing(
    gatehouse: Gatehouse,
) -> None:
    with pytest.raises(UnknownPipeline) as unknown:
        gatehouse.trigger("t_no_such_pipeline", {}, user="carol")

    message = str(unknown.value)
    assert "'t_no_such_pipeline'" in message
    assert "refund_request" in message and "t_checkout" in message
    assert gatehouse.runs() == []


@pytest.mark.parametrize(
    ("action", "error"),
    [
        (lambda gh: gh.run("run_0000000000000000"), UnknownRun),
        (lambda gh: gh.replay("run_0000000000000000"), UnknownRun),
        (lambda gh: gh.resume("run_0000000000000000"), UnknownRun),
        (lambda gh: gh.approve("apr_0000000000000000", user="alice"), UnknownApproval),
        (lambda gh: gh.reject("apr_0000000000000000", user="alice", reason="no"), UnknownApproval),
        (lambda gh: gh.answer("task_0000000000000000", user="olga", answer={}), UnknownTask),
        (lambda gh: gh.undo("call_0000000000000000", user="alice"), UnknownCall),
        (lambda gh: gh.approve("", user="alice"), UnknownApproval),
    ],
)
def test_unknown_ids_raise_the_specific_unknown_error(
    gatehouse: Gatehouse, action: Any, error: type[GatehouseError]
) -> None:
    with pytest.raises(error) as raised:
        action(gatehouse)

    assert "no " in str(raised.value), "the message says what is missing"
    assert gatehouse.runs() == []


def test_an_id_of_the_wrong_kind_is_unknown_not_a_crash(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("t_checkout", {}, user="carol")
    approval_id = run.waiting_for[0]

    with pytest.raises(UnknownApproval):
        gatehouse.approve(run.id, user="alice")
    with pytest.raises(UnknownTask):
        gatehouse.answer(approval_id, user="olga", answer={"price_cents": 1})
    with pytest.raises(UnknownRun):
        gatehouse.run(approval_id)
    with pytest.raises(UnknownCall):
        gatehouse.undo(run.id, user="alice")
    assert gatehouse.run(run.id).status == "waiting"


def test_missing_reason_is_reported_before_looking_the_approval_up(gatehouse: Gatehouse) -> None:
    with pytest.raises(ReasonRequired):
        gatehouse.reject("apr_0000000000000000", user="alice", reason="")
