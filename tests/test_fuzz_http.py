"""Hostile HTTP against the real ASGI app (Bolt on `/slack/events`, `/hooks/PIPELINE`, behind the
size and rate limits): malformed JSON, wrong types, huge bodies, bad, missing and stale
signatures, wrong content types, random forms, and validly signed garbage never get a 500 and
never change the database, beyond the `invalid_input` run a signed webhook delivery records."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text
from starlette.testclient import TestClient

import tests.schedule_pipelines  # noqa: F401  (registers the s_ pipelines)
from bot.http.asgi import build_asgi
from bot.http.limits import HTTPLimits, Limits, TokenBuckets
from bot.http.webhooks import sign_delivery, webhook_routes
from bot.serve import build_bot
from bot.slack.app import build_bolt_app
from bot.slack.bot import Bot
from pipelines.replays import flush_process_sightings
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SIGNING_SECRET, settings_for

HOOK_SECRET = "fuzz-hook-secret"
LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}
FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
junk_bytes = st.binary(max_size=2048)
bodies = st.one_of(
    junk_bytes,
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=5).map(
        lambda d: urlencode(d).encode()
    ),
    json_values.map(lambda v: urlencode({"payload": json.dumps(v)}).encode()),
    st.sampled_from(
        [
            b"{",
            b'{"order": ',
            b"[" * 5000,
            b'{"order": NaN, "amount": Infinity}',
            b'{"order": "A\\u0000", "amount": 1}',
            b'{"order": 1, "amount": "x"}',
            b"payload=%7B",
            b"payload=" + b"%5B" * 3000,
            b"\xff\xfe\x00",
        ]
    ),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
        "",
        "application/json; charset=utf-16",
    ]
)


def slack_signature(timestamp: str, body: bytes) -> str:
    """Slack's v0 signature over any bytes (slack_sdk's helper only signs UTF-8 text)."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()


class World:
    def __init__(self, bot: Bot, client: TestClient, approval_id: str) -> None:
        self.bot = bot
        self.client = client
        self.approval_id = approval_id  # pending: no forged click may decide it

    def snapshot(self) -> dict[str, list[Any]]:
        """Every row of every table, as compared before and after a request (the replay
        guard's sightings written first: on SQLite a background thread writes them)."""
        flush_process_sightings()
        db = self.bot.gatehouse.db
        rows: dict[str, list[Any]] = {}
        with db.engine.connect() as conn:
            for table in inspect(db.engine).get_table_names():
                found = conn.execute(text(f'SELECT * FROM "{table}"')).all()
                rows[table] = sorted(repr(tuple(r)) for r in found)
        return rows

    def slack_post(
        self, body: bytes, content_type: str, *, sign: str = "good", ts: int | None = None
    ) -> Any:
        stamp = str(int(time.time()) if ts is None else ts)
        headers = {"Content-Type": content_type} if content_type else {}
        if sign == "good":
            headers["X-Slack-Signature"] = slack_signature(stamp, body)
            headers["X-Slack-Request-Timestamp"] = stamp
        elif sign == "bad":
            headers["X-Slack-Signature"] = "v0=" + "0" * 64
            headers["X-Slack-Request-Timestamp"] = stamp
        elif sign == "stale":
            old = str(int(time.time()) - 3600)
            headers["X-Slack-Signature"] = slack_signature(old, body)
            headers["X-Slack-Request-Timestamp"] = old
        return self.client.post("/slack/events", content=body, headers=headers)


@pytest.fixture(scope="module")
def world(
    migrated_sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    path = tmp_path_factory.mktemp("fuzz") / "gatehouse.db"
    shutil.copy(migrated_sqlite_template, path)
    with FakeSlack() as fake:
        config = settings_for(
            fake,
            f"sqlite:///{path}",
            webhook_secrets={"s_hook": HOOK_SECRET},
            webhook_max_bytes=8192,
            http_max_body_bytes=64 * 1024,
            http_rate_limit=0.0,
        )
        bot = build_bot(config, clock=FakeClock())
        asgi = build_asgi(
            build_bolt_app(bot), webhook_routes(bot.gatehouse, config), settings=config
        )
        waiting = bot.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
        assert waiting.status == "waiting", waiting.error
        with TestClient(asgi, raise_server_exceptions=False) as client:
            yield World(bot, client, waiting.waiting_for[0])
        bot.shutdown()
        bot.gatehouse.db.dispose()


@FUZZ
@given(
    body=bodies, content_type=content_types, sign=st.sampled_from(["good", "bad", "none", "stale"])
)
def test_slack_events_never_500_and_never_change_state(
    world: World, body: bytes, content_type: str, sign: str
) -> None:
    before = world.snapshot()
    response = world.slack_post(body, content_type, sign=sign)
    world.bot.wait_idle(timeout=15)
    assert response.status_code < 500, response.text
    if sign != "good":
        assert response.status_code in (400, 401)  # 400: not even a Slack request's shape
    assert world.snapshot() == before


@FUZZ
@given(
    payload=st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["block_actions", "view_submission", "view_closed", "shortcut", "bogus"]
            ),
        },
        optional={
            "user": st.one_of(json_values, st.fixed_dictionaries({"id": st.text(max_size=12)})),
            "actions": st.lists(
                st.fixed_dictionaries(
                    {"action_id": st.text(max_size=30), "value": st.text(max_size=30)}
                ),
                max_size=2,
            ),
            "view": json_values,
            "message": json_values,
            "trigger_id": json_values,
        },
    )
)
def test_signed_interactions_with_garbage_payloads_never_500_and_never_change_state(
    world: World, payload: dict[str, Any]
) -> None:
    before = world.snapshot()
    body = urlencode({"payload": json.dumps(payload)}).encode()
    response = world.slack_post(body, "application/x-www-form-urlencoded")
    world.bot.wait_idle(timeout=15)
    assert response.status_code < 500, response.text
    assert world.snapshot() == before


@FUZZ
@given(
    action_id=st.sampled_from(["approval.approve", "approval.reject", "task.answer", "x"]),
    value=st.one_of(st.just("APPROVAL"), st.text(max_size=30), json_values),
    user=st.one_of(st.none(), json_values, st.fixed_dictionaries({"id": st.text(max_size=12)})),
    extra=st.dictionaries(
        st.sampled_from(["message", "container", "channel", "view", "trigger_id", "response_url"]),
        json_values,
        max_size=3,
    ),
    sign=st.sampled_from(["good", "bad"]),
)
def test_forged_or_garbled_approval_clicks_never_decide_and_never_500(
    world: World, action_id: str, value: Any, user: Any, extra: dict[str, Any], sign: str
) -> None:
    before = world.snapshot()
    payload: dict[str, Any] = {
        "type": "block_actions",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "actions",
                "type": "button",
                "value": world.approval_id if value == "APPROVAL" else value,
            }
        ],
        **extra,
    }
    if user is not None:
        payload["user"] = user
    body = urlencode({"payload": json.dumps(payload)}).encode()
    response = world.slack_post(body, "application/x-www-form-urlencoded", sign=sign)
    world.bot.wait_idle(timeout=15)
    assert response.status_code < 500, response.text
    assert world.bot.gatehouse.approval(world.approval_id).status == "pending"
    after = world.snapshot()
    # A signed click from somebody who may not decide is refused and audited; nothing else.
    changed = {t for t in after if after[t] != before[t]}
    assert changed <= {"audit_log"}, changed


# -- /hooks/* ---------------------------------------------------------------------------------

HOOK_STAMPS = itertools.count()  # every signed delivery at its own second, within the window
hook_bodies = st.one_of(
    bodies,
    # Valid JSON nested past any parser's recursion limit, around the 8 KiB limit.
    st.integers(1, 4000).map(
        lambda n: b'{"order": "A-1", "amount": 1, "x": ' + b"[" * n + b"]" * n + b"}"
    ),
    st.integers(8100, 8300).map(
        lambda n: b'{"order": "A-1", "amount": 1, "p": "' + b"x" * n + b'"}'
    ),
)
hook_credentials = st.sampled_from(
    ["good", "bad", "none", "stale", "future", "sha256", "no_timestamp", "other_secret", "stamp"]
)
# What a sender may put in X-Gatehouse-Timestamp (signed correctly over it, for "stamp").
hook_stamps = st.one_of(
    st.integers(0, 10**13).map(str),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=14),
)


def webhook_headers(world: World, body: bytes, credentials: str, stamp: str) -> dict[str, str]:
    """The credentials a sender (or an attacker) attaches; "good" is a fresh valid signature."""
    now = int(world.bot.gatehouse.rt.clock.now().timestamp())
    fresh = now - 290 + next(HOOK_STAMPS) % 580
    if credentials == "stamp":
        base = b"v1:" + stamp.encode() + b":" + body
        digest = hmac.new(HOOK_SECRET.encode(), base, hashlib.sha256).hexdigest()
        return {"X-Gatehouse-Timestamp": stamp, "X-Gatehouse-Signature": "v1=" + digest}
    if credentials == "good":
        return sign_delivery(HOOK_SECRET, body, fresh)
    if credentials == "bad":
        return {"X-Gatehouse-Timestamp": str(fresh), "X-Gatehouse-Signature": "v1=" + "0" * 64}
    if credentials == "stale":
        return sign_delivery(HOOK_SECRET, body, now - 301)
    if credentials == "future":
        return sign_delivery(HOOK_SECRET, body, now + 3600)
    if credentials == "sha256":  # the old body-only scheme, correctly computed
        digest = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return {"X-Gatehouse-Signature": "sha256=" + digest}
    if credentials == "no_timestamp":
        return {
            "X-Gatehouse-Signature": sign_delivery(HOOK_SECRET, body, fresh)[
                "X-Gatehouse-Signature"
            ]
        }
    if credentials == "other_secret":
        return sign_delivery("not-" + HOOK_SECRET, body, fresh)
    return {}


def post_hook(
    world: World, pipeline: str, body: bytes, headers: dict[str, str], *, chunked: bool
) -> Any:
    def pieces() -> Iterator[bytes]:
        half = len(body) // 2
        yield body[:half]
        yield body[half:]

    content: Any = pieces() if chunked else body
    return world.client.post(f"/hooks/{pipeline}", content=content, headers=headers)


@settings(FUZZ, max_examples=80)  # more dimensions than the Slack tests: more examples
@example(
    body=b'{"order": "A-1", "amount": 1}',
    content_type="application/json",
    credentials="good",
    pipeline="s_hook",
    chunked=False,
    key=None,
    replays=2,
    stamp="",
)
@example(  # a captured delivery re-sent with a fresh Idempotency-Key each time
    body=b'{"order": "A-2", "amount": 2}',
    content_type="application/json",
    credentials="good",
    pipeline="s_hook",
    chunked=True,
    key="fresh",
    replays=2,
    stamp="",
)
@example(  # signed and nested past the parser's limit: 400, and refused again when re-sent
    body=b'{"order": "A-3", "amount": 3, "x": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    content_type="application/json",
    credentials="good",
    pipeline="s_hook",
    chunked=False,
    key=None,
    replays=1,
    stamp="",
)
@given(
    body=hook_bodies,
    content_type=content_types,
    credentials=hook_credentials,
    pipeline=st.sampled_from(["s_hook", "s_unsecured", "s_no_hook", "nope", "..%2Fetc"]),
    chunked=st.booleans(),
    key=st.sampled_from([None, "fuzz-same-key", "fresh"]),
    replays=st.integers(0, 2),
    stamp=hook_stamps,
)
def test_webhooks_never_500_and_only_a_signed_delivery_records_a_run_once(
    world: World,
    body: bytes,
    content_type: str,
    credentials: str,
    pipeline: str,
    chunked: bool,
    key: str | None,
    replays: int,
    stamp: str,
) -> None:
    before = world.snapshot()
    headers = {"Content-Type": content_type} if content_type else {}
    headers.update(webhook_headers(world, body, credentials, stamp))
    now = int(world.bot.gatehouse.rt.clock.now().timestamp())
    if credentials == "stamp" and stamp.strip().isdigit() and abs(int(stamp) - now) <= 300:
        credentials = "good"  # drawn inside the window: a valid signature
    if key is not None:
        headers["Idempotency-Key"] = f"fresh-{next(HOOK_STAMPS)}" if key == "fresh" else key
    response = post_hook(world, pipeline, body, headers, chunked=chunked)
    assert response.status_code < 500, response.text
    after = world.snapshot()
    if credentials != "good" or pipeline != "s_hook":
        # 404 only where the client's URL normalisation left /hooks/ (../etc): no pipeline path.
        assert response.status_code in ((401, 404, 413) if ".." in pipeline else (401, 413))
        assert after == before
    else:
        assert response.status_code in (202, 400, 409, 413)
        answer = response.json()
        made = "run_id" in answer and not answer.get("duplicate")
        assert len(after["runs"]) - len(before["runs"]) == (1 if made else 0)
        assert after["approvals"] == before["approvals"]
        assert after["human_tasks"] == before["human_tasks"]
    for n in range(replays):  # the same request captured and sent again, a fresh key or not
        if key == "fresh":
            headers["Idempotency-Key"] = f"replay-{n}-{next(HOOK_STAMPS)}"
        again = post_hook(world, pipeline, body, headers, chunked=chunked)
        assert again.status_code < 500, again.text
        assert world.snapshot() == after
        if response.status_code in (202, 409) or (
            response.status_code == 400 and "run_id" in response.json()
        ):
            assert again.status_code == 200 and again.json()["duplicate"] is True
        else:  # refused before the replay guard (401, 413, not JSON, a bad key): refused again
            assert again.status_code == response.status_code


def test_a_body_over_the_limit_gets_413_by_content_length_and_by_stream(world: World) -> None:
    huge = b"x" * (64 * 1024 + 1)
    before = world.snapshot()
    assert world.slack_post(huge, "application/json").status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(65):
            yield b"y" * 1024

    streamed = world.client.post(
        "/slack/events", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert world.snapshot() == before


def test_a_client_over_its_rate_gets_429_with_retry_after_and_others_still_pass() -> None:
    now = [0.0]
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limits = HTTPLimits(app, Limits(rate=2.0, burst=3), now=lambda: now[0])

    def call(ip: str) -> int:
        sent.clear()

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        import asyncio

        scope = {"type": "http", "path": "/x", "headers": [], "client": (ip, 1)}
        asyncio.run(limits(scope, receive, send))
        return int(sent[0]["status"])

    assert [call("10.0.0.1") for _ in range(4)] == [200, 200, 200, 429]
    retry_after = dict(sent[0]["headers"])[b"retry-after"]
    assert retry_after == b"1"
    assert call("10.0.0.2") == 200  # another address has its own bucket
    now[0] += 0.5  # one token back at 2 per second
    assert call("10.0.0.1") == 200
    assert call("10.0.0.1") == 429


def test_buckets_forget_the_oldest_clients_beyond_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bot.http.limits as limits_module

    monkeypatch.setattr(limits_module, "MAX_TRACKED_CLIENTS", 3)
    buckets = TokenBuckets(rate=1.0, burst=1, now=lambda: 0.0)
    for ip in ("a", "b", "c", "d"):
        assert buckets.take(ip) == 0
    assert buckets.take("a") == 0  # forgotten, so a fresh bucket
    assert buckets.take("d") > 0
