"""The Slack sandbox on its own: its Web API validates and stores what a bot posts, its page and
assets are served, the page's state endpoint shows what the selected user sees, and the events
long-poll wakes on a change."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.sandbox import Sandbox
from bot.serve import serve_with_sandbox
from pipelines import Settings
from pipelines.config import ConfigurationError

GOOD_CARD = [
    {"type": "header", "text": {"type": "plain_text", "text": "Refund"}},
    {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "*150.00* for <@U_CAROL>"},
        "fields": [{"type": "mrkdwn", "text": "*Order*\nord_1"}],
    },
    {
        "type": "actions",
        "block_id": "decide",
        "elements": [
            {
                "type": "button",
                "action_id": "approve",
                "value": "a1",
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
            }
        ],
    },
]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(port=0) as running:
        yield running


def _client(sandbox: Sandbox) -> WebClient:
    return WebClient(token=sandbox.token, base_url=sandbox.api_url)


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def _state(sandbox: Sandbox, **params: str) -> dict[str, Any]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    status, _, body = _get(f"{sandbox.url}/sandbox/api/state?{query}")
    assert status == 200, body
    return dict(json.loads(body))


def test_the_web_api_stores_valid_cards_and_refuses_what_slack_would_refuse(
    sandbox: Sandbox,
) -> None:
    client = _client(sandbox)
    posted = client.chat_postMessage(channel="C_APPROVALS", text="refund", blocks=GOOD_CARD)
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(
            channel="C_APPROVALS",
            text="bad",
            blocks=[{"type": "header", "text": {"type": "mrkdwn", "text": "not plain"}}],
        )

    assert refused.value.response["error"] == "invalid_blocks"
    assert [r.method for r in sandbox.api.rejected] == ["chat.postMessage"]
    [shown] = _state(sandbox, user="U_ALICE", channel="approvals")["messages"]
    assert shown["ts"] == posted["ts"] and shown["blocks"] == GOOD_CARD


def test_the_page_and_its_assets_are_served_with_the_stable_selectors(sandbox: Sandbox) -> None:
    status, content_type, page = _get(sandbox.url + "/")
    js_status, js_type, script = _get(sandbox.url + "/static/sandbox.js")
    css_status, css_type, _css = _get(sandbox.url + "/static/sandbox.css")
    missing, _, _ = _get(sandbox.url + "/static/nope.js")

    assert (status, js_status, css_status, missing) == (200, 200, 200, 404)
    assert content_type.startswith("text/html") and js_type.startswith("text/javascript")
    assert css_type.startswith("text/css")
    for selector in (
        'data-testid="user-picker"',
        'data-testid="home-link"',
        'data-testid="composer"',
    ):
        assert selector.encode() in page
    for selector in ("thread-link", "confirm-ok", "confirm-cancel", "modal-submit", "input-error"):
        assert selector.encode() in script
    assert b"innerHTML" not in script  # text from the bot only ever becomes text nodes


def test_state_shows_channels_users_and_only_your_own_ephemerals(sandbox: Sandbox) -> None:
    client = _client(sandbox)
    sandbox.api.invite("C_GENERAL")  # the bot posts only where it was invited
    client.chat_postMessage(channel="C_GENERAL", text="hello")
    client.chat_postEphemeral(channel="C_GENERAL", user="U_CAROL", text="just for carol")

    carol = _state(sandbox, user="U_CAROL", channel="general")
    alice = _state(sandbox, user="U_ALICE", channel="C_GENERAL")

    assert [c["name"] for c in carol["channels"]] == ["approvals", "review", "alerts", "general"]
    groups = {u["id"]: u["groups"] for u in carol["users"]}
    assert "finance-leads" in groups["U_ALICE"] and groups["U_CAROL"] == []
    assert [(m["text"], m.get("ephemeral", False)) for m in carol["messages"]] == [
        ("hello", False),
        ("just for carol", True),
    ]
    assert [m["text"] for m in alice["messages"]] == ["hello"]


def test_a_thread_shows_behind_its_parent_and_an_uploaded_chart_is_served(
    sandbox: Sandbox,
) -> None:
    client = _client(sandbox)
    parent = client.chat_postMessage(channel="C_REVIEW", text="weekly review")
    client.chat_postMessage(channel="C_REVIEW", text="run 1", thread_ts=parent["ts"])
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 64
    client.files_upload_v2(channel="C_REVIEW", content=png, filename="chart.png", title="Chart")

    top = _state(sandbox, user="U_ALICE", channel="review")
    thread = _state(sandbox, user="U_ALICE", channel="review", thread=parent["ts"])["thread"]
    file_message = top["messages"][-1]
    status, content_type, served = _get(sandbox.url + file_message["files"][0]["url"])

    assert [m.get("text") for m in top["messages"]] == ["weekly review", ""]
    assert top["messages"][0]["reply_count"] == 1
    assert [m["text"] for m in thread] == ["weekly review", "run 1"]
    assert (status, content_type, served) == (200, "image/png", png)


def test_the_events_long_poll_answers_when_the_bot_posts(sandbox: Sandbox) -> None:
    since = _state(sandbox)["version"]
    answers: list[dict[str, Any]] = []

    def poll() -> None:
        status, _, body = _get(f"{sandbox.url}/sandbox/api/events?since={since}&timeout=10")
        answers.append(json.loads(body))

    waiter = threading.Thread(target=poll)
    waiter.start()
    _client(sandbox).chat_postMessage(channel="C_ALERTS", text="error rate spike")
    waiter.join(timeout=10)

    assert answers and answers[0]["version"] > since
    quiet = _get(f"{sandbox.url}/sandbox/api/events?since={answers[0]['version']}&timeout=0")
    assert json.loads(quiet[2])["version"] == answers[0]["version"]


def test_page_requests_without_a_bot_or_with_unknown_users_say_what_is_wrong(
    sandbox: Sandbox,
) -> None:
    def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            sandbox.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    no_bot = post("/sandbox/api/command", {"user": "U_ALICE", "text": "/gatehouse help"})
    nobody = post("/sandbox/api/command", {"user": "U_NOBODY", "text": "help"})

    assert no_bot[0] == 503 and "bot's URL" in no_bot[1]["error"]
    assert nobody[0] == 400 and "U_NOBODY" in nobody[1]["error"]


def test_serve_with_a_busy_sandbox_port_says_which_setting_to_change(sandbox: Sandbox) -> None:
    busy = int(sandbox.url.rsplit(":", 1)[1])
    settings = Settings.model_construct(
        **{**Settings().model_dump(), "sandbox_port": busy, "slack_bot_token": None}
    )

    with pytest.raises(ConfigurationError, match=f"GATEHOUSE_SANDBOX_PORT: .*:{busy}"):
        serve_with_sandbox(settings)
