"""Edit & approve in Slack, in both modes: the card's button opens a form of the editable
arguments, a refused value is shown beside its field (`response_action: errors`) and nothing
runs, a valid edit approves and runs the call as edited and the card says what changed and who
changed it; four-eyes keeps the triggerer out of the form and out of the decision."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from storage import queries
from tests.edit_approve_pipelines import PAID
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, in_both_modes, slack_world

pytestmark = in_both_modes


@pytest.fixture(autouse=True)
def _fresh() -> None:
    PAID.clear()


@pytest.fixture
def world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, slack_mode: str
) -> Iterator[SlackWorld]:
    with slack_world(fake_slack, sqlite_url, clock, mode=slack_mode) as built:
        yield built


def _waiting_card(world: SlackWorld, *, by: str = "U_CAROL") -> tuple[str, dict[str, Any]]:
    run = world.gatehouse.trigger(
        "ea_payout", {"recipient": "acme", "amount_cents": 20_000}, user=by, source="slack"
    )
    world.settle()
    [approval_id] = run.waiting_for
    [card] = [c for c in world.approval_cards() if approval_id in json.dumps(c.get("blocks"))]
    return approval_id, card


def _buttons(card: dict[str, Any]) -> list[str]:
    return [
        e["text"]["text"] for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]


def _open_form(world: SlackWorld, card: dict[str, Any], user: str) -> dict[str, Any]:
    world.slack.block_action("approval.edit", message=card["ts"], user_id=user)
    world.settle()
    [modal] = world.fake.views
    return world.fake.view(modal["id"])


def _inputs(view: dict[str, Any]) -> dict[str, Any]:
    return {b["block_id"]: b["element"] for b in view["blocks"] if b["type"] == "input"}


def test_edit_and_approve_runs_the_edited_call_and_the_card_says_what_changed_and_who(
    world: SlackWorld,
) -> None:
    approval_id, card = _waiting_card(world)
    assert _buttons(card) == ["Approve", "Edit & approve", "Reject"]

    form = _open_form(world, card, "U_BOB")
    assert form["callback_id"] == "approval.edit_submit"
    inputs = _inputs(form)
    assert set(inputs) == {"recipient", "amount_cents"}  # memo is not editable
    assert inputs["amount_cents"]["type"] == "number_input"
    assert inputs["amount_cents"]["initial_value"] == "20000"
    assert inputs["recipient"]["initial_value"] == "acme"

    answer = world.slack.view_submission(
        "approval.edit_submit",
        {"amount_cents": {"amount_cents": "15000"}, "recipient": {"recipient": "acme-gmbh"}},
        user_id="U_BOB",
        private_metadata=approval_id,
        view_id=form["id"],
    )
    assert answer.status == 200 and not answer.text, answer.text  # closed: accepted
    world.settle()

    approval = world.gatehouse.approval(approval_id)
    assert approval.status == "approved" and approval.decided_by == "U_BOB"
    assert approval.edited["by"] == "U_BOB"
    assert PAID == [("acme-gmbh", 15_000)]
    assert world.gatehouse.run(approval.run_id).status == "succeeded"
    decided = json.dumps(world.card(card["ts"])["blocks"], ensure_ascii=False)
    assert (
        "✏️ Edited by <@U_BOB> before approving: recipient acme → acme-gmbh; "
        "amount 200.00 EUR → 150.00 EUR"
    ) in decided, decided
    assert "Edit & approve" not in decided  # no buttons once decided
    with world.gatehouse.db.transaction() as conn:
        audit = queries.audit_of_run(conn, approval.run_id)
    [approved] = [a for a in audit if a.event == "approval.approved"]
    assert approved.actor == "U_BOB"
    assert {c["field"] for c in approved.detail["edited"]["changes"]} == {
        "recipient",
        "amount_cents",
    }


def test_a_refused_edit_is_shown_beside_its_field_and_nothing_is_decided(
    world: SlackWorld,
) -> None:
    approval_id, card = _waiting_card(world)
    form = _open_form(world, card, "U_BOB")

    answer = world.slack.view_submission(
        "approval.edit_submit",
        {"amount_cents": {"amount_cents": "15000"}, "recipient": {"recipient": "acme gmbh!"}},
        user_id="U_BOB",
        private_metadata=approval_id,
        view_id=form["id"],
    )
    assert answer.json["response_action"] == "errors", answer.text
    assert answer.json["errors"] == {"recipient": "a supplier id is letters, digits and dashes"}
    still_open = world.fake.open_modal("U_BOB")  # the form stays, with the error under its field
    assert still_open is not None and still_open["id"] == form["id"]
    assert still_open["errors"] == answer.json["errors"]
    world.settle()
    approval = world.gatehouse.approval(approval_id)
    assert approval.status == "pending" and approval.edited is None
    assert PAID == []


def test_four_eyes_keeps_the_triggerer_out_of_the_form_and_out_of_the_decision(
    world: SlackWorld,
) -> None:
    approval_id, card = _waiting_card(world, by="U_ALICE")  # alice is a finance lead too

    form = _open_form(world, card, "U_ALICE")
    shown = json.dumps(form["blocks"])
    assert form["title"]["text"] == "Not yours to approve", form
    assert "<@U_ALICE> triggered run" in shown and "(four-eyes)" in shown, shown
    assert not _inputs(form)

    # A submission made anyway (an old form, a crafted request) is refused by the engine.
    world.slack.view_submission(
        "approval.edit_submit",
        {"amount_cents": {"amount_cents": "1"}},
        user_id="U_ALICE",
        private_metadata=approval_id,
    )
    world.settle()
    said = "\n".join(e.get("text", "") for e in world.fake.ephemerals("U_ALICE"))
    assert "may not approve its own ea_payout (four-eyes)" in said, said
    approval = world.gatehouse.approval(approval_id)
    assert approval.status == "pending" and approval.args["amount_cents"] == 20_000
    with world.gatehouse.db.transaction() as conn:
        refusals = [
            a.detail["action"]
            for a in queries.audit_of_run(conn, approval.run_id)
            if a.event == "refused"
        ]
    assert refusals == ["edit", "approve"], refusals
    assert PAID == []


def test_a_second_form_submitted_after_the_first_decided_is_told_so_and_runs_nothing(
    world: SlackWorld,
) -> None:
    """Two approvers open the form; the first submission decides (the compare-and-set); the
    second person's form is replaced by a notice, and the call runs once, as first edited."""
    approval_id, card = _waiting_card(world)
    world.slack.block_action("approval.edit", message=card["ts"], user_id="U_ALICE")
    world.slack.block_action("approval.edit", message=card["ts"], user_id="U_BOB")
    world.settle()
    alice_form, bob_form = (world.fake.view(v["id"]) for v in world.fake.views)
    assert _inputs(alice_form) and _inputs(bob_form)

    for user, form, amount in (("U_ALICE", alice_form, "9000"), ("U_BOB", bob_form, "100")):
        answer = world.slack.view_submission(
            "approval.edit_submit",
            {"amount_cents": {"amount_cents": amount}, "recipient": {"recipient": "acme"}},
            user_id=user,
            private_metadata=approval_id,
            view_id=form["id"],
        )
        world.settle()
    assert answer.json["response_action"] == "update", answer.text
    assert "already decided" in json.dumps(answer.json["view"]["blocks"])
    assert world.gatehouse.approval(approval_id).decided_by == "U_ALICE"
    assert PAID == [("acme", 9_000)]
