"""bot/slack/fast_dispatch.py: the bot's Bolt app matches every request to the same listener as
Bolt's own matchers would, and its global middleware see the same arguments.

Each of Slack's payload shapes in tests/fixtures/slack/ (plus a few clicks and submissions of
the bot's own action and callback ids) is matched by every listener of the app `serve` builds,
once through the swapped-in `BodyMatcher`s and once through Bolt's `BuiltinListenerMatcher`
around the same predicate: the answers must agree, matcher by matcher. The journeys themselves
(tests/test_slack_payloads.py and the rest) run over HTTP and Socket Mode on the same app.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.listener_matcher.builtins import BuiltinListenerMatcher

from bot.serve import build_bot
from bot.slack.app import build_bolt_app
from bot.slack.fast_dispatch import BodyMatcher, DirectMiddleware, direct_middleware
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import settings_for

FIXTURES = Path(__file__).parent / "fixtures" / "slack"


@pytest.fixture
def app(fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock) -> Iterator[App]:
    bot = build_bot(settings_for(fake_slack, sqlite_url), clock=clock)
    try:
        yield build_bolt_app(bot)
    finally:
        bot.shutdown()


def bodies() -> list[tuple[str, dict[str, Any]]]:
    found = [(p.name, json.loads(p.read_text())) for p in sorted(FIXTURES.glob("*.json"))]
    for action_id in ("approve", "reject", "answer", "undo", "pause_alerts", "edit_approve"):
        found.append(
            (
                f"click {action_id}",
                {
                    "type": "block_actions",
                    "actions": [{"action_id": action_id, "block_id": "b", "value": "v"}],
                    "user": {"id": "U_ALICE"},
                },
            )
        )
    for callback_id in ("reject_reason", "human_task", "flag_review"):
        found.append(
            (
                f"submit {callback_id}",
                {
                    "type": "view_submission",
                    "view": {"type": "modal", "callback_id": callback_id, "state": {}},
                },
            )
        )
    return found


def request_of(body: dict[str, Any]) -> BoltRequest:
    return BoltRequest(body=json.dumps(body), headers={"content-type": ["application/json"]})


def test_every_listener_matches_as_bolts_own_matchers_would(app: App) -> None:
    swapped = [m for listener in app._listeners for m in listener.matchers]
    body_matchers = [m for m in swapped if isinstance(m, BodyMatcher)]
    # Every listener's type predicate (the first matcher a decorator sets up) was swapped.
    assert all(isinstance(listener.matchers[0], BodyMatcher) for listener in app._listeners)
    assert not any(
        type(m) is BuiltinListenerMatcher and m.arg_names == ["body"] for m in swapped
    ), "a body predicate was left to Bolt's injection"
    matched: set[int] = set()
    for name, body in bodies():
        request = request_of(body)
        for matcher in body_matchers:
            bolts = BuiltinListenerMatcher(func=matcher.func)
            ours = matcher.matches(request, BoltResponse(status=200))
            assert ours == bolts.matches(request, BoltResponse(status=200)), name
            if ours:
                matched.add(id(matcher))
    # Not vacuous: the shapes above reach many listeners, not none.
    assert len(matched) >= 5, len(matched)


def test_a_body_bolts_payload_views_choke_on_raises_as_it_did(app: App) -> None:
    """A view submission without `view.type` (Bolt's `to_step` reads it): Bolt's own first
    matcher raised KeyError, and Bolt's dispatch answered with its error path; ours raises too."""
    body = {"type": "view_submission", "view": {"callback_id": "reject_reason", "state": {}}}
    first = app._listeners[0].matchers[0]
    with pytest.raises(KeyError):
        BuiltinListenerMatcher(func=first.func).matches(request_of(body), BoltResponse(status=200))
    with pytest.raises(KeyError):
        first.matches(request_of(body), BoltResponse(status=200))


def test_a_body_bolts_payload_views_choke_on_raises_before_the_first_middleware(
    app: App,
) -> None:
    """Bolt's injection for the first global middleware raised there, before it ran; so does
    ours: back-pressure, the event check and the workspace guard never see such a body."""
    body = {"type": "view_submission", "view": {"callback_id": "reject_reason", "state": {}}}
    first = next(m for m in app._middleware_list if isinstance(m, DirectMiddleware))
    ran: list[bool] = []
    with pytest.raises(KeyError):
        first.process(
            req=request_of(body),
            resp=BoltResponse(status=200),
            next=lambda: ran.append(True) or BoltResponse(status=200),
        )
    assert ran == []


def test_the_global_middleware_are_called_directly(app: App) -> None:
    ours = [m for m in app._middleware_list if isinstance(m, DirectMiddleware)]
    assert len(ours) >= 2  # back-pressure and the event check (the workspace guard when set)


def test_a_middleware_of_other_arguments_is_refused() -> None:
    def wants_context(context: Any, next: Any) -> None:
        next()

    with pytest.raises(TypeError, match="req, resp, next"):
        direct_middleware(wants_context)


def test_a_direct_middleware_passes_req_resp_and_next_and_returns_its_answer() -> None:
    seen: list[Any] = []
    answer = BoltResponse(status=200, body="stopped")

    def refuse(req: Any, resp: BoltResponse, next: Any) -> BoltResponse:
        seen.extend([req, resp, next])
        return answer

    request, response = request_of({"type": "x"}), BoltResponse(status=200)

    def go_on() -> BoltResponse:
        return response

    assert direct_middleware(refuse).process(req=request, resp=response, next=go_on) is answer
    assert seen == [request, response, go_on]
