"""`/slack/events` verifies before it reads, through the real HTTP server on loopback: deep JSON
from anyone is a 401 (a 400 when signed), never a 500 with a traceback; a signed request is
taken once; the per-address rate limit spends tokens on forgeries, never on Slack's verified
traffic; `X-Forwarded-For` counts only from a trusted proxy; a body over the cap is a 413."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import time
from urllib.parse import urlencode

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from bot.http.asgi import build_asgi
from bot.http.server import BackgroundServer
from bot.sandbox.sender import SentRequest
from pipelines import Settings
from pipelines.inspect import run_history
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SIGNING_SECRET, SlackWorld, slack_world

LARGE_REFUND = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}
SMALL_REFUND = '{"order_id": "ord_1001", "amount": "12.50", "reason": "scratched"}'
SLOW_REFILL = 0.01  # requests per second: no token comes back while a test runs


def slack_signature(timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()


def post(
    world: SlackWorld,
    body: bytes,
    *,
    sign: str = "good",
    content_type: str = "application/x-www-form-urlencoded",
    forwarded_for: str | None = None,
    headers: dict[str, str] | None = None,
    timestamp: int | None = None,
    chunk: int = 0,
) -> tuple[int, str]:
    """POST to `/slack/events` as raw HTTP: signed (`good`), forged (`bad`) or bare (`none`);
    with `chunk`, the body goes chunked in pieces of that size, with no Content-Length."""
    sent = {"Content-Type": content_type, **(headers or {})}
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    if sign == "good":
        sent |= {
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": slack_signature(stamp, body),
        }
    elif sign == "bad":
        sent |= {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + "0" * 64}
    if forwarded_for is not None:
        sent["X-Forwarded-For"] = forwarded_for
    connection = http.client.HTTPConnection(world.server.host, world.server.port, timeout=30)
    try:
        if chunk:
            pieces = (body[start : start + chunk] for start in range(0, len(body), chunk))
            connection.request(
                "POST", "/slack/events", body=pieces, headers=sent, encode_chunked=True
            )
        else:
            connection.request("POST", "/slack/events", body=body, headers=sent)
        reply = connection.getresponse()
        return reply.status, reply.read().decode()
    finally:
        connection.close()


def repost(world: SlackWorld, request: SentRequest) -> tuple[int, str]:
    """Exactly the bytes and headers that went before: a replay, not Slack's re-signed retry."""
    return post(world, request.body, sign="as sent", headers=request.headers)


def command_body(text: str, user_id: str = "U_CAROL") -> bytes:
    fields = {
        "command": "/gatehouse",
        "text": text,
        "user_id": user_id,
        "user_name": user_id.lower(),
        "channel_id": "C_APPROVALS",
        "team_id": "T_FAKE",
        "response_url": "http://127.0.0.1:9/nowhere",
        "trigger_id": "1.2.3",
    }
    return urlencode(fields).encode()


def test_json_nested_deep_is_401_unsigned_and_400_signed_never_a_500_or_a_traceback(
    world: SlackWorld, capfd: pytest.CaptureFixture[str]
) -> None:
    deep_json = b'{"a":' * 40_000 + b"1" + b"}" * 40_000
    deep_payload = b"payload=" + b"%5B" * 40_000 + b"%5D" * 40_000
    answers = [
        post(world, deep_json, sign="none", content_type="application/json")[0],
        post(world, deep_json, sign="bad", content_type="application/json")[0],
        post(world, deep_payload, sign="none")[0],
        post(world, deep_json, content_type="application/json")[0],
        post(world, deep_payload)[0],
    ]
    world.settle()
    assert answers == [401, 401, 401, 400, 400]
    printed = capfd.readouterr()
    assert "Traceback" not in printed.out + printed.err
    assert "Exception in ASGI application" not in printed.out + printed.err
    assert world.gatehouse.runs() == []


def test_a_replayed_slash_command_triggers_one_run_and_the_replays_get_an_empty_200(
    fake_slack: FakeSlack, any_db_url: str, clock: FakeClock
) -> None:
    with slack_world(fake_slack, any_db_url, clock) as world:
        first = world.slack.command(f"trigger refund_request {SMALL_REFUND}", user_id="U_CAROL")
        replays = [repost(world, first.request) for _ in range(2)]
        world.settle()
        assert first.status == 200
        assert replays == [(200, ""), (200, "")]
        [run] = world.gatehouse.runs()
        assert (run.status, run.trigger_user) == ("succeeded", "U_CAROL")


@pytest.mark.postgres
def test_a_database_error_in_the_replay_check_is_a_503_and_takes_nothing(
    fake_slack: FakeSlack, postgres_url: str, clock: FakeClock
) -> None:
    """The check cannot say the request is new, so the request is not taken: Slack retries a
    5xx. Losing the table stands in for a database that refuses the write. (PostgreSQL: on
    SQLite the check is in memory, pipelines/replays.py.)"""
    with slack_world(fake_slack, postgres_url, clock) as world:
        with world.bot.gatehouse.rt.db.transaction() as conn:
            conn.execute(text("DROP TABLE seen_signatures"))
        status, body = post(world, command_body(f"trigger refund_request {SMALL_REFUND}"))
        world.settle()
        assert status == 503 and "database is unreachable" in body
        assert world.gatehouse.runs() == []


def test_a_replayed_view_submission_decides_once_and_tells_nobody_twice(
    fake_slack: FakeSlack, any_db_url: str, clock: FakeClock
) -> None:
    with slack_world(fake_slack, any_db_url, clock) as world:
        run = world.gatehouse.trigger("refund_request", LARGE_REFUND, user="U_CAROL")
        [card] = world.approval_cards()
        world.slack.block_action("approval.reject", message=card["ts"], user_id="U_BOB")
        world.settle()
        [modal] = world.fake.views
        submitted = world.slack.view_submission(
            "approval.reject_reason",
            {"reason": {"reason": "duplicate request"}},
            user_id="U_BOB",
            view_id=modal["id"],
        )
        world.settle()
        told = len(world.fake.ephemerals("U_BOB"))
        replays = [repost(world, submitted.request) for _ in range(2)]
        world.settle()
        assert replays == [(200, ""), (200, "")]
        assert world.gatehouse.run(run.id).status == "rejected"
        events = [e["event"] for e in run_history(world.gatehouse.rt, run.id)["audit"]]
        assert events.count("approval.rejected") == 1, events
        assert len(world.fake.ephemerals("U_BOB")) == told


def test_the_same_command_newly_signed_is_taken_again(world: SlackWorld) -> None:
    """The guard remembers signatures, not bodies: a body signed at another second is another
    request (Slack's retries are re-signed; an event's redelivery is dropped by its event_id)."""
    first = world.slack.command(f"trigger refund_request {SMALL_REFUND}", user_id="U_CAROL")
    again = post(world, first.request.body, timestamp=int(time.time()) - 10)
    world.settle()
    assert (first.status, again[0]) == (200, 200)
    assert len(world.gatehouse.runs()) == 2


def test_a_burst_of_signed_commands_is_never_429d_while_forgeries_from_one_address_are(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    with slack_world(
        fake_slack, sqlite_url, clock, http_rate_limit=SLOW_REFILL, http_rate_burst=5
    ) as world:
        signed = [world.slack.command("help", user_id="U_CAROL").status for _ in range(30)]
        forged = [post(world, command_body("help"), sign="bad")[0] for _ in range(8)]
        world.settle()
    assert signed == [200] * 30
    assert forged == [401] * 5 + [429] * 3


def test_unsigned_bodies_too_large_to_verify_spend_tokens_too(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    with slack_world(
        fake_slack, sqlite_url, clock, http_rate_limit=SLOW_REFILL, http_rate_burst=3
    ) as world:
        huge = b"x" * 300_000
        answers = [post(world, huge, sign="none")[0] for _ in range(5)]
    assert answers == [413] * 3 + [429] * 2


def test_x_forwarded_for_is_ignored_without_trusted_proxies(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    with slack_world(
        fake_slack, sqlite_url, clock, http_rate_limit=SLOW_REFILL, http_rate_burst=2
    ) as world:
        answers = [
            post(world, b"token=x", sign="bad", forwarded_for=f"203.0.113.{n}")[0] for n in range(4)
        ]
    assert answers == [401, 401, 429, 429]  # one address, whatever it claims to forward


def test_x_forwarded_for_is_honoured_from_a_trusted_proxy(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    with slack_world(
        fake_slack,
        sqlite_url,
        clock,
        http_rate_limit=SLOW_REFILL,
        http_rate_burst=2,
        trusted_proxies=["127.0.0.1"],
    ) as world:
        same_client = [
            post(world, b"token=x", sign="bad", forwarded_for="203.0.113.7")[0] for _ in range(3)
        ]
        other_client = post(world, b"token=x", sign="bad", forwarded_for="203.0.113.8")[0]
    assert same_client == [401, 401, 429]
    assert other_client == 401  # another client behind the proxy has its own bucket


def test_a_signed_body_over_the_cap_gets_413_by_length_and_by_stream_and_does_nothing(
    world: SlackWorld,
) -> None:
    body = command_body("help " + "x" * 262_144)
    assert len(body) > 262_144  # GATEHOUSE_SLACK_MAX_BODY_BYTES by default
    by_length = post(world, body)
    by_stream = post(world, body, chunk=16_384)
    world.settle()
    assert (by_length[0], by_stream[0]) == (413, 413)
    assert "GATEHOUSE_SLACK_MAX_BODY_BYTES" in by_length[1]
    assert world.fake.ephemerals("U_CAROL") == []


def test_the_cap_is_the_setting(fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock) -> None:
    with slack_world(fake_slack, sqlite_url, clock, slack_max_body_bytes=2048) as world:
        assert world.slack.command("help " + "x" * 1000).status == 200
        assert world.slack.command("help " + "x" * 3000).status == 413


def test_trusted_proxies_read_as_a_json_or_comma_list_and_refuse_everyone() -> None:
    assert Settings(trusted_proxies="10.0.0.5, 10.1.0.0/16").trusted_proxies == [
        "10.0.0.5",
        "10.1.0.0/16",
    ]
    assert Settings(trusted_proxies='["::1"]').trusted_proxies == ["::1"]
    assert Settings().trusted_proxies == []
    for bad in ("*", "proxy.internal", "[oops"):
        with pytest.raises(ValidationError):
            Settings(trusted_proxies=bad)


def test_socket_mode_serves_no_slack_events_route() -> None:
    """Socket Mode has no signatures to check: the HTTP server serves the rest, not Slack."""
    server = BackgroundServer(build_asgi(None, settings=Settings())).start()
    try:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
        connection.request("POST", "/slack/events", body=b"{}")
        assert connection.getresponse().status == 404
        connection.close()
        connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        server.stop()
