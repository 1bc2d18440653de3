"""Hostile bodies at `/slack/events` through the real HTTP server, as `gatehouse serve` has it
(replays refused): JSON and forms nested up to 100,000 deep, bodies around and far over the cap,
sent whole or chunked, forged, stale, bare and replayed. Never a 500; without a valid signature
nothing in the database changes; a replay changes nothing either and gets an empty 200."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

from pipelines.replays import flush_process_sightings
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, slack_world
from tests.test_slack_ingress import post

CAP = 262_144  # GATEHOUSE_SLACK_MAX_BODY_BYTES by default
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

OPENERS = {
    "json_array": (b"[", b"]", "application/json"),
    "json_object": (b'{"a":', b"}", "application/json"),
    "payload_array": (b"%5B", b"%5D", "application/x-www-form-urlencoded"),
    "payload_object": (b"%7B%22a%22%3A", b"%7D", "application/x-www-form-urlencoded"),
}


def nested(kind: str, depth: int) -> tuple[bytes, str]:
    opener, closer, content_type = OPENERS[kind]
    prefix = b"payload=" if kind.startswith("payload") else b""
    return prefix + opener * depth + b"1" + closer * depth, content_type


bodies = st.one_of(
    st.tuples(st.sampled_from(sorted(OPENERS)), st.integers(1, 100_000)).map(lambda t: nested(*t)),
    st.tuples(
        st.integers(CAP - 64, CAP + 64) | st.integers(CAP, 4 * CAP),
        st.sampled_from(["application/json", "application/x-www-form-urlencoded"]),
    ).map(lambda t: (b"{" * t[0], t[1])),
    st.binary(max_size=4096).map(lambda b: (b, "application/x-www-form-urlencoded")),
    st.sampled_from(
        [
            (
                b"command=%2Fgatehouse&text=help&user_id=U_CAROL",
                "application/x-www-form-urlencoded",
            ),
            (b'{"type": "url_verification", "challenge": "c"}', "application/json"),
            (
                b'{"type": "event_callback", "event": {"type": "app_home_opened"}}',
                "application/json",
            ),
            (
                b"payload=%7B%22type%22%3A%22view_submission%22%7D",
                "application/x-www-form-urlencoded",
            ),
        ]
    ),
)


def snapshot(world: SlackWorld) -> dict[str, list[str]]:
    """Every row of every table, as compared before and after a request (the replay guard's
    sightings written first: on SQLite a background thread writes them)."""
    flush_process_sightings()
    db = world.gatehouse.db
    rows: dict[str, list[str]] = {}
    with db.engine.connect() as conn:
        for table in inspect(db.engine).get_table_names():
            found = conn.execute(text(f'SELECT * FROM "{table}"')).all()
            rows[table] = sorted(repr(tuple(r)) for r in found)
    return rows


@pytest.fixture(scope="module")
def world(
    migrated_sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SlackWorld]:
    path = tmp_path_factory.mktemp("ingress-fuzz") / "gatehouse.db"
    shutil.copy(migrated_sqlite_template, path)
    with (
        FakeSlack() as fake,
        slack_world(fake, f"sqlite:///{path}", FakeClock(), http_rate_limit=0.0) as built,
    ):
        yield built


@FUZZ
@example(body=nested("json_array", 1_000), sign="none", chunk=0)
@example(body=nested("json_object", 1_000), sign="good", chunk=0)
@example(body=nested("payload_array", 60_000), sign="replay", chunk=4096)
@example(body=(b"{" * (CAP + 1), "application/json"), sign="good", chunk=1024)
@given(
    body=bodies,
    sign=st.sampled_from(["good", "bad", "none", "stale", "replay"]),
    chunk=st.sampled_from([0, 1, 1024, 65_536]),
)
def test_slack_events_never_500_and_change_nothing_without_a_valid_signature(
    world: SlackWorld, body: tuple[bytes, str], sign: str, chunk: int
) -> None:
    raw, content_type = body
    if chunk == 1 and len(raw) > 4096:
        chunk = 4096  # a byte a chunk is slow, not more hostile, past a few kilobytes
    before = snapshot(world)
    options: dict[str, Any] = {"content_type": content_type, "chunk": chunk}
    stamp = int(time.time()) - (3600 if sign == "stale" else 0)
    signing = "good" if sign in ("stale", "replay") else sign
    status, reply = post(world, raw, sign=signing, timestamp=stamp, **options)
    world.settle()
    assert status < 500, reply
    if len(raw) > CAP:
        assert status == 413
    if sign in ("bad", "none", "stale") or len(raw) > CAP:
        assert status in (401, 413)
        assert snapshot(world) == before
    if sign == "replay":
        accepted = snapshot(world)
        again = post(world, raw, timestamp=stamp, **options)  # the same signature
        world.settle()
        assert again == ((200, "") if status not in (401, 413) else (status, again[1]))
        assert snapshot(world) == accepted
