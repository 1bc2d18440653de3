"""Every place Slack shows an approval says the same true things about it, in both modes: an
`@tool(editable=...)` call offers Edit & approve wherever a click can decide it (the card, App
Home, `/gatehouse pending`) and its form decides it there; an approval that needs several people
says who approved so far and how many are needed on `/gatehouse run` and `trigger`, in the
triggerer's DM and in the reminder in the card's thread."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests import quorum_pipelines
from tests.edit_approve_pipelines import PAID
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import APPROVALS, SlackWorld, card_texts, in_both_modes, slack_world

pytestmark = in_both_modes

EDIT = "approval.edit"


@pytest.fixture(autouse=True)
def _fresh() -> None:
    PAID.clear()
    quorum_pipelines.PAID.clear()


@pytest.fixture
def world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, slack_mode: str
) -> Iterator[SlackWorld]:
    with slack_world(
        fake_slack,
        sqlite_url,
        clock,
        mode=slack_mode,  # type: ignore[arg-type]
        tell_triggerer=True,
    ) as built:
        yield built


def _editable_run(world: SlackWorld, *, by: str = "U_CAROL") -> str:
    run = world.gatehouse.trigger(
        "ea_payout", {"recipient": "acme", "amount_cents": 20_000}, user=by, source="slack"
    )
    world.settle()
    [approval_id] = run.waiting_for
    return approval_id


def _quorum_run(world: SlackWorld, pipeline_name: str = "q_payout") -> str:
    run = world.gatehouse.trigger(pipeline_name, {"amount": 5000}, user="U_CAROL", source="slack")
    world.settle()
    [approval_id] = run.waiting_for
    return approval_id


def _edit_buttons(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """block_id -> the Edit & approve accessory of each listed item that has one."""
    return {
        str(b.get("block_id")): b["accessory"]
        for b in blocks
        if b.get("type") == "section" and (b.get("accessory") or {}).get("action_id") == EDIT
    }


def _home(world: SlackWorld, user: str) -> dict[str, Any]:
    world.slack.app_home_opened(user_id=user)
    world.settle()
    home = world.fake.home(user)
    assert home is not None
    return home


def _submit_edit(world: SlackWorld, user: str, amount_cents: str) -> None:
    form = world.fake.open_modal(user)
    assert form is not None and form["callback_id"] == "approval.edit_submit", form
    answer = world.slack.view_submission(
        "approval.edit_submit",
        {"amount_cents": {"amount_cents": amount_cents}, "recipient": {"recipient": "acme"}},
        user_id=user,
        view_id=form["id"],
    )
    assert answer.status == 200 and not answer.text, answer.text
    world.settle()


def _said_to(world: SlackWorld, user: str) -> str:
    return card_texts(world.fake.ephemerals(user))


def test_app_home_offers_edit_and_approve_and_its_form_approves_with_the_edit(
    world: SlackWorld,
) -> None:
    approval_id = _editable_run(world)
    plain_id = _quorum_run(world)  # an approval nobody may edit: no button beside it

    home = _home(world, "U_BOB")
    buttons = _edit_buttons(home["blocks"])
    assert list(buttons) == [f"approval.{approval_id}"], home["blocks"]
    assert buttons[f"approval.{approval_id}"]["value"] == approval_id
    assert buttons[f"approval.{approval_id}"]["text"]["text"] == "Edit & approve"
    assert plain_id in card_texts(home["blocks"])

    world.slack.block_action(EDIT, view=home, block_id=f"approval.{approval_id}", user_id="U_BOB")
    world.settle()
    _submit_edit(world, "U_BOB", "15000")

    approval = world.gatehouse.approval(approval_id)
    assert approval.status == "approved" and approval.edited["by"] == "U_BOB"
    assert PAID == [("acme", 15_000)]
    # The Home tab the approver is looking at is published again: nothing left to click there.
    again = world.fake.home("U_BOB")
    assert again is not None and _edit_buttons(again["blocks"]) == {}
    assert approval_id not in card_texts(again["blocks"])


def test_app_home_edit_form_keeps_the_triggerer_out_as_the_card_does(world: SlackWorld) -> None:
    approval_id = _editable_run(world, by="U_ALICE")  # alice is a finance lead too
    home = _home(world, "U_ALICE")
    world.slack.block_action(EDIT, view=home, block_id=f"approval.{approval_id}", user_id="U_ALICE")
    world.settle()
    form = world.fake.open_modal("U_ALICE")
    assert form is not None and form["title"]["text"] == "Not yours to approve", form
    assert world.gatehouse.approval(approval_id).status == "pending"
    assert PAID == []


def test_pending_command_offers_edit_and_approve_and_its_form_decides(world: SlackWorld) -> None:
    approval_id = _editable_run(world)
    _quorum_run(world)
    world.slack.command("pending", user_id="U_BOB")
    world.settle()
    [reply] = [e for e in world.fake.ephemerals("U_BOB") if _edit_buttons(e.get("blocks", []))]
    assert list(_edit_buttons(reply["blocks"])) == [f"approval.{approval_id}"]
    assert "Needs 2 approvals from different people — none yet" in card_texts(reply["blocks"])

    world.slack.block_action(
        EDIT, message=reply, block_id=f"approval.{approval_id}", user_id="U_BOB"
    )
    world.settle()
    _submit_edit(world, "U_BOB", "12000")
    assert PAID == [("acme", 12_000)]
    assert world.gatehouse.approval(approval_id).decided_by == "U_BOB"


def test_run_command_says_what_approvers_may_edit_and_who_approved_a_quorum(
    world: SlackWorld,
) -> None:
    editable_id = _editable_run(world)
    editable_run = world.gatehouse.approval(editable_id).run_id
    world.slack.command(f"run {editable_run}", user_id="U_OLGA")
    world.settle()
    assert "approvers may change amount, recipient (Edit & approve)" in _said_to(world, "U_OLGA")

    quorum_id = _quorum_run(world)
    quorum_run = world.gatehouse.approval(quorum_id).run_id
    world.gatehouse.approve(quorum_id, user="U_ALICE")
    world.slack.command(f"run {quorum_run}", user_id="U_CAROL")
    world.settle()
    assert "Approved by <@U_ALICE> (1 of 2) — waiting for one more" in _said_to(world, "U_CAROL")

    world.gatehouse.approve(quorum_id, user="U_OLGA")
    world.gatehouse.resume(quorum_run)
    world.slack.command(f"run {quorum_run}", user_id="U_BOB")
    world.settle()
    assert "approved by <@U_ALICE> and <@U_OLGA> (2 of 2)" in _said_to(world, "U_BOB")


def test_trigger_reply_and_the_triggerers_dm_say_how_many_approvals_are_needed(
    world: SlackWorld,
) -> None:
    world.slack.command('trigger q_payout {"amount": 5000}', user_id="U_CAROL")
    world.settle()
    assert "Needs 2 approvals from different people — none yet" in _said_to(world, "U_CAROL")

    [dm] = [m for m in world.fake.messages("U_CAROL") if "waits for approval" in m["text"]]
    assert "waits for approval of *q_pay*" in dm["text"]
    assert "Needs 2 approvals from different people — none yet." in dm["text"], dm["text"]


def test_the_reminder_in_the_cards_thread_says_who_approved_so_far(world: SlackWorld) -> None:
    approval_id = _quorum_run(world, "q_payout_reminded")
    [card] = [m for m in world.fake.messages(APPROVALS) if approval_id in json.dumps(m["blocks"])]
    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_ALICE")
    world.settle()

    world.clock.advance(timedelta(hours=2, minutes=1))
    world.gatehouse.worker().tick()
    world.settle()
    [reminder] = [m for m in world.fake.messages(APPROVALS, card["ts"]) if m["ts"] != card["ts"]]
    assert ":bell: Reminder: *q_pay_reminded*" in reminder["text"]
    assert "Approved by <@U_ALICE> (1 of 2) — waiting for one more." in reminder["text"]
