"""The Slack bot end to end: cards posted by the engine, clicks and modals sent as Slack sends
them (signed), decisions, refusals, expiry, human tasks, and the traps of the platform."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from pipelines.inspect import run_history
from tests.slack_harness import SlackWorld, card_texts, in_both_modes

LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}
TICKET = {
    "ticket_id": "T-7",
    "customer_email": "ada@example.com",
    "subject": "Scratched",
    "body": "Order ord_1001 arrived scratched; 5.00 back please.",
}


def _form(**fields: str) -> dict[str, dict[str, str]]:
    """Modal state as the answer form lays it out: block and action named for the field."""
    return {name: {name: value} for name, value in fields.items()}


def _has_buttons(message: dict[str, Any]) -> bool:
    return any(block.get("type") == "actions" for block in message.get("blocks", []))


def _request_refund(world: SlackWorld, user: str = "U_CAROL") -> tuple[str, str, dict[str, Any]]:
    run = world.gatehouse.trigger("refund_request", LARGE, user=user, source="slack")
    assert run.status == "waiting", run.error
    [card] = world.approval_cards()
    return run.id, run.waiting_for[0], card


@in_both_modes
def test_a_gated_call_posts_a_card_and_approve_resumes_the_run(world: SlackWorld) -> None:
    run_id, approval_id, card = _request_refund(world)
    assert _has_buttons(card)
    shown = card_texts(card["blocks"])
    assert "issue_refund" in shown and run_id in shown
    response = world.slack.block_action("approval.approve", message=card["ts"], user_id="U_BOB")
    assert response.status == 200
    world.settle()
    assert world.gatehouse.run(run_id).status == "succeeded"
    updated = world.card(card["ts"])
    # Approve and Reject are gone; the refund it made can be undone (tests/test_card_outcome.py).
    assert [b["block_id"] for b in updated["blocks"] if b["type"] == "actions"] == [
        f"undo.{world.gatehouse.approval(approval_id).call_id}"
    ]
    assert "Approved by" in card_texts(updated["blocks"])
    assert world.fake.rejected == []


@in_both_modes
def test_reject_opens_a_modal_and_the_reason_ends_the_run(world: SlackWorld) -> None:
    run_id, approval_id, card = _request_refund(world)
    world.slack.block_action("approval.reject", message=card["ts"], user_id="U_BOB")
    world.settle()
    [modal] = world.fake.views
    empty = world.slack.view_submission(
        "approval.reject_reason", {"reason": {"reason": "  "}}, user_id="U_BOB", view_id=modal["id"]
    )
    assert empty.json["response_action"] == "errors"
    world.slack.view_submission(
        "approval.reject_reason",
        {"reason": {"reason": "duplicate request"}},
        user_id="U_BOB",
        view_id=modal["id"],
    )
    world.settle()
    run = world.gatehouse.run(run_id)
    assert run.status == "rejected" and "duplicate request" in (run.error or "")
    assert "Rejected by" in card_texts(world.card(card["ts"])["blocks"])


@in_both_modes
def test_a_click_by_someone_who_may_not_approve_is_refused_audited_and_decides_nothing(
    world: SlackWorld,
) -> None:
    run_id, approval_id, card = _request_refund(world)
    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_OLGA")
    world.settle()
    [ephemeral] = world.fake.ephemerals("U_OLGA")
    assert "may not approve" in ephemeral["text"]
    assert world.gatehouse.approval(approval_id).status == "pending"
    events = [entry["event"] for entry in run_history(world.gatehouse.rt, run_id)["audit"]]
    assert "refused" in events
    assert _has_buttons(world.card(card["ts"]))


@in_both_modes
def test_the_person_who_triggered_the_run_cannot_approve_it(world: SlackWorld) -> None:
    run_id, approval_id, card = _request_refund(world, user="U_ALICE")
    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_ALICE")
    world.settle()
    [ephemeral] = world.fake.ephemerals("U_ALICE")
    assert "four-eyes" in ephemeral["text"]
    assert world.gatehouse.approval(approval_id).status == "pending"


@in_both_modes
def test_a_second_click_after_the_decision_is_told_who_decided(world: SlackWorld) -> None:
    run_id, approval_id, card = _request_refund(world)
    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_BOB")
    world.settle()
    # A click on a copy of the card rendered before the update still carries the approval id.
    world.slack.block_action(
        "approval.approve", value=approval_id, channel="C_APPROVALS", user_id="U_ALICE"
    )
    world.settle()
    [ephemeral] = world.fake.ephemerals("U_ALICE")
    assert "already approved by U_BOB" in ephemeral["text"]
    assert world.gatehouse.run(run_id).status == "succeeded"


@in_both_modes
def test_concurrent_clicks_decide_once(world: SlackWorld) -> None:
    run_id, approval_id, card = _request_refund(world)
    barrier = threading.Barrier(2)

    def click(user: str) -> None:
        barrier.wait()
        world.slack.block_action("approval.approve", message=card["ts"], user_id=user)

    threads = [threading.Thread(target=click, args=(user,)) for user in ("U_ALICE", "U_BOB")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    world.settle()
    approved = [
        e
        for e in run_history(world.gatehouse.rt, run_id)["audit"]
        if e["event"] == "approval.approved"
    ]
    assert len(approved) == 1
    assert len(world.fake.ephemerals()) == 1  # the loser was told
    assert world.gatehouse.run(run_id).status == "succeeded"


def test_expiry_updates_the_card_and_rejects_the_run(world: SlackWorld) -> None:
    run_id, approval_id, card = _request_refund(world)
    world.clock.advance(timedelta(hours=25))
    worker = world.gatehouse.worker()
    worker.run_until_idle()
    assert world.gatehouse.run(run_id).status == "rejected"
    assert "Expired" in card_texts(world.card(card["ts"])["blocks"])
    assert not _has_buttons(world.card(card["ts"]))


@in_both_modes
def test_a_human_task_modal_reports_validation_errors_then_takes_the_answer(
    world: SlackWorld,
) -> None:
    run = world.gatehouse.trigger("ticket_triage", TICKET, user="U_CAROL", source="slack")
    assert run.status == "waiting"
    [card] = world.approval_cards()
    world.slack.block_action("task.answer", message=card["ts"], user_id="U_OLGA")
    world.settle()
    [modal] = world.fake.views
    assert modal["callback_id"] == "task.answer"
    bad = world.slack.view_submission(
        "task.answer",
        _form(kind="refund", order_id="order 1001", amount="5.00"),
        user_id="U_OLGA",
        view_id=modal["id"],
    )
    assert bad.json["response_action"] == "errors" and "order_id" in bad.json["errors"]
    good = world.slack.view_submission(
        "task.answer",
        _form(kind="refund", order_id="ord_1001", amount="5.00"),
        user_id="U_OLGA",
        view_id=modal["id"],
    )
    assert good.status == 200 and not good.text
    world.settle()
    finished = world.gatehouse.run(run.id)
    assert finished.status == "succeeded", finished.error
    assert finished.output["route"] == "refunded"
    assert not _has_buttons(world.card(card["ts"]))


def test_forged_and_stale_requests_get_401_and_change_nothing(world: SlackWorld) -> None:
    run_id, approval_id, card = _request_refund(world)
    forged = world.slack.block_action(
        "approval.approve", message=card["ts"], user_id="U_BOB", signature="v0=" + "0" * 64
    )
    stale = world.slack.block_action(
        "approval.approve", message=card["ts"], user_id="U_BOB", timestamp="1000000000"
    )
    world.settle()
    assert (forged.status, stale.status) == (401, 401)
    assert world.gatehouse.approval(approval_id).status == "pending"


def test_slack_retries_of_a_delivery_never_act_twice(world: SlackWorld) -> None:
    """By event_id (bot/slack/events.py; tests/test_slack_events.py has the cases)."""
    first = world.slack.app_home_opened("U_ALICE")
    world.settle()
    assert world.fake.home("U_ALICE") is not None
    body = first.request.body.decode()
    retry = world.slack.send(body, "application/json", timestamp=int(time.time()) + 1, retry_num=1)
    world.settle()
    assert retry.status == 200
    assert len(world.fake.calls_to("views.publish")) == 1


def test_a_429_from_chat_post_message_is_retried_and_the_card_posted_once(
    world: SlackWorld,
) -> None:
    world.fake.rate_limit_next("chat.postMessage", retry_after=30)
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    assert run.status == "waiting" and world.approval_cards() == []  # owed, in the outbox
    sender = world.gatehouse.rt.sender
    assert sender is not None
    world.clock.advance(timedelta(seconds=29))
    sender.nudge()
    assert world.approval_cards() == []  # Retry-After is honoured
    world.clock.advance(timedelta(seconds=2))
    sender.nudge()
    assert len(world.approval_cards()) == 1
    assert len(world.fake.calls_to("chat.postMessage")) == 2


@in_both_modes
def test_opening_app_home_publishes_the_home_tab(world: SlackWorld) -> None:
    assert world.slack.app_home_opened("U_ALICE").status == 200
    world.settle()
    home = world.fake.home("U_ALICE")
    assert home is not None and home["type"] == "home"
    assert world.fake.rejected == []


@in_both_modes
def test_the_slash_command_acks_at_once_and_answers_ephemerally(world: SlackWorld) -> None:
    run_id, approval_id, card = _request_refund(world)
    for text in ("help", "pending", f"run {run_id}", "frobnicate"):
        response = world.slack.command(text, user_id="U_CAROL")
        assert response.status == 200 and response.text == ""  # the ack carries nothing
    world.settle()
    replies = [
        e["text"] + "\n" + card_texts(e.get("blocks", [])) for e in world.fake.ephemerals("U_CAROL")
    ]
    assert len(replies) == 4  # answered concurrently, so in any order
    assert any("help" in reply.lower() for reply in replies)
    assert any(approval_id in reply for reply in replies)
    assert any(run_id in reply and "issue_refund" in reply for reply in replies)
    assert any("frobnicate" in reply for reply in replies)
    assert all(e["via"] == "response_url" for e in world.fake.ephemerals("U_CAROL"))
    assert world.fake.rejected == []


@in_both_modes
def test_trigger_from_slack_runs_the_pipeline_as_the_user(world: SlackWorld) -> None:
    world.slack.command(
        'trigger refund_request {"order_id": "ord_1001", "amount": "12.50", "reason": "scratched"}',
        user_id="U_CAROL",
    )
    world.settle()
    [run] = world.gatehouse.runs()
    assert (run.status, run.trigger_user, run.trigger) == ("succeeded", "U_CAROL", "slack")
    [reply] = world.fake.ephemerals("U_CAROL")
    assert run.id in reply["text"] + card_texts(reply.get("blocks", []))


@in_both_modes
def test_stats_replies_with_the_numbers_and_uploads_the_7_day_chart(world: SlackWorld) -> None:
    world.gatehouse.trigger(
        "refund_request", {"order_id": "ord_1001", "amount": "12.50", "reason": "x"}, user="U_CAROL"
    )
    world.fake.invite("C_GENERAL")  # the chart is shared where the bot was invited
    world.slack.command("stats public", user_id="U_CAROL", channel_id="C_GENERAL")
    world.settle()
    [chart] = world.fake.files("C_GENERAL")
    assert chart["bytes"].startswith(b"\x89PNG\r\n\x1a\n")
    replies = [
        e["text"] + card_texts(e.get("blocks", [])) for e in world.fake.ephemerals("U_CAROL")
    ]
    assert any("refund_request" in reply for reply in replies)
    assert any("7-day chart" in reply for reply in replies)
    assert world.fake.rejected == []
