"""Back-pressure on Slack's requests (bot/slack/backpressure.py): over the work bound a command
is told Gatehouse is busy and nothing runs, an event is not taken (503 / no ack) and its
redelivery is, a click or a submission is 503'd; under it everything runs as before. Both modes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bot.sandbox.sender import NOT_ACKED
from bot.slack.backpressure import busy_answer
from bot.slack.bot import Bot
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, in_both_modes, slack_world
from tests.test_slack_events import event_rows, home_opened, publishes, redeliver

LIMIT = 2


@pytest.fixture
def world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[SlackWorld]:
    mode = request.getfixturevalue("slack_mode") if "slack_mode" in request.fixturenames else "http"
    with slack_world(fake_slack, sqlite_url, clock, mode=mode, slack_work_limit=LIMIT) as built:
        if built.socket_mode is not None:
            built.socket_mode.ack_timeout = 0.5  # an envelope left unacked: no 3 s wait
        yield built


def fill(bot: Bot) -> threading.Event:
    """Hold `LIMIT` unfinished items on the lanes until the returned event is set."""
    release = threading.Event()
    for _ in range(LIMIT):
        bot.submit(release.wait, 15)
    assert not bot.has_room()
    return release


def replies(world: SlackWorld) -> list[dict[str, Any]]:
    return [body for method, body in world.fake.calls if method == "response_url"]


def ack_text(response: Any) -> str:
    body = response.json if response.json is not None else json.loads(response.text or "{}")
    return str(body.get("text", ""))


def test_the_bound_counts_unfinished_work_on_every_lane(world: SlackWorld) -> None:
    bot = world.bot
    release = threading.Event()
    bot.submit(release.wait, 15)
    assert bot.has_room() and bot.unfinished() == 1
    bot.submit_ui(release.wait, 15)
    assert not bot.has_room() and bot.unfinished() == LIMIT
    release.set()
    world.settle()
    assert bot.has_room() and bot.unfinished() == 0


@in_both_modes
def test_a_command_while_the_work_is_full_is_told_busy_and_nothing_runs(
    world: SlackWorld,
) -> None:
    release = fill(world.bot)
    response = world.slack.command("pending", user_id="U_ALICE")
    assert response.status == 200
    assert ack_text(response).startswith(":hourglass: Gatehouse is busy and did not run")
    assert "`/gatehouse pending`" in ack_text(response)
    release.set()
    world.settle()
    assert replies(world) == []  # refused means not done later either
    again = world.slack.command("pending", user_id="U_ALICE")
    world.settle()
    assert again.status == 200 and not again.text  # the plain ack
    assert len(replies(world)) == 1


@in_both_modes
def test_an_event_while_the_work_is_full_is_not_taken_and_its_redelivery_is(
    world: SlackWorld,
) -> None:
    release = fill(world.bot)
    first = world.slack.event(home_opened("U_ALICE"))
    assert first.status == (NOT_ACKED if world.mode == "socket" else 503)
    assert event_rows(world) == set()  # not recorded as seen: the redelivery is not a replay
    release.set()
    world.settle()
    assert publishes(world) == 0
    retry = redeliver(world, first.request, 1)
    world.settle()
    assert retry.status == 200
    assert publishes(world) == 1  # nothing lost: Slack's redelivery did the work, once


@in_both_modes
def test_under_the_bound_requests_run_as_before(world: SlackWorld) -> None:
    release = threading.Event()
    world.bot.submit(release.wait, 15)  # one short of the bound
    response = world.slack.command("pending", user_id="U_ALICE")
    release.set()
    world.settle()
    assert response.status == 200 and not response.text
    assert len(replies(world)) == 1


def test_url_verification_passes_even_when_full(world: SlackWorld) -> None:
    """HTTP only: Slack sends url_verification only to a Request URL."""
    release = fill(world.bot)
    try:
        response = world.slack.url_verification("the-challenge")
    finally:
        release.set()
    assert response.status == 200 and "the-challenge" in response.text


@pytest.mark.parametrize(
    "kind", ["block_actions", "view_submission", "block_suggestion", "shortcut"]
)
def test_an_interaction_while_full_is_503_so_slack_says_it_did_not_go_through(kind: str) -> None:
    answer = busy_answer({"type": kind, "user": {"id": "U_ALICE"}})
    assert answer is not None and answer.status == 503
    assert "busy" in json.loads(answer.body)["error"]


def test_what_carries_no_work_has_no_busy_answer() -> None:
    assert busy_answer({"type": "url_verification", "challenge": "x"}) is None
    assert busy_answer({"type": "view_closed"}) is None
