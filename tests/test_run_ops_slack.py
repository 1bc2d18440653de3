"""Run operations from Slack, in both modes: the needs-attention notice and its buttons (It
happened / It did not happen with their modals, Retry, Cancel), `/gatehouse cancel|retry|resolve`,
refusals told privately and audited, and an approval card closed by a cancel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pipelines import Gatehouse
from pipelines.inspect import run_history
from tests import run_ops_pipelines as rp
from tests.slack_harness import (
    APPROVALS,
    SlackWorld,
    card_texts,
    in_both_modes,
)

JOB = {"item": "widget", "amount": 7}
LEASE = timedelta(seconds=30)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    rp.reset()


def _buttons(message: dict[str, Any]) -> list[str]:
    return [
        str(e["action_id"])
        for b in message["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    ]


def _notice(world: SlackWorld) -> dict[str, Any]:
    [notice] = [m for m in world.fake.messages(APPROVALS) if "Needs attention" in card_texts(m)]
    return notice


def _stuck_charge(world: SlackWorld) -> tuple[str, str]:
    """A charge killed mid-call by another worker and taken over by the bot's: the run needs
    attention, its charge's outcome unknown. (run id, call id)"""
    dead = Gatehouse(world.gatehouse.db.url, clock=world.clock, worker_id="dead", lease=LEASE)
    rp.flags["crash"] = True
    with pytest.raises(rp.Crash):
        dead.trigger("ro_charge_job", JOB, user="U_CAROL")
    dead.db.dispose()
    world.clock.advance(LEASE + timedelta(seconds=1))
    assert world.gatehouse.worker().run_one() is not None
    world.settle()
    [run] = world.gatehouse.runs(pipeline="ro_charge_job")
    assert run.status == "needs_attention"
    call = world.gatehouse.run(run.id).calls[1]
    assert call.status == "outcome_unknown"
    return run.id, call.id


@in_both_modes
def test_a_stuck_run_posts_a_notice_and_it_happened_records_the_result(world: SlackWorld) -> None:
    run_id, call_id = _stuck_charge(world)
    notice = _notice(world)
    shown = card_texts(notice)
    assert run_id in shown and call_id in shown and f"{run_id}:ro_charge#1" in shown
    assert _buttons(notice) == ["run.happened", "run.did_not_happen", "run.cancel"]

    world.slack.block_action("run.happened", message=notice["ts"], user_id="U_ALICE")
    world.settle()
    [modal] = world.fake.views
    no_reason = world.slack.view_submission(
        "run.happened_reason", {"reason": {"reason": " "}}, user_id="U_ALICE", view_id=modal["id"]
    )
    assert no_reason.json["response_action"] == "errors"
    no_result = world.slack.view_submission(
        "run.happened_reason",
        {"reason": {"reason": "in the ledger"}, "result": {"result": ""}},
        user_id="U_ALICE",
        view_id=modal["id"],
    )
    assert no_result.json["response_action"] == "errors"
    assert "result" in no_result.json["errors"]
    world.slack.view_submission(
        "run.happened_reason",
        {
            "reason": {"reason": "in the ledger"},
            "result": {"result": '{"receipt_id": "r-ledger", "amount": 7}'},
        },
        user_id="U_ALICE",
        view_id=modal["id"],
    )
    world.settle()

    run = world.gatehouse.run(run_id)
    assert (run.status, run.output) == ("succeeded", "r-ledger")
    assert len(rp.effects["ro_charge"]) == 1, "no second charge"
    updated = world.card(notice["ts"])
    assert _buttons(updated) == []
    assert "Resolved by <@U_ALICE>: it happened (in the ledger)" in card_texts(updated)
    assert world.fake.rejected == []


@in_both_modes
def test_it_did_not_happen_charges_again_and_the_notice_says_who(world: SlackWorld) -> None:
    run_id, call_id = _stuck_charge(world)
    notice = _notice(world)
    world.slack.block_action("run.did_not_happen", message=notice["ts"], user_id="U_BOB")
    world.settle()
    [modal] = world.fake.views
    world.slack.view_submission(
        "run.did_not_happen_reason",
        {"reason": {"reason": "no such charge in the ledger"}},
        user_id="U_BOB",
        view_id=modal["id"],
    )
    world.settle()
    assert world.gatehouse.run(run_id).status == "succeeded"
    assert rp.effects["ro_charge"] == [f"{run_id}:ro_charge#1"] * 2
    assert "Resolved by <@U_BOB>: it did not happen" in card_texts(world.card(notice["ts"]))


@in_both_modes
def test_cancel_from_the_notice_asks_why_and_the_notice_says_so(world: SlackWorld) -> None:
    run_id, _ = _stuck_charge(world)
    notice = _notice(world)
    world.slack.block_action("run.cancel", message=notice["ts"], user_id="U_ALICE")
    world.settle()
    [modal] = world.fake.views
    world.slack.view_submission(
        "run.cancel_reason",
        {"reason": {"reason": "refunded by hand"}},
        user_id="U_ALICE",
        view_id=modal["id"],
    )
    world.settle()
    run = world.gatehouse.run(run_id)
    assert (run.status, run.error) == ("cancelled", "cancelled by U_ALICE: refunded by hand")
    updated = world.card(notice["ts"])
    assert _buttons(updated) == []
    assert "Cancelled by <@U_ALICE>: refunded by hand" in card_texts(updated)


@in_both_modes
def test_retry_from_the_notice_starts_a_new_attempt(world: SlackWorld) -> None:
    rp.flags["stuck"] = True
    run = world.gatehouse.trigger("ro_stuck_job", JOB, user="U_CAROL")
    assert run.status == "needs_attention"
    world.settle()
    notice = _notice(world)
    assert _buttons(notice) == ["run.retry", "run.cancel"]
    rp.flags["stuck"] = False

    world.slack.block_action("run.retry", message=notice["ts"], user_id="U_CAROL")
    world.settle()

    assert world.gatehouse.run(run.id).status == "succeeded"
    assert rp.effects["ro_note"] == ["before"], "the recorded step was reused"
    updated = world.card(notice["ts"])
    assert _buttons(updated) == []
    assert "Retried by <@U_CAROL> (attempt 2)" in card_texts(updated)


@in_both_modes
def test_a_refused_click_is_told_privately_audited_and_changes_nothing(world: SlackWorld) -> None:
    run_id, call_id = _stuck_charge(world)
    notice = _notice(world)
    world.slack.block_action("run.did_not_happen", message=notice["ts"], user_id="U_CAROL")
    world.settle()
    [modal] = world.fake.views
    world.slack.view_submission(
        "run.did_not_happen_reason",
        {"reason": {"reason": "I think it failed"}},
        user_id="U_CAROL",
        view_id=modal["id"],
    )
    world.settle()
    [ephemeral] = world.fake.ephemerals("U_CAROL")
    assert "U_CAROL may not resolve" in ephemeral["text"]
    assert world.gatehouse.run(run_id).status == "needs_attention"
    assert len(rp.effects["ro_charge"]) == 1
    refused = [
        a for a in run_history(world.gatehouse.rt, run_id)["audit"] if a["event"] == "refused"
    ]
    assert [(a["actor"], a["detail"]["action"]) for a in refused] == [("U_CAROL", "resolve")]
    assert _buttons(world.card(notice["ts"])) == [
        "run.happened",
        "run.did_not_happen",
        "run.cancel",
    ]


def _reply(world: SlackWorld, user: str) -> str:
    [reply] = world.fake.ephemerals(user)
    return str(reply["text"]) + "\n" + card_texts(reply.get("blocks", []))


@in_both_modes
def test_slash_resolve_and_its_refusal(world: SlackWorld) -> None:
    run_id, call_id = _stuck_charge(world)
    world.slack.command(f"resolve {call_id} happened not sure", user_id="U_CAROL")
    world.settle()
    assert ":no_entry:" in _reply(world, "U_CAROL") and "may not resolve" in _reply(
        world, "U_CAROL"
    )

    world.slack.command(
        f'resolve {call_id} happened {{"receipt_id": "r-slash", "amount": 7}} seen in the ledger',
        user_id="U_BOB",
    )
    world.settle()
    reply = _reply(world, "U_BOB")
    assert "it happened" in reply and "succeeded" in reply
    assert world.gatehouse.run(run_id).output == "r-slash"
    events = [a["event"] for a in run_history(world.gatehouse.rt, run_id)["audit"]]
    assert "refused" in events and "tool.resolved" in events
    notice = world.card(_notice(world)["ts"])
    assert _buttons(notice) == []
    assert "Resolved by <@U_BOB>: it happened (seen in the ledger)" in card_texts(notice)


@in_both_modes
def test_slash_cancel_closes_the_approval_card_and_slash_retry_asks_again(
    world: SlackWorld,
) -> None:
    run = world.gatehouse.trigger("ro_gated_job", JOB, user="U_CAROL", source="slack")
    [card] = world.fake.messages(APPROVALS)
    world.slack.command(f"cancel {run.id}", user_id="U_ALICE")
    world.settle()
    assert "say why" in _reply(world, "U_ALICE")
    assert world.gatehouse.run(run.id).status == "waiting"

    world.slack.command(f"cancel {run.id} wrong customer", user_id="U_BOB")
    world.settle()
    assert "Cancelled run" in _reply(world, "U_BOB")
    closed = world.card(card["ts"])
    assert _buttons(closed) == []
    assert "Cancelled by <@U_BOB>: wrong customer" in card_texts(closed)
    assert world.gatehouse.run(run.id).status == "cancelled"

    world.slack.command(f"retry {run.id}", user_id="U_OLGA")  # not a finance lead
    world.settle()
    assert "may not retry" in _reply(world, "U_OLGA")
    world.slack.command(f"retry {run.id}", user_id="U_ALICE")
    world.settle()
    assert world.gatehouse.run(run.id).status == "waiting"
    cards = world.fake.messages(APPROVALS)
    assert len(cards) == 2, "a fresh approval card for the new attempt"
    assert "Cancelled by" in card_texts(world.card(card["ts"]))


@in_both_modes
def test_slash_cancel_closes_a_task_card_saying_who_and_why(world: SlackWorld) -> None:
    run = world.gatehouse.trigger("ro_ask_job", JOB, user="U_CAROL", source="slack")
    [card] = world.fake.messages(APPROVALS)
    assert _buttons(card) == ["task.answer"]
    world.slack.command(f"cancel {run.id} asked in the wrong channel", user_id="U_OLGA")
    world.settle()
    closed = world.card(card["ts"])
    assert _buttons(closed) == []
    assert "Cancelled by <@U_OLGA>: asked in the wrong channel" in card_texts(closed)
    assert world.gatehouse.run(run.id).status == "cancelled"
