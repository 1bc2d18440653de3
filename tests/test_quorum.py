"""Approvals that need more than one person (`@tool(approvals_required=N)`): N distinct
approvers release the call once, the same person twice counts once, one rejection rejects, the
deadline still rejects; each vote is stored (who, when) and audited; the declaration is checked
when the tool is declared. On SQLite and PostgreSQL; threads race the votes (the process races
are in test_quorum_processes.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import select

from pipelines import Gatehouse, StaticDirectory, tool
from pipelines.errors import (
    AlreadyDecided,
    AlreadyVoted,
    BadQuorum,
    FourEyesViolation,
    NotAnApprover,
)
from pipelines.inspect import run_history
from storage.approval_votes import votes_table
from storage.db import Database
from tests import quorum_pipelines
from tests.concurrency import at_once
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier

GROUPS = {"finance-leads": ["alice", "bob"], "ops": ["olga"]}


@pytest.fixture(autouse=True)
def _fresh() -> None:
    quorum_pipelines.PAID.clear()


@pytest.fixture
def gh(any_db_url: str, clock: FakeClock) -> Iterator[Gatehouse]:
    engine = Gatehouse(
        Database(any_db_url),
        clock=clock,
        notifier=RecordingNotifier(),
        directory=StaticDirectory(GROUPS),
    )
    yield engine
    engine.db.dispose()


def _waiting(gh: Gatehouse, user: str = "carol") -> tuple[str, str]:
    run = gh.trigger("q_payout", {"amount": 5000}, user=user)
    assert run.status == "waiting", run
    return run.id, run.waiting_for[0]


def _audit(gh: Gatehouse, run_id: str) -> list[dict[str, Any]]:
    return list(run_history(gh.rt, run_id)["audit"])


def _votes(gh: Gatehouse, approval_id: str) -> list[tuple[str, Any]]:
    with gh.db.transaction() as conn:
        rows = conn.execute(
            select(votes_table.c.voter, votes_table.c.voted_at)
            .where(votes_table.c.approval_id == approval_id)
            .order_by(votes_table.c.voted_at, votes_table.c.voter)
        )
        return [(str(r.voter), r.voted_at) for r in rows]


# -- the journey -----------------------------------------------------------------------------


def test_first_approval_is_counted_and_the_run_waits_for_a_second_person(
    gh: Gatehouse, clock: FakeClock
) -> None:
    run_id, approval_id = _waiting(gh)
    first = gh.approve(approval_id, user="alice")
    assert first.status == "pending"
    assert first.quorum is not None
    assert (first.quorum.approved, first.quorum.required, first.quorum.voters) == (1, 2, ["alice"])
    assert gh.resume(run_id) is None  # still waiting: nothing queued
    assert gh.run(run_id).status == "waiting"
    assert quorum_pipelines.PAID == []

    clock.advance(timedelta(minutes=5))
    second = gh.approve(approval_id, user="bob")
    assert (second.status, second.decided_by) == ("approved", "bob")
    assert second.quorum is not None and second.quorum.voters == ["alice", "bob"]
    assert gh.run(run_id).status == "queued"
    assert gh.resume(run_id) is not None
    assert gh.run(run_id).status == "succeeded"
    assert quorum_pipelines.PAID == [5000]

    votes = _votes(gh, approval_id)
    assert [v for v, _ in votes] == ["alice", "bob"]
    assert votes[1][1] - votes[0][1] == timedelta(minutes=5)
    events = [(a["event"], a["actor"]) for a in _audit(gh, run_id)]
    assert ("approval.voted", "alice") in events and ("approval.voted", "bob") in events
    assert [e for e in events if e[0] == "approval.approved"] == [("approval.approved", "bob")]


def test_the_same_person_approving_twice_is_refused_and_counts_once(gh: Gatehouse) -> None:
    run_id, approval_id = _waiting(gh)
    gh.approve(approval_id, user="alice")
    with pytest.raises(
        AlreadyVoted, match=r"You already approved q_pay .*: 1 of 2 approvals so far"
    ):
        gh.approve(approval_id, user="alice")
    view = gh.approval(approval_id)
    assert view.status == "pending"
    assert view.quorum is not None and view.quorum.voters == ["alice"]
    assert [v for v, _ in _votes(gh, approval_id)] == ["alice"]
    assert gh.run(run_id).status == "waiting"


def test_one_rejection_rejects_even_after_an_approval(gh: Gatehouse) -> None:
    run_id, approval_id = _waiting(gh)
    gh.approve(approval_id, user="alice")
    rejected = gh.reject(approval_id, user="bob", reason="too large")
    assert (rejected.status, rejected.decided_by) == ("rejected", "bob")
    gh.resume(run_id)
    assert gh.run(run_id).status == "rejected"
    with pytest.raises(AlreadyDecided):
        gh.approve(approval_id, user="olga")
    assert quorum_pipelines.PAID == []


def test_the_deadline_rejects_a_quorum_short_of_its_count(gh: Gatehouse, clock: FakeClock) -> None:
    run_id, approval_id = _waiting(gh)
    gh.approve(approval_id, user="alice")
    clock.advance(timedelta(hours=25))
    with pytest.raises(AlreadyDecided, match="expired"):
        gh.approve(approval_id, user="bob")
    assert gh.approval(approval_id).status == "expired"
    assert [v for v, _ in _votes(gh, approval_id)] == ["alice"]  # the late vote is not kept
    gh.resume(run_id)
    assert gh.run(run_id).status == "rejected"


def test_each_vote_is_checked_against_the_approvers_and_four_eyes(gh: Gatehouse) -> None:
    run_id, approval_id = _waiting(gh, user="alice")  # alice triggered: four-eyes keeps her out
    with pytest.raises(FourEyesViolation):
        gh.approve(approval_id, user="alice")
    with pytest.raises(NotAnApprover):
        gh.approve(approval_id, user="mallory")
    gh.approve(approval_id, user="bob")
    assert gh.approval(approval_id).status == "pending"
    assert gh.approve(approval_id, user="olga").status == "approved"
    assert [v for v, _ in _votes(gh, approval_id)] == ["bob", "olga"]


def test_pending_and_json_show_the_progress(gh: Gatehouse) -> None:
    _, approval_id = _waiting(gh)
    gh.approve(approval_id, user="alice")
    [item] = [p for p in gh.pending() if p.id == approval_id]
    shown = item.to_json()
    assert shown["approvals_required"] == 2
    assert [v["voter"] for v in shown["votes"]] == ["alice"]


# -- races (threads, each with its own engine and pool) ------------------------------------


@contextmanager
def _engines(url: str, clock: FakeClock, n: int) -> Iterator[list[Gatehouse]]:
    """`n` engines of their own (connection pools) on one database, disposed after."""
    engines = [
        Gatehouse(
            Database(url),
            clock=clock,
            notifier=RecordingNotifier(),
            directory=StaticDirectory(GROUPS),
        )
        for _ in range(n)
    ]
    try:
        yield engines
    finally:
        for e in engines:
            e.db.dispose()


def _outcome(call: Any) -> Any:
    def run() -> Any:
        try:
            return call()
        except (AlreadyVoted, AlreadyDecided) as exc:
            return type(exc).__name__

    return run


def test_two_people_approving_at_once_release_the_run_exactly_once(
    any_db_url: str, gh: Gatehouse, clock: FakeClock
) -> None:
    with _engines(any_db_url, clock, 2) as engines:
        for _ in range(5):
            run_id, approval_id = _waiting(gh)
            results = at_once(
                [
                    _outcome(lambda e=e, u=u, a=approval_id: e.approve(a, user=u).status)
                    for e, u in zip(engines, ["alice", "bob"], strict=True)
                ]
            )
            assert sorted(results) == ["approved", "pending"]
            assert sorted(v for v, _ in _votes(gh, approval_id)) == ["alice", "bob"]
            approved = [a for a in _audit(gh, run_id) if a["event"] == "approval.approved"]
            assert len(approved) == 1
            assert gh.run(run_id).status == "queued"
            assert gh.resume(run_id) is not None
        assert quorum_pipelines.PAID == [5000] * 5


def test_the_same_person_approving_twice_at_once_counts_once(
    any_db_url: str, gh: Gatehouse, clock: FakeClock
) -> None:
    with _engines(any_db_url, clock, 2) as engines:
        for _ in range(5):
            run_id, approval_id = _waiting(gh)
            results = at_once(
                [
                    _outcome(lambda e=e, a=approval_id: e.approve(a, user="alice").status)
                    for e in engines
                ]
            )
            assert sorted(results) == ["AlreadyVoted", "pending"]
            assert [v for v, _ in _votes(gh, approval_id)] == ["alice"]
            assert gh.run(run_id).status == "waiting"


def test_a_rejection_racing_the_completing_approval_decides_once(
    any_db_url: str, gh: Gatehouse, clock: FakeClock
) -> None:
    with _engines(any_db_url, clock, 2) as engines:
        for _ in range(5):
            run_id, approval_id = _waiting(gh)
            gh.approve(approval_id, user="alice")
            results = at_once(
                [
                    _outcome(lambda a=approval_id: engines[0].approve(a, user="bob").status),
                    _outcome(
                        lambda a=approval_id: engines[1].reject(a, user="olga", reason="no").status
                    ),
                ]
            )
            final = gh.approval(approval_id)
            assert sorted(results) == sorted([final.status, "AlreadyDecided"])
            decisions = [
                a
                for a in _audit(gh, run_id)
                if a["event"] in ("approval.approved", "approval.rejected")
            ]
            assert len(decisions) == 1
            voters = [v for v, _ in _votes(gh, approval_id)]
            # bob's vote is kept only if it decided: a losing vote is rolled back with it
            assert voters == (["alice", "bob"] if final.status == "approved" else ["alice"])


# -- declaring it ----------------------------------------------------------------------------


class _Args(BaseModel):
    n: int


def _declare(**gates: Any) -> None:
    @tool(kind="write", name="q_bad", **gates)
    def q_bad(args: _Args, *, idempotency_key: str) -> None:
        return None


@pytest.mark.parametrize(
    ("gates", "says"),
    [
        ({"approvers": ["@ops"], "approvals_required": 0}, "whole number of at least 1"),
        ({"approvers": ["@ops"], "approvals_required": 1.5}, "whole number of at least 1"),
        ({"approvers": ["@ops"], "approvals_required": True}, "whole number of at least 1"),
        ({"approval": "never", "approvals_required": 2}, "never asks one"),
        ({"approvers": ["U1", "U2"], "approvals_required": 3}, r"names only 2 \(U1, U2\)"),
        ({"approvers": ["U1", "U1"], "approvals_required": 2}, r"names only 1 \(U1\)"),
    ],
)
def test_an_approval_count_that_cannot_be_met_is_refused_when_declared(
    gates: dict[str, Any], says: str
) -> None:
    with pytest.raises(BadQuorum, match=says):
        _declare(**gates)


@pytest.mark.parametrize(
    "gates",
    [
        {"approvers": ["U1", "U2"], "approvals_required": 2},
        {"approvers": ["U1", "@ops"], "approvals_required": 3},  # a group: known when deciding
        {"approvers": "*", "approvals_required": 3},
        {
            "approvers": ["U1"],
            "approvals_required": 2,
            "escalate_after": "1h",
            "escalate_to": ["U2"],
        },
    ],
)
def test_an_approval_count_that_may_be_met_is_accepted(gates: dict[str, Any]) -> None:
    _declare(**gates)


def test_editable_arguments_and_a_quorum_are_refused_together() -> None:
    """An edit with an early vote would change what the other approvers approved."""
    from pipelines.errors import BadEditable

    with pytest.raises(BadEditable, match="cannot be combined with approvals_required=2"):
        _declare(approvers=["@ops"], approvals_required=2, editable=["n"])
