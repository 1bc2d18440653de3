"""The outbox knows Slack's errors: a card whose message is gone is posted again (and later
updates go to the new one); a revoked token pauses delivery for every card, with an alert line
and a /metrics gauge, and never kills a row; a missing scope names the scope to add and waits
for it, never given up (the lost-card lookup in a private channel included)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
import structlog
from sqlalchemy import delete, update
from starlette.applications import Starlette
from structlog.testing import capture_logs

from bot.http.metrics import metrics_routes
from bot.http.server import BackgroundServer
from pipelines import Gatehouse
from pipelines.outbox import PAUSE_CAP, PAUSE_FIRST, OutboxSender
from storage import messages
from storage import outbox as outbox_rows
from storage.db import Database
from tests.fakes.clock import FakeClock
from tests.slack_harness import APPROVALS, SlackWorld

LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}


def every_level() -> None:
    """Let `info` lines through to `capture_logs` (the bot's settings log warnings and up; the
    suite's autouse fixture restores the configuration after the test)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))


def sender_of(world: SlackWorld) -> OutboxSender:
    sender = world.gatehouse.rt.sender
    assert isinstance(sender, OutboxSender)
    return sender


def outbox_rows_of(db: Database, subject_id: str) -> list[Any]:
    with db.transaction() as conn:
        return outbox_rows.rows_for(conn, subject_id)


def statuses(db: Database, subject_id: str) -> list[str]:
    return [str(row.status) for row in outbox_rows_of(db, subject_id)]


def card_ts(world: SlackWorld, approval_id: str) -> str:
    with world.gatehouse.db.transaction() as conn:
        ref = messages.message_ref(conn, kind="approval", ref_id=approval_id)
    assert ref is not None
    return ref.ts


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


def has_buttons(message: dict[str, Any]) -> bool:
    return any(block.get("type") == "actions" for block in message.get("blocks", []))


def owe_again(world: SlackWorld, approval_id: str) -> None:
    """A new row for the subject, as any later change writes (the card is shown again)."""
    with world.gatehouse.db.transaction() as conn:
        outbox_rows.enqueue(
            conn, event="approval_requested", subject_id=approval_id, now=world.clock.now()
        )


def orphaned_card(world: SlackWorld, clock: FakeClock) -> tuple[str, dict[str, Any]]:
    """A card as a sender killed between Slack's answer and its commit leaves it: posted, its
    ts not recorded, its row still claimed by a process that no longer exists."""
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    [approval_id] = run.waiting_for
    [card] = world.approval_cards()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = f"{socket.gethostname()}:{dead.pid}:dead00"
    with world.gatehouse.db.transaction() as conn:
        conn.execute(delete(messages.messages_table))
        conn.execute(
            update(outbox_rows.outbox_table)
            .where(outbox_rows.outbox_table.c.subject_id == approval_id)
            .values(
                status="pending", claimed_by=holder, claim_until=clock.now() + timedelta(hours=1)
            )
        )
    return approval_id, card


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


# -- a card whose message is gone ---------------------------------------------------------------


def test_a_deleted_card_is_posted_again_and_the_next_update_goes_to_the_new_message(
    world: SlackWorld,
) -> None:
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    [approval_id] = run.waiting_for
    [first] = world.approval_cards()
    world.fake.delete_message(APPROVALS, first["ts"])
    owe_again(world, approval_id)

    with capture_logs() as logs:
        assert sender_of(world).deliver_due() == 1
    [card] = world.approval_cards()
    assert card["ts"] != first["ts"] and has_buttons(card)  # its state now: still pending
    assert card_ts(world, approval_id) == card["ts"]
    [reposted] = events(logs, "slack.card_reposted")
    assert reposted["old_ts"] == first["ts"] and reposted["ts"] == card["ts"]
    assert reposted["error"] == "message_not_found"
    assert "gone" in reposted["detail"]

    world.gatehouse.approve(approval_id, user="U_BOB")
    [decided] = world.approval_cards()
    assert decided["ts"] == card["ts"] and not has_buttons(decided)
    assert "Approved by" in texts(decided["blocks"])
    assert world.fake.calls_to("chat.update")[-1]["ts"] == card["ts"]
    assert statuses(world.gatehouse.db, approval_id) == ["delivered"] * 3


@pytest.mark.parametrize("error", ["cant_update_message", "edit_window_closed"])
def test_a_card_slack_will_not_update_is_posted_again_showing_the_decision(
    world: SlackWorld, error: str
) -> None:
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    [approval_id] = run.waiting_for
    [first] = world.approval_cards()
    world.fake.fail_next("chat.update", error)
    world.gatehouse.approve(approval_id, user="U_BOB")
    assert len(world.fake.calls_to("chat.postMessage")) == 2
    [new] = [m for m in world.approval_cards() if m["ts"] != first["ts"]]
    assert "Approved by" in texts(new["blocks"]) and not has_buttons(new)
    assert card_ts(world, approval_id) == new["ts"]
    assert statuses(world.gatehouse.db, approval_id) == ["delivered", "delivered"]


def test_an_update_refused_for_another_reason_is_not_posted_again(
    world: SlackWorld, clock: FakeClock
) -> None:
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    [approval_id] = run.waiting_for
    [first] = world.approval_cards()
    world.fake.fail_next("chat.update", "channel_not_found")
    world.gatehouse.approve(approval_id, user="U_BOB")
    assert len(world.fake.calls_to("chat.postMessage")) == 1
    assert card_ts(world, approval_id) == first["ts"]
    assert statuses(world.gatehouse.db, approval_id) == ["delivered", "pending"]
    clock.advance(timedelta(minutes=5))
    assert sender_of(world).deliver_due() == 1  # retried in place, then updated there
    [card] = world.approval_cards()
    assert card["ts"] == first["ts"] and not has_buttons(card)


# -- a token Slack refuses -------------------------------------------------------------------


def test_a_revoked_token_pauses_every_delivery_and_a_probe_resumes_it(
    world: SlackWorld, clock: FakeClock
) -> None:
    every_level()
    sender = sender_of(world)
    db = world.gatehouse.db
    world.fake.fail_next("chat.postMessage", "token_revoked")
    with capture_logs() as logs:
        first = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
        second = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    [paused] = events(logs, "outbox.paused")
    assert paused["log_level"] == "error" and paused["reason"] == "token_revoked"
    assert "SLACK_BOT_TOKEN" in paused["action"] and "reinstall" in paused["action"]
    assert len(world.fake.calls_to("chat.postMessage")) == 1  # the second waited, untried
    subjects = [first.waiting_for[0], second.waiting_for[0]]

    # Each failed probe doubles the pause, up to its cap; nothing else is tried meanwhile.
    waits = []
    wait = PAUSE_FIRST
    for _ in range(7):  # more than max_attempts: a pause never kills a row
        clock.advance(wait - timedelta(seconds=1))
        assert sender.deliver_due() == 0
        calls = len(world.fake.calls_to("chat.postMessage"))
        world.fake.fail_next("chat.postMessage", "token_revoked")
        clock.advance(timedelta(seconds=1))
        with capture_logs() as logs:
            assert sender.deliver_due() == 0
        assert len(world.fake.calls_to("chat.postMessage")) == calls + 1  # one probe
        assert events(logs, "outbox.paused") == []  # the alert line was said once
        [still] = events(logs, "outbox.still_paused")
        pause = sender.paused(clock.now())
        assert pause is not None
        waits.append(pause.until - clock.now())
        wait = pause.until - clock.now()
        assert (still["retry_in"], still["reason"]) == (wait.total_seconds(), "token_revoked")
    minutes = [int(w.total_seconds() // 60) for w in waits]
    assert minutes == [2, 4, 8, 15, 15, 15, 15] and waits[-1] == PAUSE_CAP
    for subject in subjects:
        [row] = outbox_rows_of(db, subject)
        assert (row.status, row.attempts) == ("pending", 0)
        assert row.last_error is None or "token_revoked" in row.last_error

    clock.advance(wait)  # the operator fixed it: the next probe goes through
    with capture_logs() as logs:
        assert sender.deliver_due() == 2
    [resumed] = events(logs, "outbox.resumed")
    assert resumed["log_level"] == "info" and resumed["reason"] == "token_revoked"
    assert sender.paused(clock.now()) is None
    assert len(world.approval_cards()) == 2
    assert [statuses(db, s) for s in subjects] == [["delivered"], ["delivered"]]


def test_each_replica_pauses_from_slacks_answers_and_resumes_when_the_token_works(
    world: SlackWorld, sqlite_url: str, clock: FakeClock
) -> None:
    """Two senders on one database, as two replicas: each learns of the revoked token from
    Slack on its own, no row dies, and the one left with nothing to deliver asks `auth.test`
    after its pause instead of staying paused."""
    every_level()
    replica = Gatehouse(sqlite_url, clock=clock)
    other = OutboxSender(replica.rt, notifier=world.gatehouse.rt.notifier)
    here = sender_of(world)
    world.fake.fail_next("chat.postMessage", "token_revoked")
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    [approval_id] = run.waiting_for
    assert here.paused(clock.now()) is not None and other.paused(clock.now()) is None

    clock.advance(PAUSE_FIRST)
    world.fake.fail_next("chat.postMessage", "token_revoked")
    assert other.deliver_due() == 0  # the other replica tries, and pauses on its own
    assert other.paused(clock.now()) is not None
    [row] = outbox_rows_of(world.gatehouse.db, approval_id)
    assert (row.status, row.attempts) == ("pending", 0)

    clock.advance(PAUSE_FIRST / 2)  # this replica's pause ran out; the row is not due yet
    world.fake.fail_next("auth.test", "token_revoked")
    assert here.deliver_due() == 0  # nothing due here to probe with: auth.test, refused
    assert here.paused(clock.now()) is not None  # paused for longer
    clock.advance(PAUSE_FIRST / 2)  # the token works again
    assert other.deliver_due() == 1  # the other one delivers the card
    assert other.paused(clock.now()) is None
    assert len(world.approval_cards()) == 1
    clock.advance(PAUSE_CAP)
    with capture_logs() as logs:
        assert here.deliver_due() == 0
    assert events(logs, "outbox.resumed")  # auth.test answered: no pause outlives its cause
    assert scrape(world)["gatehouse_outbox_paused"] == 0
    assert len(world.fake.calls_to("auth.test")) >= 2
    replica.db.dispose()


def test_a_taken_over_delivery_that_fails_still_looks_for_its_card_before_posting(
    world: SlackWorld, clock: FakeClock
) -> None:
    """The look-up of a card a dead sender may have posted fails (Slack 503): the retry looks
    again rather than posting a second card."""
    approval_id, card = orphaned_card(world, clock)
    world.fake.fail_next("conversations.history", "service_unavailable")
    sender = sender_of(world)
    assert sender.deliver_due() == 0
    clock.advance(timedelta(minutes=10))
    assert sender.deliver_due() == 1
    assert len(world.fake.calls_to("chat.postMessage")) == 1
    assert len(world.fake.calls_to("conversations.history")) == 2
    assert card_ts(world, approval_id) == card["ts"]


def scrape(world: SlackWorld) -> dict[str, float]:
    server = BackgroundServer(Starlette(routes=metrics_routes(world.gatehouse))).start()
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.stop()
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            found[key] = float(value)
    return found


def test_metrics_show_the_pause_and_what_waits_and_its_end(
    world: SlackWorld, clock: FakeClock
) -> None:
    assert scrape(world)["gatehouse_outbox_paused"] == 0
    world.fake.fail_next("chat.postMessage", "invalid_auth")
    world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    clock.advance(timedelta(seconds=30))
    found = scrape(world)
    assert found['gatehouse_outbox_paused{reason="invalid_auth"}'] == 1
    assert "gatehouse_outbox_paused" not in found
    assert found["gatehouse_outbox_undelivered"] == 1
    assert found["gatehouse_outbox_oldest_undelivered_seconds"] == 30
    assert found["gatehouse_outbox_dead"] == 0

    clock.advance(PAUSE_FIRST)
    assert sender_of(world).deliver_due() == 1
    found = scrape(world)
    assert found["gatehouse_outbox_paused"] == 0
    assert found["gatehouse_outbox_undelivered"] == 0
    assert "gatehouse_outbox_oldest_undelivered_seconds" not in found


# -- a missing scope ---------------------------------------------------------------------------


def test_a_missing_scope_names_the_scope_and_waits_for_it_never_dead(
    world: SlackWorld, clock: FakeClock
) -> None:
    sender = sender_of(world)
    rounds = sender.max_attempts + 2
    for _ in range(rounds):
        world.fake.fail_next(
            "chat.postMessage", "missing_scope", needed="chat:write", provided="commands"
        )
    with capture_logs() as logs:
        run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
        [approval_id] = run.waiting_for
        for _ in range(rounds - 1):
            clock.advance(PAUSE_CAP)
            assert sender.deliver_due() == 0
    held = events(logs, "outbox.held")
    assert len(held) == rounds and {h["log_level"] for h in held} == {"error"}
    want = (
        "Slack refused chat.postMessage: the app lacks the chat:write scope; add chat:write "
        "under OAuth & Permissions (and to manifest.yml) and reinstall the app"
    )
    assert held[0]["error"].startswith(want) and "chat:write" in held[0]["action"]
    [row] = outbox_rows_of(world.gatehouse.db, approval_id)
    assert row.status == "pending" and (row.last_error or "").startswith(want)
    assert scrape(world)['gatehouse_outbox_held{reason="missing_scope"}'] == 1
    assert sender.paused(clock.now()) is None  # other cards (other methods, channels) go on

    clock.advance(PAUSE_CAP)  # the scope was added
    assert sender.deliver_due() == 1
    assert len(world.approval_cards()) == 1
    assert 'gatehouse_outbox_held{reason="missing_scope"}' not in scrape(world)


def test_the_lost_card_lookup_without_groups_history_names_the_scope_and_keeps_the_card(
    world: SlackWorld, clock: FakeClock
) -> None:
    """A sender died between Slack's answer and its record; the next one looks the card up in
    the channel's history, which in a private channel needs groups:history. Without it the card
    is neither dropped nor posted twice: it waits, saying which scope to add."""
    approval_id, card = orphaned_card(world, clock)
    db = world.gatehouse.db
    sender = sender_of(world)
    for _ in range(sender.max_attempts + 1):
        world.fake.fail_next(
            "conversations.history",
            "missing_scope",
            needed="groups:history",
            provided="chat:write,channels:history",
        )
    with capture_logs() as logs:
        assert sender.deliver_due() == 0
        for _ in range(sender.max_attempts):
            clock.advance(PAUSE_CAP)
            assert sender.deliver_due() == 0
    held = events(logs, "outbox.held")
    assert held and all("lacks the groups:history scope" in h["error"] for h in held)
    assert "conversations.history" in held[0]["error"]
    assert statuses(db, approval_id) == ["pending"]
    assert len(world.fake.calls_to("chat.postMessage")) == 1  # not posted twice meanwhile

    clock.advance(PAUSE_CAP)  # groups:history added: the card is found and updated
    assert sender.deliver_due() == 1
    assert len(world.fake.calls_to("chat.postMessage")) == 1
    assert card_ts(world, approval_id) == card["ts"]
    assert statuses(db, approval_id) == ["delivered"]
