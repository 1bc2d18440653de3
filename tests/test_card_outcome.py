"""The loop closes: once an approved call ends, its card says how (the tool's result, its error,
or that Gatehouse does not know), offers Undo when the tool can reverse it, and says who undid
it; the person who triggered the run from Slack is told by DM when it waits on someone and when
it ends. Driven as Slack drives the bot (signed clicks and commands, in both modes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import update

from bot.demo.history import seed_history
from pipelines import Context, pipeline, tool
from pipelines.inspect import run_history
from pipelines.outbox import OutboxSender
from pipelines.views import ApprovalView
from storage import calls as call_rows
from storage.db import Database
from storage.messages import message_ref
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, in_both_modes, requested_mode, slack_world

LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}


class Job(BaseModel):
    ticket: str


class Filed(BaseModel):
    ok: bool


@tool(kind="write", approval="always", approvers=["@finance-leads"], name="outcome_ledger_write")
def ledger_write(args: Job, *, idempotency_key: str) -> Filed:
    """Write to a ledger that is frozen: always raises."""
    raise RuntimeError(f"the ledger refused {args.ticket}: account frozen")


def reverse_stuck(args: Job, result: Filed, *, idempotency_key: str) -> None:
    raise RuntimeError(f"the archive of {args.ticket} is locked")


@tool(
    kind="write",
    approval="always",
    approvers=["@finance-leads"],
    name="outcome_archive",
    reverse=reverse_stuck,
)
def archive(args: Job, *, idempotency_key: str) -> Filed:
    """Archive a ticket; its reverse always fails."""
    return Filed(ok=True)


@pipeline("outcome_archive_ticket", input=Job)
def archive_ticket(ctx: Context, job: Job) -> Filed:
    return ctx.tool(archive, job)


@pipeline("outcome_failing_write", input=Job)
def failing_write(ctx: Context, job: Job) -> Filed:
    return ctx.tool(ledger_write, job)


@pytest.fixture
def world(
    request: pytest.FixtureRequest, fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> Iterator[SlackWorld]:
    mode = requested_mode(request)
    with slack_world(fake_slack, sqlite_url, clock, mode=mode, tell_triggerer=True) as built:
        yield built


def texts(node: Any) -> str:
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "text" and isinstance(inner, str):
                    found.append(inner)
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(node)
    return "\n".join(found)


def action_blocks(message: dict[str, Any]) -> list[str]:
    return [b["block_id"] for b in message.get("blocks", []) if b.get("type") == "actions"]


def dms(world: SlackWorld, user: str) -> list[str]:
    return [m.get("text", "") for m in world.fake.messages(user)]


def request_refund(world: SlackWorld, user: str = "U_CAROL") -> tuple[str, str, dict[str, Any]]:
    run = world.gatehouse.trigger("refund_request", LARGE, user=user, source="slack")
    assert run.status == "waiting", run.error
    [card] = world.approval_cards()
    return run.id, run.waiting_for[0], card


def approve_by_click(world: SlackWorld, card: dict[str, Any], user: str = "U_BOB") -> None:
    world.slack.block_action("approval.approve", message=card["ts"], user_id=user)
    world.settle()


# -- the outcome on the card -------------------------------------------------------------------


@in_both_modes
def test_after_approve_the_card_shows_the_refund_made_and_an_undo_button(
    world: SlackWorld,
) -> None:
    run_id, approval_id, card = request_refund(world)
    approve_by_click(world, card)
    assert world.gatehouse.run(run_id).status == "succeeded"
    updated = world.card(card["ts"])
    shown = texts(updated["blocks"])
    call_id = world.gatehouse.approval(approval_id).call_id
    assert "Approved by <@U_BOB>" in shown
    assert "Done" in shown and "refunded 150.00 EUR on ord_1002, refund " in shown
    assert "Gatehouse will call" not in shown  # it did: the card no longer says it will
    assert action_blocks(updated) == [f"undo.{call_id}"]
    [undo] = next(b for b in updated["blocks"] if b["type"] == "actions")["elements"]
    assert undo["action_id"] == "call.undo" and undo["value"] == call_id
    assert undo["confirm"]["title"]["text"] == "Undo this call?"
    assert "refunded 150.00 EUR" in undo["confirm"]["text"]["text"]
    assert world.fake.rejected == []


@in_both_modes
def test_a_call_that_failed_after_approval_shows_its_error_and_offers_no_undo(
    world: SlackWorld,
) -> None:
    run = world.gatehouse.trigger(
        "outcome_failing_write", {"ticket": "T-9"}, user="U_CAROL", source="slack"
    )
    [card] = world.approval_cards()
    approve_by_click(world, card)
    assert world.gatehouse.run(run.id).status == "failed"
    updated = world.card(card["ts"])
    shown = texts(updated["blocks"])
    assert "Failed" in shown and "the ledger refused T-9: account frozen" in shown
    assert "returned no result" in shown
    assert action_blocks(updated) == []


def test_a_call_whose_outcome_is_unknown_says_gatehouse_does_not_know_whether_it_happened(
    world: SlackWorld,
) -> None:
    run_id, approval_id, card = request_refund(world)
    world.gatehouse.approve(approval_id, user="U_BOB")
    call_id = world.gatehouse.approval(approval_id).call_id
    # As a process that stopped mid-call leaves it: started, no outcome.
    with world.gatehouse.db.transaction() as conn:
        conn.execute(
            update(call_rows.calls_table)
            .where(call_rows.calls_table.c.id == call_id)
            .values(status="started")
        )
    resumed = world.gatehouse.resume(run_id)
    assert resumed is not None and resumed.status == "needs_attention"
    shown = texts(world.card(card["ts"])["blocks"])
    assert "Outcome unknown" in shown
    assert "Gatehouse does not know whether it happened" in shown
    assert "it was not called again" in shown
    assert action_blocks(world.card(card["ts"])) == []
    # carol, who asked for the refund, is told her run needs a person
    assert any(run_id in text and "needs attention" in text for text in dms(world, "U_CAROL"))


def test_a_restart_between_the_call_and_the_card_update_still_ends_with_the_outcome_shown(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    with slack_world(fake_slack, sqlite_url, clock) as first:
        run_id, approval_id, card = request_refund(first)
        fake_slack.fail_next("chat.update", "service_unavailable")
        approve_by_click(first, card)
        assert first.gatehouse.run(run_id).status == "succeeded"  # the refund was made
        assert action_blocks(first.card(card["ts"])) == [f"approval.{approval_id}"]
    # The process is gone before the card was updated; the next one delivers what is owed.
    with slack_world(fake_slack, sqlite_url, clock) as second:
        clock.advance(timedelta(minutes=10))
        sender = second.gatehouse.rt.sender
        assert isinstance(sender, OutboxSender)
        assert sender.deliver_due() == 1
        updated = second.card(card["ts"])
        shown = texts(updated["blocks"])
        assert "Approved by <@U_BOB>" in shown and "refunded 150.00 EUR" in shown
        call_id = second.gatehouse.approval(approval_id).call_id
        assert action_blocks(updated) == [f"undo.{call_id}"]
        assert len(fake_slack.calls_to("chat.postMessage")) == 1  # updated, never re-posted


# -- Undo --------------------------------------------------------------------------------------


@in_both_modes
def test_undo_click_reverses_the_refund_and_the_card_says_who_undid_it(
    world: SlackWorld,
) -> None:
    run_id, approval_id, card = request_refund(world)
    approve_by_click(world, card)
    world.clock.advance(timedelta(minutes=8))
    world.slack.block_action("call.undo", message=card["ts"], user_id="U_ALICE")
    world.settle()
    call_id = world.gatehouse.approval(approval_id).call_id
    [original] = [c for c in world.gatehouse.run(run_id).calls if c.id == call_id]
    assert original.reversed_by is not None
    [reversal] = [c for c in world.gatehouse.run(run_id).calls if c.id == original.reversed_by]
    assert reversal.kind == "reversal" and reversal.status == "succeeded"
    updated = world.card(card["ts"])
    shown = texts(updated["blocks"])
    assert "Undone* by <@U_ALICE> at" in shown
    assert "refunded 150.00 EUR on ord_1002, refund " in shown and "reversed" in shown
    assert action_blocks(updated) == []  # nothing left to undo
    audit = run_history(world.gatehouse.rt, run_id)["audit"]
    assert [e["actor"] for e in audit if e["event"] == "tool.reversed"] == ["U_ALICE"]

    # A second click (a copy of the card from before the update) is told it is done already.
    world.slack.block_action("call.undo", value=call_id, channel="C_APPROVALS", user_id="U_BOB")
    world.settle()
    [told] = world.fake.ephemerals("U_BOB")
    assert "already undone by <@U_ALICE>" in told["text"]
    assert len([e for e in audit if e["event"] == "tool.reversed"]) == 1


@in_both_modes
def test_undo_by_someone_who_may_not_undo_is_refused_privately_audited_and_undoes_nothing(
    world: SlackWorld,
) -> None:
    run_id, approval_id, card = request_refund(world)
    approve_by_click(world, card)
    world.slack.block_action("call.undo", message=card["ts"], user_id="U_OLGA")
    world.settle()
    [told] = world.fake.ephemerals("U_OLGA")
    assert ":no_entry:" in told["text"] and "may not undo" in told["text"]
    call_id = world.gatehouse.approval(approval_id).call_id
    [original] = [c for c in world.gatehouse.run(run_id).calls if c.id == call_id]
    assert original.reversed_by is None
    refused = [
        e for e in run_history(world.gatehouse.rt, run_id)["audit"] if e["event"] == "refused"
    ]
    assert [e["detail"]["action"] for e in refused] == ["undo"]
    assert action_blocks(world.card(card["ts"])) == [f"undo.{call_id}"]  # still undoable


def test_an_undo_whose_reverse_fails_says_so_on_the_card_and_can_be_tried_again(
    world: SlackWorld,
) -> None:
    run = world.gatehouse.trigger(
        "outcome_archive_ticket", {"ticket": "T-3"}, user="U_CAROL", source="slack"
    )
    [card] = world.approval_cards()
    approve_by_click(world, card)
    assert world.gatehouse.run(run.id).status == "succeeded"
    # The result's fields, compactly, for a tool without summary=.
    assert "ok `true`" in texts(world.card(card["ts"])["blocks"])
    world.slack.block_action("call.undo", message=card["ts"], user_id="U_ALICE")
    world.settle()
    [told] = world.fake.ephemerals("U_ALICE")
    assert "the archive of T-3 is locked" in told["text"] and "tried again" in told["text"]
    updated = world.card(card["ts"])
    shown = texts(updated["blocks"])
    assert "Undo by <@U_ALICE>" in shown and "failed" in shown and "nothing was reversed" in shown
    call_id = world.gatehouse.approval(run.waiting_for[0]).call_id
    assert action_blocks(updated) == [f"undo.{call_id}"]  # it may be tried again


def test_undo_from_the_command_updates_the_card_too(world: SlackWorld) -> None:
    run_id, approval_id, card = request_refund(world)
    approve_by_click(world, card)
    call_id = world.gatehouse.approval(approval_id).call_id
    world.slack.command(f"undo {call_id}", user_id="U_ALICE")
    world.settle()
    assert "Undone* by <@U_ALICE>" in texts(world.card(card["ts"])["blocks"])
    assert action_blocks(world.card(card["ts"])) == []


# -- the triggerer is told -------------------------------------------------------------------


def trigger_by_command(world: SlackWorld, text: str, user: str = "U_CAROL") -> str:
    world.slack.command(text, user_id=user)
    world.settle()
    [run] = world.gatehouse.runs(limit=1)
    assert run.trigger == "slack" and run.trigger_user == user
    return run.id


@in_both_modes
def test_the_triggerer_is_told_when_their_run_waits_for_approval_and_when_it_succeeds(
    world: SlackWorld,
) -> None:
    run_id = trigger_by_command(
        world, 'trigger refund_request order_id=ord_1002 amount=150.00 reason="never delivered"'
    )
    [waiting] = dms(world, "U_CAROL")
    assert run_id in waiting and "waits for approval of *issue_refund* by @finance-leads" in waiting
    [card] = world.approval_cards()
    assert f"/archives/C_APPROVALS/p{card['ts'].replace('.', '')}" in waiting  # a link to it
    approve_by_click(world, card)
    assert dms(world, "U_CAROL")[0] == waiting  # told once per state
    [_, ended] = dms(world, "U_CAROL")
    assert run_id in ended and "succeeded" in ended
    assert dms(world, "U_BOB") == []  # the approver is shown the card, not DMed
    # Delivering again tells nobody twice.
    sender = world.gatehouse.rt.sender
    assert isinstance(sender, OutboxSender)
    sender.deliver_due()
    assert len(dms(world, "U_CAROL")) == 2


@in_both_modes
def test_the_triggerer_is_told_when_their_run_fails(world: SlackWorld) -> None:
    run_id = trigger_by_command(world, "trigger outcome_failing_write ticket=T-4")
    [card] = world.approval_cards()
    approve_by_click(world, card)
    [waiting, failed] = dms(world, "U_CAROL")
    assert "waits for approval of *outcome_ledger_write*" in waiting
    assert run_id in failed and "failed" in failed and "account frozen" in failed


def test_the_triggerer_is_told_when_their_run_needs_a_person_to_answer(world: SlackWorld) -> None:
    ticket = {
        "ticket_id": "T-7",
        "customer_email": "ada@example.com",
        "subject": "Scratched",
        "body": "Order ord_1001 arrived scratched; 5.00 back please.",
    }
    run = world.gatehouse.trigger("ticket_triage", ticket, user="U_CAROL", source="slack")
    assert run.status == "waiting"
    [told] = dms(world, "U_CAROL")
    assert run.id in told and "waits for an answer to" in told


def test_the_triggerer_is_told_when_their_run_is_cancelled(world: SlackWorld) -> None:
    run_id, _approval_id, _card = request_refund(world)
    world.gatehouse.cancel(run_id, user="U_ALICE", reason="duplicate ticket")
    world.settle()
    [waiting, cancelled] = dms(world, "U_CAROL")
    assert "waits for approval" in waiting
    assert run_id in cancelled and "cancelled" in cancelled


def test_nobody_is_told_about_a_run_a_webhook_started(world: SlackWorld) -> None:
    run = world.gatehouse.trigger("refund_request", LARGE, source="webhook")
    [card] = world.approval_cards()
    approve_by_click(world, card)
    assert world.gatehouse.run(run.id).status == "succeeded"
    dm_posts = [c for c in world.fake.calls_to("chat.postMessage") if c["channel"] != "C_APPROVALS"]
    assert dm_posts == [], json.dumps(dm_posts)[:500]


# -- the demo's refund ----------------------------------------------------------------------


def test_the_demos_waiting_refund_shows_its_outcome_after_approval_and_undo_works(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    """`make demo` seeds history that leaves carol's refund over 100.00 waiting for alice or
    bob; approved in the sandbox, its card shows the refund made and an Undo that reverses it."""
    db = Database(sqlite_url)
    try:
        seed_history(db, days=1, end=clock.now())
    finally:
        db.dispose()
    with slack_world(fake_slack, sqlite_url, clock, tell_triggerer=True) as world:
        sender = world.gatehouse.rt.sender
        assert isinstance(sender, OutboxSender)
        sender.deliver_due()  # the demo's bot posts the cards the history owes
        refund = max(
            (
                a
                for a in world.gatehouse.pending()
                if isinstance(a, ApprovalView)
                and a.tool == "issue_refund"
                and a.trigger_user == "U_CAROL"
            ),
            key=lambda a: a.requested_at,
        )
        with world.gatehouse.db.transaction() as conn:
            ref = message_ref(conn, kind="approval", ref_id=refund.id)
        assert ref is not None
        approve_by_click(world, {"ts": ref.ts}, user="U_ALICE")
        assert world.gatehouse.run(refund.run_id).status == "succeeded"
        card = world.card(ref.ts)
        assert "Done" in texts(card["blocks"]) and "refunded " in texts(card["blocks"])
        assert action_blocks(card) == [f"undo.{refund.call_id}"]
        world.slack.block_action("call.undo", message=ref.ts, user_id="U_BOB")
        world.settle()
        assert "Undone* by <@U_BOB>" in texts(world.card(ref.ts)["blocks"])
        [call] = [c for c in world.gatehouse.run(refund.run_id).calls if c.id == refund.call_id]
        assert call.reversed_by is not None
        assert any(refund.run_id in text and "succeeded" in text for text in dms(world, "U_CAROL"))
