"""The sandbox page's API driving the real bot: a slash command from the composer, a click on a
card's button, a modal's Submit, all reaching the bot's `/slack/events` as signed requests in
Slack's shapes, and the bot's answers showing up where Slack would show them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from bot.sandbox import Sandbox
from tests.fakes.clock import FakeClock
from tests.slack_harness import SIGNING_SECRET, SlackWorld, slack_world

LARGE_REFUND = 'trigger refund_request order_id=ord_1002 amount=150.00 reason="never delivered"'


@pytest.fixture
def sandbox(sqlite_url: str, clock: FakeClock) -> Iterator[tuple[Sandbox, SlackWorld]]:
    with (
        Sandbox(signing_secret=SIGNING_SECRET, port=0) as running,
        slack_world(running.api, sqlite_url, clock) as world,
    ):
        running.connect_bot(world.server.url + "/slack/events")
        yield running, world


def _post(sandbox: Sandbox, action: str, **body: Any) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{sandbox.url}/sandbox/api/{action}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{action}: {exc.code} {exc.read()!r}") from None


def _state(sandbox: Sandbox, user: str, channel: str = "approvals") -> dict[str, Any]:
    url = f"{sandbox.url}/sandbox/api/state?user={user}&channel={channel}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.loads(response.read()))


def _texts(node: Any) -> str:
    if isinstance(node, dict):
        own = [node["text"]] if isinstance(node.get("text"), str) else []
        return "\n".join(own + [_texts(v) for v in node.values() if isinstance(v, dict | list)])
    if isinstance(node, list):
        return "\n".join(_texts(v) for v in node)
    return ""


def _refund_card(sandbox: Sandbox, world: SlackWorld) -> dict[str, Any]:
    """Carol asks for a large refund from #general with the composer; its card in #approvals."""
    answer = _post(
        sandbox, "command", user="U_CAROL", channel="general", text=f"/gatehouse {LARGE_REFUND}"
    )
    assert answer["ok"] and answer["status"] == 200, answer
    world.settle()
    [card] = [m for m in _state(sandbox, "U_CAROL")["messages"] if "approval.approve" in str(m)]
    return card


def test_a_slash_command_from_the_composer_reaches_the_bot_and_answers_privately(
    sandbox: tuple[Sandbox, SlackWorld],
) -> None:
    running, world = sandbox
    answer = _post(running, "command", user="U_CAROL", channel="general", text="/gatehouse help")
    world.settle()

    [request] = [b for b in running.api.calls if b[0] == "response_url"]
    carol = _state(running, "U_CAROL", "general")["messages"]
    alice = _state(running, "U_ALICE", "general")["messages"]
    assert answer["status"] == 200
    assert request[1]["response_type"] == "ephemeral"
    assert [m["ephemeral"] for m in carol] == [True] and "/gatehouse" in _texts(carol)
    assert alice == []


def test_an_approver_clicks_approve_and_the_card_updates(
    sandbox: tuple[Sandbox, SlackWorld],
) -> None:
    running, world = sandbox
    card = _refund_card(running, world)
    [run] = world.gatehouse.runs(pipeline="refund_request")

    answer = _post(
        running,
        "click",
        user="U_ALICE",
        ts=card["ts"],
        action_id="approval.approve",
        block_id=card["blocks"][-1].get("block_id"),
    )
    world.settle()

    assert answer["ok"], answer
    [updated] = [m for m in _state(running, "U_ALICE")["messages"] if m["ts"] == card["ts"]]
    assert "Approved by" in _texts(updated["blocks"])
    assert "approval.approve" not in str(updated["blocks"])
    assert world.gatehouse.run(run.id).status == "succeeded"
    assert running.api.rejected == []


def test_someone_who_is_not_an_approver_gets_the_refusal_as_an_ephemeral(
    sandbox: tuple[Sandbox, SlackWorld],
) -> None:
    running, world = sandbox
    card = _refund_card(running, world)

    _post(running, "click", user="U_OLGA", ts=card["ts"], action_id="approval.approve")
    world.settle()

    olga = _state(running, "U_OLGA")["messages"]
    [refusal] = [m for m in olga if m.get("ephemeral")]
    assert "may not approve" in refusal["text"]
    assert all(not m.get("ephemeral") for m in _state(running, "U_ALICE")["messages"])
    [still] = [m for m in olga if m["ts"] == card["ts"]]
    assert "approval.approve" in str(still["blocks"])


def test_a_modal_submission_with_errors_shows_them_then_a_good_one_closes_it(
    sandbox: tuple[Sandbox, SlackWorld],
) -> None:
    running, world = sandbox
    card = _refund_card(running, world)
    _post(running, "click", user="U_BOB", ts=card["ts"], action_id="approval.reject")
    world.settle()
    modal = _state(running, "U_BOB")["modal"]
    assert modal is not None and _state(running, "U_ALICE")["modal"] is None

    empty = _post(running, "submit", user="U_BOB", view_id=modal["id"], values={})
    shown = _state(running, "U_BOB")["modal"]
    good = _post(
        running,
        "submit",
        user="U_BOB",
        view_id=modal["id"],
        values={"reason": {"reason": "duplicate request"}},
    )
    world.settle()

    assert empty["body"]["response_action"] == "errors"
    assert set(shown["errors"]) == {"reason"} and empty["modal"]["errors"] == shown["errors"]
    assert good["ok"] and good["modal"] is None
    assert _state(running, "U_BOB")["modal"] is None
    [updated] = [m for m in _state(running, "U_BOB")["messages"] if m["ts"] == card["ts"]]
    assert "Rejected by" in _texts(updated["blocks"])


def test_opening_app_home_publishes_the_users_home_view(
    sandbox: tuple[Sandbox, SlackWorld],
) -> None:
    running, world = sandbox
    _post(running, "home", user="U_ALICE")
    world.settle()

    home = _state(running, "U_ALICE")["home"]
    assert home is not None and home["type"] == "home"
    assert _state(running, "U_CAROL")["home"] is None


def test_closing_a_modal_takes_it_off_the_page(sandbox: tuple[Sandbox, SlackWorld]) -> None:
    running, world = sandbox
    card = _refund_card(running, world)
    _post(running, "click", user="U_BOB", ts=card["ts"], action_id="approval.reject")
    world.settle()
    modal = _state(running, "U_BOB")["modal"]

    _post(running, "close", user="U_BOB", view_id=modal["id"])

    assert _state(running, "U_BOB")["modal"] is None
