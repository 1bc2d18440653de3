"""The outbox: Slack being down or rate-limiting delays a card or an alert, never loses or
doubles it; a card delivered late shows the state at delivery; approvals stay possible from the
CLI meanwhile; several senders deliver each subject once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from bot.slack.alerts import check_alerts
from pipelines import Gatehouse, StaticDirectory
from pipelines.outbox import OutboxSender
from pipelines.ports import DeliveryFailed
from storage import outbox as outbox_rows
from storage.db import Database
from tests.conftest import GROUPS, REPO_ROOT
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, slack_world

LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}
ALERTS = "C_ALERTS"


@pytest.fixture
def world(fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock) -> Iterator[SlackWorld]:
    with slack_world(fake_slack, sqlite_url, clock, alerts_channel=ALERTS) as built:
        yield built


def sender_of(world: SlackWorld) -> OutboxSender:
    sender = world.gatehouse.rt.sender
    assert isinstance(sender, OutboxSender)
    return sender


def statuses(db: Database, subject_id: str) -> list[str]:
    with db.transaction() as conn:
        return [str(row.status) for row in outbox_rows.rows_for(conn, subject_id)]


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


# -- Slack down ------------------------------------------------------------------------------


def test_slack_down_cli_approves_meanwhile_and_one_card_shows_approved_when_it_is_back(
    world: SlackWorld, sqlite_url: str, clock: FakeClock
) -> None:
    port = int(world.fake.base_url.rsplit(":", 1)[1])
    world.fake.stop()
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    assert run.status == "waiting"  # the run is not held up by Slack
    [approval_id] = run.waiting_for
    assert statuses(world.gatehouse.db, approval_id) == ["pending"]

    # Meanwhile a person approves from a terminal: another engine on the same database.
    cli_notifier = RecordingNotifier()
    cli = Gatehouse(
        sqlite_url, clock=clock, notifier=cli_notifier, directory=StaticDirectory(GROUPS)
    )
    cli.approve(approval_id, user="bob")
    finished = cli.resume(run.id)
    assert finished is not None and finished.status == "succeeded"
    assert cli_notifier.names() == ["approval_decided"]  # the terminal's echo, at once
    cli.db.dispose()

    world.fake.start(port=port)
    clock.advance(timedelta(minutes=10))
    assert sender_of(world).deliver_due() == 1
    [card] = world.approval_cards()
    assert len(world.fake.calls_to("chat.postMessage")) == 1
    assert "approval.approve" not in json.dumps(card["blocks"])  # decided; Undo may follow
    assert "Approved by" in texts(card["blocks"])
    # requested, decided, the refund's outcome: three rows, one delivery
    assert statuses(world.gatehouse.db, approval_id) == ["delivered"] * 3
    assert sender_of(world).deliver_due() == 0  # nothing owed twice
    assert len(world.fake.calls_to("chat.postMessage")) == 1


def test_a_card_posted_before_slack_went_down_is_updated_not_posted_again(
    world: SlackWorld, clock: FakeClock
) -> None:
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    [approval_id] = run.waiting_for
    [card] = world.approval_cards()
    for _ in range(3):
        world.fake.fail_next("chat.update", "service_unavailable")
    world.gatehouse.approve(approval_id, user="U_BOB")
    assert has_buttons(world.card(card["ts"]))  # the update failed: still owed
    for _ in range(3):
        clock.advance(timedelta(minutes=10))
        sender_of(world).deliver_due()
    [updated] = world.approval_cards()
    assert "Approved by" in texts(updated["blocks"]) and not has_buttons(updated)
    assert len(world.fake.calls_to("chat.postMessage")) == 1
    assert len(world.fake.calls_to("chat.update")) == 4  # three refused, one taken


def test_a_card_posted_by_a_sender_that_died_before_recording_it_is_found_and_not_posted_again(
    world: SlackWorld, clock: FakeClock
) -> None:
    """The window a crash leaves: Slack accepted chat.postMessage, the sender was killed before
    it recorded the ts. The next sender ends the dead holder's claim at once, finds the card by
    its metadata in the channel's history and updates it."""
    from sqlalchemy import delete, update

    from storage.messages import messages_table

    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    [approval_id] = run.waiting_for
    [card] = world.approval_cards()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = f"{socket.gethostname()}:{dead.pid}:dead00"
    db = world.gatehouse.db
    with db.transaction() as conn:  # as the dead sender left it: posted, nothing recorded
        conn.execute(delete(messages_table))
        conn.execute(
            update(outbox_rows.outbox_table)
            .where(outbox_rows.outbox_table.c.subject_id == approval_id)
            .values(
                status="pending", claimed_by=holder, claim_until=clock.now() + timedelta(hours=1)
            )
        )
    sender = sender_of(world)
    assert sender.deliver_due() == 1  # long before the dead holder's lease runs out
    assert sender.taken_over == 1
    assert len(world.fake.calls_to("chat.postMessage")) == 1
    assert [c["ts"] for c in world.fake.calls_to("chat.update")] == [card["ts"]]
    assert statuses(db, approval_id) == ["delivered"]
    world.gatehouse.approve(approval_id, user="U_BOB")
    [updated] = world.approval_cards()
    assert updated["ts"] == card["ts"] and not has_buttons(updated)


def test_a_429_is_retried_no_sooner_than_retry_after(world: SlackWorld, clock: FakeClock) -> None:
    world.fake.rate_limit_next("chat.postMessage", retry_after=120)
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    assert world.approval_cards() == []
    with world.gatehouse.db.transaction() as conn:
        [row] = outbox_rows.rows_for(conn, run.waiting_for[0])
    assert row.attempts == 1 and "ratelimited" in (row.last_error or "")
    assert row.next_attempt_at >= clock.now() + timedelta(seconds=120)
    clock.advance(timedelta(seconds=119))
    assert sender_of(world).deliver_due() == 0
    clock.advance(timedelta(seconds=2))
    assert sender_of(world).deliver_due() == 1
    assert len(world.approval_cards()) == 1


def test_a_missing_channel_is_given_up_loudly_after_its_attempts_and_the_cli_still_decides(
    world: SlackWorld, clock: FakeClock
) -> None:
    sender = sender_of(world)
    for _ in range(sender.max_attempts):
        world.fake.fail_next("chat.postMessage", "channel_not_found")
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    [approval_id] = run.waiting_for
    for _ in range(sender.max_attempts):
        clock.advance(timedelta(hours=1))
        sender.deliver_due()
    assert statuses(world.gatehouse.db, approval_id) == ["dead"]
    assert world.approval_cards() == []
    world.gatehouse.approve(approval_id, user="U_BOB")
    resumed = world.gatehouse.resume(run.id)
    assert resumed is not None and resumed.status == "succeeded"
    # The decision owes a card of its own: with the channel back it is posted, decided.
    [card] = world.approval_cards()
    assert "Approved by" in texts(card["blocks"])


def test_alerts_survive_slack_being_down_and_are_posted_once_when_it_is_back(
    world: SlackWorld,
) -> None:
    from tests.test_alerts_slack import spike

    port = int(world.fake.base_url.rsplit(":", 1)[1])
    spike(world)
    world.fake.stop()
    down = check_alerts(world.bot)
    assert [c.kind for c in down.changes] == ["opened"] and down.failed
    world.fake.start(port=port)
    back = check_alerts(world.bot)
    assert back.posted and not back.failed
    assert len(world.fake.messages(ALERTS)) == 1
    assert check_alerts(world.bot).posted == []


# -- the sender on its own ----------------------------------------------------------------------


class FlakyNotifier(RecordingNotifier):
    """Fails the next `failures` deliveries with the given error, then records."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[DeliveryFailed] = []

    def __getattribute__(self, name: str) -> Any:
        if name in ("approval_requested", "approval_decided", "task_opened", "task_answered"):
            failures = object.__getattribute__(self, "failures")
            if failures:
                failure = failures.pop(0)

                def fail(_view: Any) -> None:
                    raise failure

                return fail
        return object.__getattribute__(self, name)


def outboxed(db: Database, clock: FakeClock, notifier: Any) -> Gatehouse:
    gatehouse = Gatehouse(db, clock=clock, notifier=notifier, directory=StaticDirectory(GROUPS))
    gatehouse.rt.sender = OutboxSender(gatehouse.rt, jitter=lambda: 1.0)
    return gatehouse


def test_rows_of_one_subject_are_delivered_in_order_and_collapse_when_both_are_due(
    db: Database, clock: FakeClock
) -> None:
    notifier = RecordingNotifier()
    gatehouse = outboxed(db, clock, notifier)
    run = gatehouse.trigger("refund_request", LARGE, user="alice")
    gatehouse.approve(run.waiting_for[0], user="bob")
    assert notifier.names() == ["approval_requested", "approval_decided"]

    # Both rows due at once (nobody delivered in between): one delivery, the current state.
    quiet = Gatehouse(
        db, clock=clock, notifier=RecordingNotifier(), directory=StaticDirectory(GROUPS)
    )
    second = quiet.trigger("refund_request", LARGE, user="alice")
    quiet.approve(second.waiting_for[0], user="bob")
    assert gatehouse.rt.sender is not None
    sender = gatehouse.rt.sender
    assert isinstance(sender, OutboxSender)
    assert sender.deliver_due() == 1
    assert notifier.names()[2:] == ["approval_decided"]
    assert notifier.events[2][1].status == "approved"
    assert statuses(db, second.waiting_for[0]) == ["delivered", "delivered"]


def test_backoff_grows_is_capped_and_never_beats_retry_after(
    db: Database, clock: FakeClock
) -> None:
    sender = OutboxSender(
        Gatehouse(db, clock=clock).rt, base_backoff=1, max_backoff=60, jitter=lambda: 1.0
    )
    now = clock.now()
    delays = [(sender.retry_at(now, n, None) - now).total_seconds() for n in range(1, 10)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert (sender.retry_at(now, 1, 90) - now).total_seconds() == 90
    half = OutboxSender(Gatehouse(db, clock=clock).rt, base_backoff=10, jitter=lambda: 0.0)
    assert (half.retry_at(now, 1, None) - now).total_seconds() == 5  # jitter: 50-100 %


def test_retryable_failures_are_retried_without_limit(db: Database, clock: FakeClock) -> None:
    notifier = FlakyNotifier()
    notifier.failures = [DeliveryFailed("slack 503", retryable=True) for _ in range(8)]
    gatehouse = outboxed(db, clock, notifier)
    run = gatehouse.trigger("refund_request", LARGE, user="alice")
    sender = gatehouse.rt.sender
    assert isinstance(sender, OutboxSender)
    while notifier.failures:
        clock.advance(timedelta(minutes=10))
        sender.deliver_due()
    assert statuses(db, run.waiting_for[0]) == ["pending"]
    clock.advance(timedelta(minutes=10))
    assert sender.deliver_due() == 1
    assert notifier.names() == ["approval_requested"]


def test_a_local_notifier_is_told_at_once_and_the_rows_wait_for_a_delivering_process(
    gatehouse: Gatehouse, notifier: RecordingNotifier, db: Database
) -> None:
    run = gatehouse.trigger("refund_request", LARGE, user="alice")
    assert notifier.names() == ["approval_requested"]
    assert statuses(db, run.waiting_for[0]) == ["pending"]


def test_a_run_without_gates_owes_nothing(gatehouse: Gatehouse, db: Database) -> None:
    run = gatehouse.trigger("refund_request", {**LARGE, "amount": "12.50"}, user="alice")
    assert run.status == "succeeded"
    with db.transaction() as conn:
        assert outbox_rows.counts(conn) == {}


def test_a_nudge_wakes_the_sender_thread_without_waiting_for_its_poll(
    db: Database, clock: FakeClock
) -> None:
    notifier = RecordingNotifier()
    gatehouse = outboxed(db, clock, notifier)
    sender = gatehouse.rt.sender
    assert isinstance(sender, OutboxSender)
    sender.poll_seconds = 60
    sender.start()
    try:
        time.sleep(0.05)  # the thread's first (empty) pass
        gatehouse.trigger("refund_request", LARGE, user="alice")
        deadline = time.monotonic() + 5
        while not notifier.events and time.monotonic() < deadline:
            time.sleep(0.005)
        assert notifier.names() == ["approval_requested"]
    finally:
        sender.stop()


# -- several senders --------------------------------------------------------------------------


class SlowCountingNotifier:
    """Counts deliveries per subject across threads; each takes a moment, so senders overlap."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _deliver(self, view: Any) -> None:
        time.sleep(0.002)
        with self._lock:
            self.count[view.id] += 1

    approval_requested = approval_decided = task_opened = task_answered = _deliver


@pytest.mark.postgres
def test_two_senders_on_postgres_deliver_each_subject_once(postgres_url: str) -> None:
    clock = FakeClock()
    maker = Gatehouse(
        postgres_url, clock=clock, notifier=RecordingNotifier(), directory=StaticDirectory(GROUPS)
    )
    approvals = []
    for _ in range(30):
        run = maker.trigger("refund_request", LARGE, user="alice")
        approvals.append(run.waiting_for[0])
    for approval_id in approvals[::2]:
        maker.approve(approval_id, user="bob")  # a second row for half of them
    notifier = SlowCountingNotifier()
    senders = []
    for _ in range(2):
        engine = Gatehouse(postgres_url, clock=clock, notifier=notifier)  # type: ignore[arg-type]
        senders.append(OutboxSender(engine.rt, batch=3))
    go = threading.Barrier(2)

    def drain(sender: OutboxSender) -> None:
        go.wait()
        while sender.deliver_due():
            pass

    threads = [threading.Thread(target=drain, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(sender.delivered > 0 for sender in senders)  # both took part
    assert sorted(notifier.count) == sorted(approvals)
    assert set(notifier.count.values()) == {1}
    with maker.db.transaction() as conn:
        assert outbox_rows.counts(conn) == {"delivered": 45}
    for sender in senders:
        sender.rt.db.dispose()
    maker.db.dispose()


def test_worker_with_outbox_delivers_cards_owed_by_other_processes(
    fake_slack: FakeSlack, sqlite_url: str
) -> None:
    cli = Gatehouse(sqlite_url, notifier=RecordingNotifier(), directory=StaticDirectory(GROUPS))
    run = cli.trigger("refund_request", LARGE, user="alice")  # a terminal: no Slack here
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "SLACK_"))}
    env.update(
        GATEHOUSE_DATABASE_URL=sqlite_url,
        GATEHOUSE_GROUPS=json.dumps(GROUPS),
        SLACK_BOT_TOKEN=fake_slack.token,
        SLACK_API_URL=fake_slack.api_url,
        GATEHOUSE_APPROVALS_CHANNEL="C_APPROVALS",
    )
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "worker", "--once", "--outbox"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [card] = fake_slack.messages("C_APPROVALS")
    assert run.waiting_for[0] in texts(card["blocks"])
    assert statuses(cli.db, run.waiting_for[0]) == ["delivered"]
    cli.db.dispose()


def test_delivered_rows_are_purged_after_a_week_and_pending_ones_never(
    db: Database, clock: FakeClock
) -> None:
    notifier = RecordingNotifier()
    gatehouse = outboxed(db, clock, notifier)
    delivered = gatehouse.trigger("refund_request", LARGE, user="alice")
    quiet = Gatehouse(db, clock=clock, notifier=RecordingNotifier())
    waiting = quiet.trigger("refund_request", LARGE, user="alice")
    sender = gatehouse.rt.sender
    assert isinstance(sender, OutboxSender)
    clock.advance(timedelta(days=6))
    assert sender.purge() == 0
    clock.advance(timedelta(days=2))
    assert sender.purge() == 1
    assert statuses(db, delivered.waiting_for[0]) == []
    assert statuses(db, waiting.waiting_for[0]) == ["pending"]
