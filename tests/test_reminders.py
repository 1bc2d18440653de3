"""Reminders and escalation of an approval nobody decides (`@tool(remind_after=…,
escalate_after=…, escalate_to=…)`): when they happen (a fake clock and the worker's sweep), once
across workers, never after expiry, what they change (approvers, audit), and what people see
(the card's line and thread reply in Slack, `gatehouse pending`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from bot.cli.main import app
from pipelines import Gatehouse, StaticDirectory, tool
from pipelines.errors import BadEscalation, FourEyesViolation, NotAnApprover
from pipelines.inspect import run_history
from storage.db import Database
from tests import reminder_pipelines  # noqa: F401  (registers the t_nudge pipelines)
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier
from tests.fakes.slack import FakeSlack
from tests.slack_harness import APPROVALS, SlackWorld, card_texts, slack_world

GROUPS = {"finance-leads": ["alice", "bob"], "ops": ["olga"]}


def _waiting(gatehouse: Gatehouse, pipeline: str = "t_nudge", user: str = "carol") -> Any:
    run = gatehouse.trigger(pipeline, {"amount": 5}, user=user)
    assert run.status == "waiting", run
    [approval] = gatehouse.run(run.id).approvals
    return approval


def _audit(gatehouse: Gatehouse, run_id: str) -> list[str]:
    return [a["event"] for a in run_history(gatehouse.rt, run_id)["audit"]]


# -- declaring them ------------------------------------------------------------------------


class _Args(BaseModel):
    n: int


def _declare(**gates: Any) -> None:
    @tool(kind="write", approvers=["@finance-leads"], name="t_nudge_bad", **gates)
    def t_nudge_bad(args: _Args, *, idempotency_key: str) -> None:
        return None


@pytest.mark.parametrize(
    ("gates", "says"),
    [
        (
            {"remind_after": "6h", "escalate_after": "2h", "escalate_to": ["@ops"]},
            "must come after",
        ),
        (
            {"remind_after": "2h", "escalate_after": "2h", "escalate_to": ["@ops"]},
            "must come after",
        ),
        ({"escalate_after": "6h"}, "escalate_to names nobody"),
        ({"escalate_after": "6h", "escalate_to": []}, "escalate_to names nobody"),
        ({"escalate_to": ["@ops"]}, "without escalate_after"),
        ({"escalate_after": "6h", "escalate_to": "@ops"}, "give a list"),
        ({"remind_after": "2h", "expires": "1h"}, "is not before expires"),
        ({"remind_after": "soon"}, "is not a duration"),
    ],
)
def test_reminder_and_escalation_that_do_not_fit_are_refused_at_registration(
    gates: dict[str, Any], says: str
) -> None:
    with pytest.raises((BadEscalation, ValueError), match=says):
        _declare(**gates)


def test_a_reminder_on_a_tool_no_person_approves_is_refused() -> None:
    with pytest.raises(BadEscalation, match="never asks one"):

        @tool(kind="write", approval="never", remind_after="2h", name="t_nudge_never")
        def t_nudge_never(args: _Args, *, idempotency_key: str) -> None:
            return None


# -- the engine ----------------------------------------------------------------------------


def test_reminder_is_sent_once_after_remind_after_and_audited(
    gatehouse: Gatehouse, clock: FakeClock, notifier: RecordingNotifier
) -> None:
    approval = _waiting(gatehouse)
    worker = gatehouse.worker()
    clock.advance(timedelta(hours=1, minutes=59))
    worker.tick()
    assert _audit(gatehouse, approval.run_id) == ["approval.requested"]
    assert gatehouse.run(approval.run_id).approvals[0].nudges.reminded_at is None

    clock.advance(timedelta(minutes=2))
    worker.tick()
    worker.tick()

    assert _audit(gatehouse, approval.run_id) == ["approval.requested", "approval.reminded"]
    [shown] = gatehouse.pending()
    assert shown.nudges.reminded_at == clock.now()
    assert shown.approvers == ["@finance-leads"]  # a reminder adds nobody
    assert notifier.names() == ["approval_requested", "approval_requested"]
    assert notifier.events[-1][1].nudges.reminded_at == clock.now()


def test_escalation_adds_the_group_as_approvers_and_they_may_then_decide(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    approval = _waiting(gatehouse)
    worker = gatehouse.worker()
    clock.advance(timedelta(hours=5))
    worker.tick()
    with pytest.raises(NotAnApprover):
        gatehouse.approve(approval.id, user="olga")

    clock.advance(timedelta(hours=1, seconds=1))
    worker.tick()

    [shown] = gatehouse.pending()
    assert shown.approvers == ["@finance-leads", "@ops"]
    assert shown.nudges.escalated_at == clock.now()
    entries = run_history(gatehouse.rt, approval.run_id)["audit"]
    [escalated] = [e for e in entries if e["event"] == "approval.escalated"]
    assert escalated["detail"] == {"added": ["@ops"], "approvers": ["@finance-leads", "@ops"]}
    assert gatehouse.approve(approval.id, user="olga").status == "approved"
    finished = gatehouse.resume(approval.run_id)
    assert finished is not None and finished.status == "succeeded"


def test_four_eyes_holds_for_an_escalated_approver_who_triggered_the_run(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    approval = _waiting(gatehouse, user="olga")
    clock.advance(timedelta(hours=6, seconds=1))
    gatehouse.worker().tick()

    with pytest.raises(FourEyesViolation):
        gatehouse.approve(approval.id, user="olga")


def test_an_approval_past_its_deadline_expires_and_is_never_reminded(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    approval = _waiting(gatehouse, "t_nudge_short")
    clock.advance(timedelta(hours=2))  # reminder due at 30 min, deadline at 1 h: no tick since
    gatehouse.worker().tick()

    run = gatehouse.run(approval.run_id)
    assert run.approvals[0].status == "expired"
    assert run.approvals[0].nudges.reminded_at is None
    assert "approval.reminded" not in _audit(gatehouse, approval.run_id)


def test_a_decided_approval_is_not_reminded(gatehouse: Gatehouse, clock: FakeClock) -> None:
    approval = _waiting(gatehouse)
    gatehouse.approve(approval.id, user="bob")
    clock.advance(timedelta(hours=7))
    gatehouse.worker().tick()

    assert "approval.reminded" not in _audit(gatehouse, approval.run_id)
    assert "approval.escalated" not in _audit(gatehouse, approval.run_id)


def _sweep_concurrently(url: str, clock: FakeClock, rounds: int = 5) -> None:
    """Two workers on their own engines (like two replicas) sweep at the same moment: each
    approval is reminded once and escalated once."""
    made = [
        Gatehouse(
            url,
            clock=clock,
            notifier=RecordingNotifier(),
            directory=StaticDirectory(GROUPS),
            worker_id=f"worker-{name}",
        )
        for name in "ab"
    ]
    try:
        first, second = made
        approvals = [_waiting(first) for _ in range(rounds)]
        for step in (timedelta(hours=2), timedelta(hours=4)):
            clock.advance(step)
            start = threading.Barrier(2)
            errors: list[BaseException] = []

            def sweep(
                gh: Gatehouse,
                start: threading.Barrier = start,
                errors: list[BaseException] = errors,
            ) -> None:
                try:
                    start.wait(timeout=10)
                    gh.worker().tick()
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=sweep, args=(gh,)) for gh in made]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            assert errors == []
        for approval in approvals:
            events = _audit(first, approval.run_id)
            assert events.count("approval.reminded") == 1, events
            assert events.count("approval.escalated") == 1, events
            [shown] = first.run(approval.run_id).approvals
            assert shown.approvers == ["@finance-leads", "@ops"]
        notified = sum(
            gh.rt.notifier.names().count("approval_requested")  # type: ignore[attr-defined]
            for gh in (first, second)
        )
        assert notified == rounds * 3  # the request, one reminder, one escalation each
    finally:
        for gh in made:
            gh.db.dispose()


def test_two_workers_on_sqlite_remind_and_escalate_once(sqlite_url: str, clock: FakeClock) -> None:
    _sweep_concurrently(sqlite_url, clock)


@pytest.mark.postgres
def test_two_workers_on_postgres_remind_and_escalate_once(
    postgres_url: str, clock: FakeClock
) -> None:
    _sweep_concurrently(postgres_url, clock)


# -- gatehouse pending ---------------------------------------------------------------------


def test_pending_and_its_json_show_the_reminder_and_the_escalation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, sqlite_url: str, clock: FakeClock
) -> None:
    db = Database(sqlite_url)
    gatehouse = Gatehouse(db, clock=clock, directory=StaticDirectory(GROUPS))
    approval = _waiting(gatehouse)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)

    before = CliRunner().invoke(app, ["pending"])
    assert "reminder due 2026-11-02 11:00:00 UTC" in before.stdout
    assert "escalates to @ops at 2026-11-02 15:00:00 UTC" in before.stdout

    clock.advance(timedelta(hours=6, minutes=1))
    gatehouse.worker().tick()
    db.dispose()

    text = CliRunner().invoke(app, ["pending"])
    assert text.exit_code == 0, text.stdout
    assert "reminded at 2026-11-02 15:01:00 UTC" in text.stdout
    assert "escalated to @ops at 2026-11-02 15:01:00 UTC" in text.stdout
    assert "approvers @finance-leads, @ops" in text.stdout
    [item] = json.loads(CliRunner().invoke(app, ["pending", "--json"]).stdout)
    assert item["id"] == approval.id
    assert item["reminded_at"] == "2026-11-02T15:01:00+00:00"
    assert item["escalated_at"] == "2026-11-02T15:01:00+00:00"
    assert item["escalate_to"] == ["@ops"]
    assert item["approvers"] == ["@finance-leads", "@ops"]


# -- Slack ---------------------------------------------------------------------------------


@pytest.fixture
def world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, slack_mode: str
) -> Iterator[SlackWorld]:
    with slack_world(fake_slack, sqlite_url, clock, mode=slack_mode) as built:  # type: ignore[arg-type]
        yield built


def _card(world: SlackWorld) -> dict[str, Any]:
    [card] = [m for m in world.fake.messages(APPROVALS) if not m.get("thread_ts")]
    return card


def _replies(world: SlackWorld, card: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in world.fake.messages(APPROVALS, card["ts"]) if m["ts"] != card["ts"]]


def test_reminder_and_escalation_reply_in_the_cards_thread_and_show_on_the_card(
    world: SlackWorld,
) -> None:
    run = world.gatehouse.trigger("t_nudge", {"amount": 5}, user="U_CAROL", source="slack")
    card = _card(world)
    assert "Reminded" not in card_texts(card["blocks"])
    worker = world.gatehouse.worker()

    world.clock.advance(timedelta(hours=2, minutes=1))
    worker.tick()
    world.settle()
    [reminder] = _replies(world, card)
    assert "Reminder: *t_nudge_pay* has waited 2.0 h for a decision" in reminder["text"]
    assert "<@U_ALICE>" in reminder["text"] and "<@U_BOB>" in reminder["text"]
    assert "Reminded at 11:01 UTC" in card_texts(world.card(card["ts"])["blocks"])

    worker.tick()  # nothing more is due: no second reply
    world.settle()
    assert len(_replies(world, card)) == 1

    world.clock.advance(timedelta(hours=4))
    worker.tick()
    world.settle()
    reminder_again, escalation = _replies(world, card)
    assert reminder_again["ts"] == reminder["ts"]
    assert "Escalated" in escalation["text"] and "<@U_OLGA>" in escalation["text"]
    shown = card_texts(world.card(card["ts"])["blocks"])
    assert "Escalated to @ops at 15:01 UTC" in shown
    assert "@ops" in shown.split("Approvers:")[1]

    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_OLGA")
    world.settle()
    assert world.gatehouse.run(run.id).status in ("queued", "succeeded")
    assert world.gatehouse.run(run.id).approvals[0].decided_by == "U_OLGA"
