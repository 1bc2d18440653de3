"""Slack's deliveries taken once each by event_id, and every request acked 200, handled or not.

Sent as Slack sends them (with Slack's retry headers) through `slack_world` and its sender only,
so they run over Socket Mode as they do over HTTP: the bot reads nothing Bolt's socket adapter
does not set too (it mirrors `retry_attempt`/`retry_reason` as the retry headers). Two are HTTP
only by nature and say so: a forged signature and the rate limiter's 429 exist only there.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
import structlog
from sqlalchemy import select
from structlog.testing import capture_logs

from bot.http.asgi import build_asgi
from bot.http.server import BackgroundServer
from bot.sandbox.sender import BotResponse, SentRequest
from bot.serve import build_bot
from bot.slack.app import build_bolt_app
from bot.slack.events import EVENT_SCOPE, REDELIVERY_HORIZON
from pipelines import Gatehouse
from pipelines.replays import ReplayGuard, forget_process_sightings
from storage.db import Database
from storage.replays import seen_table, signature_digest
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack, SlackSender
from tests.slack_harness import SIGNING_SECRET, SlackWorld, settings_for, slack_world

FORGED = "v0=" + "0" * 64
JSON = "application/json"


@pytest.fixture
def world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, slack_mode: str
) -> Iterator[SlackWorld]:
    """Each test runs both ways Slack reaches the bot: HTTP and Socket Mode."""
    with slack_world(fake_slack, sqlite_url, clock, mode=slack_mode) as built:
        yield built


@pytest.fixture
def http_world(fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock) -> Iterator[SlackWorld]:
    """What exists over HTTP only (a signature)."""
    with slack_world(fake_slack, sqlite_url, clock) as built:
        yield built


@contextmanager
def all_logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog entry at every level (the conftest fixture restores the configuration)."""
    with capture_logs() as logs:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
        yield logs


def publishes(world: SlackWorld) -> int:
    return len(world.fake.calls_to("views.publish"))


def event_body(world: SlackWorld, event_id: str, event: dict[str, Any]) -> str:
    """An Events API envelope as Slack posts it, with an event_id the test chooses."""
    return event_body_for(world.fake, event_id, event)


def event_body_for(fake: FakeSlack, event_id: str, event: dict[str, Any]) -> str:
    return json.dumps(
        {
            "token": fake.verification_token,
            "team_id": fake.team_id,
            "api_app_id": fake.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": fake.team_id,
                    "user_id": fake.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
    )


def home_opened(user: str = "U_ALICE") -> dict[str, Any]:
    return {
        "type": "app_home_opened",
        "user": user,
        "channel": "D" + user[1:],
        "tab": "home",
        "event_ts": f"{time.time():.6f}",
    }


def event_rows(world: SlackWorld) -> set[str]:
    with world.gatehouse.db.transaction() as conn:
        rows = conn.execute(select(seen_table.c.digest).where(seen_table.c.scope == EVENT_SCOPE))
        return {digest for (digest,) in rows}


_LAST_STAMP = [0]
_STAMP_LOCK = threading.Lock()


def signed_at() -> int:
    """A timestamp for a request signed anew: later than any this process signed before, so no
    two signatures of one body coincide (the ingress takes a signature once), and within the
    window (Slack's check is ±5 minutes)."""
    with _STAMP_LOCK:
        _LAST_STAMP[0] = max(int(time.time()) + 1, _LAST_STAMP[0] + 1)
        return _LAST_STAMP[0]


def deliver(
    world: SlackWorld, body: str, content_type: str = JSON, retry_num: int | None = None
) -> BotResponse:
    """`body` as Slack delivers it again: over HTTP signed anew at another second (Slack's
    retries come seconds to minutes apart, and a body signed twice in one second is one
    signature, which the ingress takes once); over Socket Mode as an envelope, unsigned."""
    if getattr(world, "mode", "http") == "socket":
        return world.slack.send(body, content_type, retry_num=retry_num)
    return world.slack.send(body, content_type, timestamp=signed_at(), retry_num=retry_num)


def redeliver(world: SlackWorld, request: SentRequest, retry_num: int) -> BotResponse:
    """Slack's retry of `request`: the same body, delivered again."""
    return deliver(world, request.body.decode(), request.headers["Content-Type"], retry_num)


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    """Poll for what a background thread (the SQLite sightings writer) is about to do."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- first deliveries and retries ----------------------------------------------------------------


def test_a_first_delivery_marked_retry_zero_publishes_the_home_tab(world: SlackWorld) -> None:
    """Socket Mode's `retry_attempt: 0`, which Bolt mirrors as `x-slack-retry-num: 0`."""
    response = world.slack.app_home_opened("U_ALICE", retry_num=0, retry_reason="")
    world.settle()
    assert response.status == 200
    assert publishes(world) == 1
    assert world.fake.home("U_ALICE") is not None


def test_a_redelivery_of_the_same_event_id_does_not_publish_twice(world: SlackWorld) -> None:
    first = world.slack.app_home_opened("U_ALICE")
    world.settle()
    with all_logs() as logs:
        again = [redeliver(world, first.request, n).status for n in (1, 2, 3)]
        world.settle()
    assert again == [200, 200, 200]
    assert publishes(world) == 1
    event_id = json.loads(first.request.body)["event_id"]
    dropped = [entry for entry in logs if entry["event"] == "slack.redelivery_dropped"]
    assert [(d["event_id"], d["retry"], d["log_level"]) for d in dropped] == [
        (event_id, "1", "info"),
        (event_id, "2", "info"),
        (event_id, "3", "info"),
    ]
    assert not any("exc_info" in entry for entry in logs)


def test_a_retry_of_an_unseen_event_id_is_processed(world: SlackWorld) -> None:
    """Slack retries what it did not see answered; Gatehouse may never have seen the first."""
    response = world.slack.app_home_opened("U_ALICE", retry_num=1)
    world.settle()
    assert response.status == 200
    assert publishes(world) == 1


def test_a_retry_after_a_badly_signed_first_delivery_is_processed(http_world: SlackWorld) -> None:
    """HTTP mode only (a Socket Mode envelope is not signed)."""
    world = http_world
    first = world.slack.app_home_opened("U_ALICE", signature=FORGED)
    assert first.status == 401
    retry = world.slack.resend(first.request, retry_num=1, retry_reason="http_error")
    world.settle()
    assert retry.status == 200
    assert publishes(world) == 1


def test_a_retry_after_the_bot_answered_429_is_processed(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    """HTTP mode only (the rate limit guards the HTTP server)."""
    # One token every 2 seconds: a forgery spends it, so the next request from this address is
    # 429'd until it comes back.
    with slack_world(
        fake_slack, sqlite_url, clock, http_rate_limit=0.5, http_rate_burst=1
    ) as world:
        assert world.slack.app_home_opened("U_ALICE", signature=FORGED).status == 401
        first = world.slack.app_home_opened("U_ALICE")
        assert first.status == 429
        world.settle()
        assert publishes(world) == 0
        retried: list[BotResponse] = []

        def retry_taken() -> bool:
            retried.append(redeliver(world, first.request, 1))
            return retried[-1].status != 429

        wait_for(retry_taken)
        world.settle()
        assert retried[-1].status == 200
        assert publishes(world) == 1


def test_slash_commands_and_clicks_resent_with_retry_headers_are_not_dropped(
    world: SlackWorld,
) -> None:
    """They carry no event_id; their own idempotence lives with what they decide."""
    first = world.slack.command("help", user_id="U_CAROL")
    world.settle()
    told = len(world.fake.ephemerals("U_CAROL"))
    again = redeliver(world, first.request, 1)
    world.settle()
    assert (first.status, again.status) == (200, 200)
    assert told >= 1 and len(world.fake.ephemerals("U_CAROL")) == 2 * told


# -- across replicas and over time ---------------------------------------------------------------


def test_two_bots_on_one_database_given_the_same_event_id_publish_once(
    fake_slack: FakeSlack, any_db_url: str, clock: FakeClock, slack_mode: str
) -> None:
    with (
        slack_world(fake_slack, any_db_url, clock, mode=slack_mode) as one,
        slack_world(fake_slack, any_db_url, clock, mode=slack_mode) as other,
    ):
        body = event_body(one, "Ev0SHARED01", home_opened())
        answers: list[int] = []
        start = threading.Barrier(2)

        def deliver_to(world: SlackWorld, retry: int) -> None:
            start.wait()
            answers.append(deliver(world, body, retry_num=retry).status)

        threads = [
            # Socket Mode's first delivery says retry 0; Slack's retry may reach the other replica.
            threading.Thread(target=deliver_to, args=(one, 0)),
            threading.Thread(target=deliver_to, args=(other, 1)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=15)
        one.settle()
        other.settle()
        assert answers == [200, 200]
        assert publishes(one) == 1
        # And later, to either one, it is still a redelivery.
        assert deliver(other, body, retry_num=2).status == 200
        assert deliver(one, body, retry_num=3).status == 200
        one.settle()
        other.settle()
        assert publishes(one) == 1


def test_event_ids_are_forgotten_after_the_redelivery_horizon(
    world: SlackWorld, clock: FakeClock
) -> None:
    first = world.slack.app_home_opened("U_ALICE")
    world.settle()
    first_id = json.loads(first.request.body)["event_id"]
    wait_for(lambda: event_rows(world) == {signature_digest(first_id)})

    clock.advance(REDELIVERY_HORIZON - timedelta(minutes=1))  # Slack's last retry is long past
    redeliver(world, first.request, 3)
    world.settle()
    assert publishes(world) == 1

    clock.advance(timedelta(minutes=2))
    later = world.slack.app_home_opened("U_BOB")  # its write deletes the expired rows
    world.settle()
    later_id = json.loads(later.request.body)["event_id"]
    wait_for(lambda: event_rows(world) == {signature_digest(later_id)})
    assert publishes(world) == 2
    redeliver(world, first.request, 1)  # no longer known: taken
    world.settle()
    assert publishes(world) == 3


# -- every request acked ---------------------------------------------------------------------------


def interaction(world: SlackWorld, payload: dict[str, Any]) -> BotResponse:
    body = urlencode({"payload": json.dumps(payload)})
    return world.slack.send(body, "application/x-www-form-urlencoded")


def unhandled_events() -> list[dict[str, Any]]:
    return [
        {
            "type": "message",
            "channel": "C_APPROVALS",
            "user": "U_ALICE",
            "text": "hello",
            "ts": "1700000000.000100",
            "channel_type": "channel",
            "event_ts": "1700000000.000100",
        },
        {
            "type": "app_mention",
            "channel": "C_APPROVALS",
            "user": "U_ALICE",
            "text": "<@U_GATEHOUSE> hi",
            "ts": "1700000000.000200",
            "event_ts": "1700000000.000200",
        },
        {
            "type": "member_joined_channel",
            "channel": "C_APPROVALS",
            "user": "U_BOB",
            "channel_type": "C",
            "event_ts": "1700000000.000300",
        },
        {"type": "app_home_opened", "user": "U_ALICE", "channel": "D_ALICE", "tab": "messages"},
        {
            "type": "tokens_revoked",
            "tokens": {"oauth": ["U_ALICE"], "bot": ["U_GATEHOUSE"]},
            "event_ts": "1700000000.000400",
        },
        {"type": "app_uninstalled", "event_ts": "1700000000.000500"},
    ]


@pytest.mark.parametrize("event", unhandled_events(), ids=lambda e: f"{e['type']}-{e.get('tab')}")
def test_every_event_is_acked_200_and_logs_no_exception(
    world: SlackWorld, event: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with all_logs() as logs:
        response = world.slack.send(
            event_body(world, f"Ev{event['type']}", event), "application/json"
        )
        world.settle()
    assert response.status == 200, response.text
    assert not any("exc_info" in entry or entry["log_level"] == "error" for entry in logs), logs
    assert not any(r.exc_info or r.levelno >= logging.ERROR for r in caplog.records)
    assert not [r for r in caplog.records if "nhandled" in r.getMessage()]  # Bolt's 404 warning
    assert publishes(world) == 0


def test_view_closed_and_clicks_nobody_listens_for_are_acked_200(
    world: SlackWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    user = {"id": "U_ALICE", "username": "alice", "name": "alice", "team_id": world.fake.team_id}
    common = {
        "team": {"id": world.fake.team_id, "domain": world.fake.team_domain},
        "user": user,
        "api_app_id": world.fake.app_id,
        "token": world.fake.verification_token,
        "is_enterprise_install": False,
        "enterprise": None,
    }
    view = {
        "id": "V_CLOSED01",
        "team_id": world.fake.team_id,
        "type": "modal",
        "callback_id": "someone_elses_modal",
        "private_metadata": "",
        "blocks": [],
        "state": {"values": {}},
        "app_id": world.fake.app_id,
    }
    with all_logs() as logs:
        closed = interaction(
            world, {"type": "view_closed", "view": view, "is_cleared": False, **common}
        )
        click = interaction(
            world,
            {
                "type": "block_actions",
                "trigger_id": "1.2.unknown",
                "container": {"type": "message", "channel_id": "C_APPROVALS"},
                "channel": {"id": "C_APPROVALS", "name": "approvals"},
                "actions": [
                    {
                        "action_id": "no.such.action",
                        "block_id": "b",
                        "type": "button",
                        "action_ts": "1700000000.1",
                    }
                ],
                **common,
            },
        )
        world.settle()
    assert (closed.status, click.status) == (200, 200)
    assert not any("exc_info" in entry or entry["log_level"] == "error" for entry in logs), logs
    assert not any(r.exc_info or r.levelno >= logging.ERROR for r in caplog.records)


@pytest.mark.parametrize(
    ("kind", "what_to_do"),
    [("tokens_revoked", "SLACK_BOT_TOKEN"), ("app_uninstalled", "reinstall")],
)
def test_revoked_tokens_and_an_uninstall_warn_the_operator_what_to_do(
    world: SlackWorld, kind: str, what_to_do: str
) -> None:
    [event] = [e for e in unhandled_events() if e["type"] == kind]
    with all_logs() as logs:
        response = world.slack.send(event_body(world, f"Ev{kind}", event), "application/json")
    assert response.status == 200
    [warning] = [entry for entry in logs if entry["event"] == f"slack.{kind}"]
    assert warning["log_level"] == "warning"
    assert warning["team"] == world.fake.team_id
    assert what_to_do in warning["hint"]


# -- the store ---------------------------------------------------------------------------------


def test_a_forgotten_event_id_is_taken_again_by_every_guard_on_the_database(
    any_db_url: str,
) -> None:
    """What the error handler does when a listener failed: Slack's retry must be taken."""
    rt = Gatehouse(Database(any_db_url), clock=FakeClock()).rt
    guard = ReplayGuard(rt, EVENT_SCOPE, window=REDELIVERY_HORIZON)
    now = rt.clock.now()
    assert guard.first_time("Ev0FAILED01", now)
    assert not guard.first_time("Ev0FAILED01", now)
    guard.forget("Ev0FAILED01")
    guard.flush()
    forget_process_sightings()  # as a restarted process (or a replica) reads the table
    again = ReplayGuard(rt, EVENT_SCOPE, window=REDELIVERY_HORIZON)
    assert again.first_time("Ev0FAILED01", now)
    assert not again.first_time("Ev0FAILED01", now)
    rt.db.dispose()


def test_a_delivery_whose_listener_failed_is_taken_again_when_slack_retries(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    """Bolt answers a listener that raised with a 500 (Slack retries; the ingress says 400):
    that delivery was not processed, so its retry is not a redelivery."""
    bot = build_bot(settings_for(fake_slack, sqlite_url), clock=clock)
    app = build_bolt_app(bot)
    attempts: list[str] = []

    @app.event("reaction_added")
    def fails_once(ack: Any, body: dict[str, Any]) -> None:
        attempts.append(body["event_id"])
        if len(attempts) == 1:
            raise RuntimeError("the listener failed")
        ack()

    asgi = build_asgi(app, settings=bot.settings, replays=ReplayGuard(bot.gatehouse.rt, "slack"))
    server = BackgroundServer(asgi).start()
    try:
        sender = SlackSender(server.url, SIGNING_SECRET, fake_slack)
        event = {"type": "reaction_added", "user": "U_ALICE", "reaction": "eyes"}
        body = event_body_for(fake_slack, "Ev0FLAKY001", event)
        with all_logs() as logs:
            first = sender.send(body, JSON, timestamp=signed_at())
            retry = sender.send(body, JSON, timestamp=signed_at(), retry_num=1)
            again = sender.send(body, JSON, timestamp=signed_at(), retry_num=2)
    finally:
        server.stop()
        bot.shutdown()
        bot.gatehouse.db.dispose()
    assert (first.status, retry.status, again.status) == (400, 200, 200)
    assert attempts == ["Ev0FLAKY001", "Ev0FLAKY001"]  # the second redelivery is dropped
    [failed] = [entry for entry in logs if entry["event"] == "slack.dispatch_failed"]
    assert (failed["log_level"], failed["name"]) == ("error", "reaction_added")
