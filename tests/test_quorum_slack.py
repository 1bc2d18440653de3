"""Approvals that need two people, in Slack (both modes): the card says who approved so far and
stays actionable for the others, a second click by the same person is refused privately, App
Home and `/gatehouse pending` show the progress, and the second person's click releases the
run once."""

from __future__ import annotations

from typing import Any

import pytest

from tests import quorum_pipelines
from tests.slack_harness import (
    APPROVALS,
    SlackWorld,
    card_texts,
    in_both_modes,
)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    quorum_pipelines.PAID.clear()


def _card(world: SlackWorld) -> dict[str, Any]:
    [card] = [m for m in world.fake.messages(APPROVALS) if not m.get("thread_ts")]
    return world.card(card["ts"])


def _buttons(card: dict[str, Any]) -> list[str]:
    return [
        str(e.get("action_id"))
        for b in card["blocks"]
        if b.get("type") == "actions"
        for e in b["elements"]
    ]


def _said(world: SlackWorld, user: str) -> str:
    return card_texts(world.fake.ephemerals(user))


@in_both_modes
def test_two_approvers_in_slack_the_card_shows_each_and_the_second_releases_the_run(
    world: SlackWorld,
) -> None:
    run = world.gatehouse.trigger("q_payout", {"amount": 5000}, user="U_CAROL", source="slack")
    world.settle()
    card = _card(world)
    assert "Needs 2 approvals from different people — none yet" in card_texts(card["blocks"])

    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_ALICE")
    world.settle()
    card = _card(world)
    shown = card_texts(card["blocks"])
    assert "Approved by <@U_ALICE> (1 of 2) — waiting for one more" in shown
    assert "Approval needed" in shown  # still pending …
    assert _buttons(card) == ["approval.approve", "approval.reject"]  # … and actionable
    assert world.gatehouse.run(run.id).status == "waiting"

    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_ALICE")
    world.settle()
    assert "You already approved q_pay" in _said(world, "U_ALICE")
    assert "1 of 2 approvals so far" in _said(world, "U_ALICE")
    assert quorum_pipelines.PAID == []

    world.slack.command("pending", user_id="U_OLGA")
    world.settle()
    assert "Approved by <@U_ALICE> (1 of 2) — waiting for one more" in _said(world, "U_OLGA")

    world.slack.app_home_opened(user_id="U_BOB")
    world.settle()
    home = world.fake.home("U_BOB")
    assert home is not None
    assert "Approved by <@U_ALICE> (1 of 2) — waiting for one more" in card_texts(home["blocks"])

    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_BOB")
    world.settle()
    decided = _card(world)
    assert "✅ Approved by <@U_ALICE> and <@U_BOB> (2 of 2)" in card_texts(decided["blocks"])
    assert "approval.approve" not in _buttons(decided)
    assert world.gatehouse.run(run.id).status == "succeeded"
    assert quorum_pipelines.PAID == [5000]


@in_both_modes
def test_a_rejection_after_one_approval_says_who_had_approved(world: SlackWorld) -> None:
    run = world.gatehouse.trigger("q_payout", {"amount": 5000}, user="U_CAROL", source="slack")
    world.settle()
    world.gatehouse.approve(run.waiting_for[0], user="U_ALICE")
    world.gatehouse.reject(run.waiting_for[0], user="U_OLGA", reason="not this quarter")
    world.gatehouse.resume(run.id)
    world.settle()
    shown = card_texts(_card(world)["blocks"])
    assert "❌ Rejected by <@U_OLGA>: not this quarter" in shown
    assert "(approved before by <@U_ALICE>, 1 of 2)" in shown
    assert world.gatehouse.run(run.id).status == "rejected"
    assert quorum_pipelines.PAID == []
