"""Approvals: who may decide, deciding once, rejection routes, threshold rules and expiry."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from pipelines import Gatehouse
from pipelines.errors import (
    AlreadyDecided,
    FourEyesViolation,
    NotAnApprover,
    NotAuthorized,
    ReasonRequired,
)
from pipelines.inspect import run_history
from tests import engine_pipelines as ep
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


def _waiting_approval(
    gatehouse: Gatehouse, pipeline: str, user: str = "carol", **input: Any
) -> Any:
    run = gatehouse.trigger(pipeline, input or {"amount": 5}, user=user)
    assert run.status == "waiting", run
    [approval] = gatehouse.run(run.id).approvals
    assert approval.status == "pending"
    return approval


def _audit_events(gatehouse: Gatehouse, run_id: str) -> list[dict[str, Any]]:
    return list(run_history(gatehouse.rt, run_id)["audit"])


# -- approve / reject --------------------------------------------------------------------


def test_approval_by_a_group_member_queues_the_run_and_notifies_the_decision(
    gatehouse: Gatehouse, notifier: RecordingNotifier
) -> None:
    approval = _waiting_approval(gatehouse, "t_pay_only")

    view = gatehouse.approve(approval.id, user="bob", reason="looks right")

    assert (view.status, view.decided_by, view.reason) == ("approved", "bob", "looks right")
    assert view.decided_at is not None
    assert gatehouse.run(approval.run_id).status == "queued"
    assert notifier.names() == ["approval_requested", "approval_decided"]
    assert notifier.events[-1][1].status == "approved"
    events = [a["event"] for a in _audit_events(gatehouse, approval.run_id)]
    assert events == ["approval.requested", "approval.approved"]


def test_approver_listed_by_user_id_may_approve(gatehouse: Gatehouse) -> None:
    approval = _waiting_approval(gatehouse, "t_pay_only")

    assert gatehouse.approve(approval.id, user="dave").status == "approved"
    finished = gatehouse.resume(approval.run_id)

    assert finished is not None and finished.status == "succeeded"
    assert ep.executions["t_pay"] == 1


@pytest.mark.parametrize("reason", ["", "   "])
def test_rejecting_without_a_reason_is_refused_and_decides_nothing(
    gatehouse: Gatehouse, notifier: RecordingNotifier, reason: str
) -> None:
    approval = _waiting_approval(gatehouse, "t_pay_only")

    with pytest.raises(ReasonRequired, match="needs a reason"):
        gatehouse.reject(approval.id, user="bob", reason=reason)

    run = gatehouse.run(approval.run_id)
    assert run.status == "waiting"
    assert run.approvals[0].status == "pending"
    assert notifier.names() == ["approval_requested"]


def test_rejected_action_ends_the_run_rejected_with_who_and_why(
    gatehouse: Gatehouse, notifier: RecordingNotifier
) -> None:
    approval = _waiting_approval(gatehouse, "t_pay_only")

    view = gatehouse.reject(approval.id, user="bob", reason="duplicate request")
    assert (view.status, view.reason) == ("rejected", "duplicate request")
    assert notifier.events[-1][1].status == "rejected"
    finished = gatehouse.resume(approval.run_id)

    assert finished is not None
    assert finished.status == "rejected"
    assert finished.error == "t_pay was rejected: rejected by bob: duplicate request"
    assert finished.finished_at is not None
    [call] = finished.calls
    assert call.status == "rejected"
    assert ep.executions["t_pay"] == 0


def test_pipeline_catching_action_rejected_routes_elsewhere_and_succeeds(
    gatehouse: Gatehouse,
) -> None:
    approval = _waiting_approval(gatehouse, "t_pay_or_escalate")
    gatehouse.reject(approval.id, user="alice", reason="ask the customer first")

    finished = gatehouse.resume(approval.run_id)

    assert finished is not None
    assert finished.status == "succeeded", finished.error
    assert finished.output == {
        "status": "escalated",
        "note": "escalated: rejected by alice: ask the customer first",
    }
    assert [(c.key, c.status) for c in finished.calls] == [
        ("t_pay#1", "rejected"),
        ("t_escalate#1", "succeeded"),
    ]
    assert ep.executions == {"escalate": 1}


def test_approved_route_of_a_pipeline_that_could_escalate_pays(gatehouse: Gatehouse) -> None:
    approval = _waiting_approval(gatehouse, "t_pay_or_escalate")
    gatehouse.approve(approval.id, user="alice")

    finished = gatehouse.resume(approval.run_id)

    assert finished is not None and finished.output["status"] == "paid"
    assert ep.executions == {"t_pay": 1}


# -- who may decide ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "user",
    [
        "mallory",  # nobody
        "olga",  # in @ops, not in @finance-leads
        "finance-leads",  # a group's name is not a user
    ],
)
def test_user_who_is_not_an_approver_is_refused_audited_and_decides_nothing(
    gatehouse: Gatehouse, notifier: RecordingNotifier, user: str
) -> None:
    approval = _waiting_approval(gatehouse, "t_pay_only")

    with pytest.raises(NotAnApprover) as refused:
        gatehouse.approve(approval.id, user=user)
    with pytest.raises(NotAnApprover):
        gatehouse.reject(approval.id, user=user, reason="no")

    message = str(refused.value)
    assert user in message and "@finance-leads, dave" in message and approval.id in message
    run = gatehouse.run(approval.run_id)
    assert run.status == "waiting"
    assert run.approvals[0].status == "pending"
    assert run.approvals[0].decided_by is None
    refusals = [a for a in _audit_events(gatehouse, run.id) if a["event"] == "refused"]
    assert [(a["actor"], a["approval_id"], a["tool"]) for a in refusals] == [
        (user, approval.id, "t_pay"),
        (user, approval.id, "t_pay"),
    ]
    assert "may not approve" in refusals[0]["detail"]["reason"]
    assert notifier.names() == ["approval_requested"]
    assert ep.executions["t_pay"] == 0


def test_four_eyes_forbids_the_trigger_user_even_when_an_approver(
    gatehouse: Gatehouse, notifier: RecordingNotifier
) -> None:
    approval = _waiting_approval(gatehouse, "t_big_payment", user="alice", amount=150)
    assert approval.four_eyes is True

    with pytest.raises(FourEyesViolation, match="four-eyes") as refused:
        gatehouse.approve(approval.id, user="alice")

    assert isinstance(refused.value, NotAuthorized)
    assert gatehouse.run(approval.run_id).approvals[0].status == "pending"
    refusals = [a for a in _audit_events(gatehouse, approval.run_id) if a["event"] == "refused"]
    assert [a["actor"] for a in refusals] == ["alice"]
    assert notifier.names() == ["approval_requested"]

    gatehouse.approve(approval.id, user="bob")
    finished = gatehouse.resume(approval.run_id)
    assert finished is not None and finished.status == "succeeded"
    assert ep.executions["t_pay_big"] == 1


@pytest.mark.parametrize(("amount", "needs_approval"), [(0, False), (100, False), (101, True)])
def test_threshold_rule_asks_for_approval_only_above_the_threshold(
    gatehouse: Gatehouse, notifier: RecordingNotifier, amount: int, needs_approval: bool
) -> None:
    run = gatehouse.trigger("t_big_payment", {"amount": amount}, user="carol")

    if needs_approval:
        assert run.status == "waiting"
        assert notifier.names() == ["approval_requested"]
        assert ep.executions["t_pay_big"] == 0
    else:
        assert run.status == "succeeded"
        assert gatehouse.run(run.id).approvals == []
        assert notifier.names() == []
        assert ep.executions["t_pay_big"] == 1


# -- deciding once -----------------------------------------------------------------------


def test_second_click_after_decision_gets_already_decided(
    gatehouse: Gatehouse, notifier: RecordingNotifier
) -> None:
    approval = _waiting_approval(gatehouse, "t_pay_only")
    gatehouse.approve(approval.id, user="alice")

    with pytest.raises(AlreadyDecided, match="already approved by alice"):
        gatehouse.approve(approval.id, user="alice")
    with pytest.raises(AlreadyDecided, match="already approved by alice"):
        gatehouse.reject(approval.id, user="bob", reason="too late")

    assert gatehouse.run(approval.run_id).approvals[0].decided_by == "alice"
    assert notifier.names().count("approval_decided") == 1


def _decide_concurrently(first: Gatehouse, second: Gatehouse, approval_id: str) -> list[Any]:
    """alice approves through `first` while bob rejects through `second`, at the same moment."""
    barrier = threading.Barrier(2)
    results: list[Any] = [None, None]

    def approve() -> None:
        barrier.wait()
        try:
            results[0] = first.approve(approval_id, user="alice")
        except Exception as exc:
            results[0] = exc

    def reject() -> None:
        barrier.wait()
        try:
            results[1] = second.reject(approval_id, user="bob", reason="no")
        except Exception as exc:
            results[1] = exc

    threads = [threading.Thread(target=approve), threading.Thread(target=reject)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def _assert_decided_once(url: str, clock: FakeClock, rounds: int = 6) -> None:
    with ep.engines(url, clock) as make:
        first_notes, second_notes = RecordingNotifier(), RecordingNotifier()
        first = make("worker-a", notifier=first_notes)
        second = make("worker-b", notifier=second_notes)
        for _ in range(rounds):
            ep.reset()
            approval = _waiting_approval(first, "t_pay_only")

            results = _decide_concurrently(first, second, approval.id)

            losers = [r for r in results if isinstance(r, AlreadyDecided)]
            winners = [r for r in results if not isinstance(r, Exception)]
            assert len(winners) == 1 and len(losers) == 1, results
            winner = winners[0]
            run = first.run(approval.run_id)
            assert run.approvals[0].status == winner.status
            assert run.approvals[0].decided_by == winner.decided_by
            audit = [a["event"] for a in _audit_events(first, run.id)]
            assert audit.count("approval.approved") + audit.count("approval.rejected") == 1
            queued = [
                t
                for t in run_history(first.rt, run.id)["transitions"]
                if t["from"] == "waiting" and t["to"] == "queued"
            ]
            assert len(queued) == 1
            finished = first.resume(run.id)
            assert finished is not None
            expected = "succeeded" if winner.status == "approved" else "rejected"
            assert finished.status == expected
            assert ep.executions["t_pay"] == (1 if expected == "succeeded" else 0)
        decided = first_notes.names().count("approval_decided")
        decided += second_notes.names().count("approval_decided")
        assert decided == rounds


def test_two_concurrent_decisions_on_sqlite_decide_once(sqlite_url: str, clock: FakeClock) -> None:
    _assert_decided_once(sqlite_url, clock)


@pytest.mark.postgres
def test_two_concurrent_decisions_on_postgres_decide_once(
    postgres_url: str, clock: FakeClock
) -> None:
    _assert_decided_once(postgres_url, clock)


# -- expiry ------------------------------------------------------------------------------


def test_expired_approval_rejects_the_run_at_its_deadline_and_says_so(
    gatehouse: Gatehouse, clock: FakeClock, notifier: RecordingNotifier
) -> None:
    approval = _waiting_approval(gatehouse, "t_page")
    worker = gatehouse.worker()
    assert approval.expires_at == approval.requested_at + timedelta(hours=1)

    clock.advance(timedelta(minutes=59))
    worker.tick()
    assert gatehouse.run(approval.run_id).approvals[0].status == "pending"

    clock.advance(timedelta(minutes=2))
    outcome = worker.run_one()

    assert outcome is not None and outcome.status == "rejected"
    run = gatehouse.run(approval.run_id)
    assert run.status == "rejected"
    assert run.error is not None
    assert "expired" in run.error and approval.id in run.error
    assert run.approvals[0].status == "expired"
    assert run.approvals[0].decided_by is None
    assert ep.executions["t_page_ops"] == 0
    assert notifier.names() == ["approval_requested", "approval_decided"]
    assert notifier.events[-1][1].status == "expired"
    assert "approval.expired" in [a["event"] for a in _audit_events(gatehouse, run.id)]

    with pytest.raises(AlreadyDecided, match="expired"):
        gatehouse.approve(approval.id, user="olga")


def test_tick_expires_and_queues_the_run_for_any_worker(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    approval = _waiting_approval(gatehouse, "t_page")
    clock.advance(timedelta(hours=1))

    gatehouse.worker().tick()

    assert gatehouse.run(approval.run_id).status == "queued"
    assert gatehouse.worker().run_until_idle() == 1
    assert gatehouse.run(approval.run_id).status == "rejected"


def test_expired_approval_of_a_cancel_on_expiry_tool_cancels_the_run(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    approval = _waiting_approval(gatehouse, "t_page_or_cancel")
    clock.advance(timedelta(hours=2))

    assert gatehouse.worker().run_until_idle() == 1

    run = gatehouse.run(approval.run_id)
    assert run.status == "cancelled"
    assert run.error is not None and "expired" in run.error
    assert ep.executions["t_page_ops_or_cancel"] == 0


def test_approving_after_the_deadline_before_the_worker_sweeps_is_refused_as_expired(
    gatehouse: Gatehouse, clock: FakeClock, notifier: RecordingNotifier
) -> None:
    """The deadline holds even when no worker has swept yet (e.g. a CLI-only setup)."""
    approval = _waiting_approval(gatehouse, "t_page")
    clock.advance(timedelta(hours=1, seconds=1))

    with pytest.raises(AlreadyDecided, match="expired"):
        gatehouse.approve(approval.id, user="olga")

    assert gatehouse.run(approval.run_id).approvals[0].status == "expired"
    assert ep.executions["t_page_ops"] == 0
