"""The sandbox behaves as Slack's client does where a person notices: a message's ts is the
time it was posted; who you are and the modals you opened belong to your browser (its cookie),
not to the whole sandbox; closing a modal tells the bot only if the view asked; the ephemeral
that answers a click is shown beside the message clicked; the page has a favicon."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs

import pytest
from slack_sdk import WebClient

from bot.sandbox import Sandbox, SlackSender, SlackWebApi
from bot.sandbox.page import COOKIE
from tests.fakes.clock import FakeClock
from tests.slack_harness import (
    SIGNING_SECRET,
    SlackWorld,
    in_both_modes,
    requested_mode,
    slack_world,
)

LARGE_REFUND = 'trigger refund_request order_id=ord_1002 amount=150.00 reason="never delivered"'
NOTIFYING_VIEW = {
    "type": "modal",
    "callback_id": "sandbox.notify",
    "title": {"type": "plain_text", "text": "Tell me"},
    "close": {"type": "plain_text", "text": "Cancel"},
    "notify_on_close": True,
    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "closing tells the app"}}],
}


class Browser:
    """One browser: keeps the sandbox's cookie between requests, as a browser does."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.cookie: str | None = None
        self.set_cookies: list[str] = []

    def request(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.sandbox.url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        if self.cookie is not None:
            request.add_header("Cookie", f"{COOKIE}={self.cookie}")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                status, data, headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            status, data, headers = exc.code, exc.read(), exc.headers
        for header in headers.get_all("Set-Cookie") or []:
            self.set_cookies.append(header)
            self.cookie = SimpleCookie(header)[COOKIE].value
        return status, data

    def open_page(self, query: str = "") -> int:
        return self.request("/" + query)[0]

    def state(self, channel: str = "approvals") -> dict[str, Any]:
        status, data = self.request(f"/sandbox/api/state?channel={channel}")
        assert status == 200, data
        return dict(json.loads(data))

    def post(self, action: str, **body: Any) -> dict[str, Any]:
        status, data = self.request(f"/sandbox/api/{action}", body)
        assert status == 200, data
        return dict(json.loads(data))


# -- message timestamps ------------------------------------------------------------------------


def test_a_message_ts_is_the_time_it_was_posted_by_the_sandbox_clock() -> None:
    now = [1_796_000_000.25]
    with SlackWebApi(clock=lambda: now[0]) as fake:
        client = WebClient(token=fake.token, base_url=fake.api_url)
        first = client.chat_postMessage(channel="C_APPROVALS", text="one")["ts"]
        now[0] += 300.5  # five minutes later
        later = client.chat_postMessage(channel="C_APPROVALS", text="two")["ts"]
        fake.advance(60)  # the fake's own clock moves too
        advanced = client.chat_postMessage(channel="C_APPROVALS", text="three")["ts"]

    assert first == "1796000000.250000"
    assert later == "1796000300.750000"
    assert advanced == "1796000360.750000"


def test_ts_stay_unique_and_increasing_when_the_clock_stands_still_or_steps_back() -> None:
    now = [1_796_000_000.0]
    with SlackWebApi(clock=lambda: now[0]) as fake:
        client = WebClient(token=fake.token, base_url=fake.api_url)
        posted = [client.chat_postMessage(channel="C_REVIEW", text=str(i))["ts"] for i in range(3)]
        now[0] -= 10  # the wall clock stepped back (NTP)
        posted.append(client.chat_postMessage(channel="C_REVIEW", text="after")["ts"])
        ephemeral = client.chat_postEphemeral(channel="C_REVIEW", user="U_ALICE", text="e")

    assert posted[:3] == ["1796000000.000000", "1796000000.000001", "1796000000.000002"]
    assert posted[3] == "1796000000.000003"
    assert ephemeral["message_ts"] == "1796000000.000004"
    assert [m["ts"] for m in fake.messages("C_REVIEW")] == posted


def test_the_sandbox_stamps_messages_with_the_wall_clock() -> None:
    with Sandbox(port=0) as running:
        client = WebClient(token=running.token, base_url=running.api_url)
        before = time.time()
        ts = client.chat_postMessage(channel="C_APPROVALS", text="now")["ts"]
        after = time.time()

    assert before - 0.001 <= float(ts) <= after + 0.001


# -- who you are, per browser ------------------------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(port=0) as running:
        yield running


def test_a_new_browser_is_alice_and_gets_its_own_cookie(sandbox: Sandbox) -> None:
    first, second = Browser(sandbox), Browser(sandbox)
    assert first.open_page() == 200 and second.open_page() == 200

    assert first.state()["user"] == "U_ALICE" and second.state()["user"] == "U_ALICE"
    assert first.cookie and second.cookie and first.cookie != second.cookie
    [header] = first.set_cookies
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header


def test_the_picker_changes_who_you_are_in_this_browser_only(sandbox: Sandbox) -> None:
    mine, theirs = Browser(sandbox), Browser(sandbox)
    mine.open_page()
    theirs.open_page()

    answer = mine.post("user", user="U_BOB")

    assert answer == {"ok": True, "user": "U_BOB"}
    assert mine.state()["user"] == "U_BOB"
    assert theirs.state()["user"] == "U_ALICE"
    assert Browser(sandbox).state()["user"] == "U_ALICE"  # a request without the cookie


def test_as_in_the_url_chooses_who_you_are_by_name_or_id(sandbox: Sandbox) -> None:
    by_name, by_id, unknown = Browser(sandbox), Browser(sandbox), Browser(sandbox)

    assert by_name.open_page("?as=carol") == 200
    assert by_id.open_page("?as=U_OLGA") == 200
    status, body = unknown.request("/?as=zed")

    assert by_name.state()["user"] == "U_CAROL"
    assert by_id.state()["user"] == "U_OLGA"
    assert status == 400
    assert (
        json.loads(body)["error"]
        == "?as=zed: no such user; the sandbox has alice, bob, carol, olga"
    )
    by_name.open_page()  # a reload without ?as= keeps the cookie's choice
    assert by_name.state()["user"] == "U_CAROL"


def test_a_request_naming_a_user_acts_as_them_and_leaves_the_cookie_alone(
    sandbox: Sandbox,
) -> None:
    browser = Browser(sandbox)
    browser.open_page("?as=bob")
    cookie = browser.cookie

    status, data = browser.request("/sandbox/api/state?user=U_CAROL")

    assert status == 200 and json.loads(data)["user"] == "U_CAROL"
    assert browser.cookie == cookie and browser.state()["user"] == "U_BOB"


def test_a_cookie_naming_someone_the_workspace_lacks_falls_back_to_alice(
    sandbox: Sandbox,
) -> None:
    browser = Browser(sandbox)
    browser.cookie = "0123abcd.U_NOBODY"

    assert browser.state()["user"] == "U_ALICE"
    browser.open_page()
    assert browser.cookie == "0123abcd.U_ALICE"  # the page load mends it, same screen


def test_the_favicon_is_served_where_browsers_ask_for_it(sandbox: Sandbox) -> None:
    with urllib.request.urlopen(sandbox.url + "/favicon.ico", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/svg+xml"
        assert response.read().startswith(b"<svg ")
    with urllib.request.urlopen(sandbox.url + "/", timeout=10) as response:
        assert b'rel="icon" href="/static/favicon.svg"' in response.read()


# -- modals per browser, and closing them ------------------------------------------------------


@pytest.fixture
def world(
    sandbox: Sandbox, sqlite_url: str, clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[SlackWorld]:
    """The real bot behind the sandbox's page, over HTTP or Socket Mode (`in_both_modes`)."""
    mode: Literal["http", "socket"] = "socket" if requested_mode(request) == "socket" else "http"
    with slack_world(sandbox.api, sqlite_url, clock, mode=mode) as built:
        sandbox.page.sender = built.slack  # the page's clicks go the way this world's bot listens
        yield built


def _refund_card(sandbox: Sandbox, world: SlackWorld) -> dict[str, Any]:
    """Carol asks for a large refund from #general (a script naming her); its card."""
    carol = Browser(sandbox)
    answer = carol.post("command", user="U_CAROL", channel="general", text=LARGE_REFUND)
    assert answer["ok"], answer
    world.settle()
    [card] = [m for m in carol.state()["messages"] if "approval.approve" in str(m)]
    return dict(card)


@in_both_modes
def test_a_modal_opened_in_one_browser_is_not_shown_in_another(
    sandbox: Sandbox, world: SlackWorld
) -> None:
    card = _refund_card(sandbox, world)
    first, second, same_user = Browser(sandbox), Browser(sandbox), Browser(sandbox)
    first.open_page("?as=bob")
    second.open_page()
    same_user.open_page("?as=bob")

    first.post("click", ts=card["ts"], action_id="approval.reject")
    world.settle()

    modal = first.state()["modal"]
    assert modal is not None and modal["callback_id"] == "approval.reject_reason"
    assert second.state()["modal"] is None  # alice, a new browser
    assert same_user.state()["modal"] is None  # bob too, in another browser
    closed = first.post("close", view_id=modal["id"])
    assert closed == {"ok": True, "view_closed": None}  # the reject modal asks no notice
    assert first.state()["modal"] is None


@in_both_modes
def test_closing_a_modal_that_asked_notify_on_close_sends_view_closed(
    sandbox: Sandbox, world: SlackWorld
) -> None:
    browser = Browser(sandbox)
    browser.open_page("?as=bob")
    screen = (browser.cookie or "").partition(".")[0]
    client = WebClient(token=sandbox.token, base_url=sandbox.api_url)
    opened = client.views_open(
        trigger_id=sandbox.api.issue_trigger_id("U_BOB", screen), view=NOTIFYING_VIEW
    )
    view_id = opened["view"]["id"]
    assert browser.state()["modal"]["id"] == view_id

    closed = browser.post("close", view_id=view_id)
    again = browser.post("close", view_id=view_id)  # already closed: nothing more to tell

    assert closed["view_closed"] == 200 and closed["ok"], closed  # the bot acked it
    assert again == {"ok": True, "view_closed": None}
    assert browser.state()["modal"] is None


class _Recorder(BaseHTTPRequestHandler):
    """A bot's /slack/events that keeps the payloads it is sent and acks them."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        [payload] = parse_qs(body)["payload"]
        self.received.append(json.loads(payload))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_view_closed_carries_the_view_the_person_closed() -> None:
    _Recorder.received = []
    bot = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=bot.serve_forever, daemon=True).start()
    try:
        with SlackWebApi() as fake:
            url = f"http://127.0.0.1:{bot.server_address[1]}/slack/events"
            sender = SlackSender(url, SIGNING_SECRET, fake)
            client = WebClient(token=fake.token, base_url=fake.api_url)
            trigger = fake.issue_trigger_id("U_BOB")
            view = client.views_open(trigger_id=trigger, view=NOTIFYING_VIEW)["view"]
            response = sender.view_closed(view["id"], "U_BOB")
    finally:
        bot.shutdown()
        bot.server_close()

    assert response.status == 200
    [payload] = _Recorder.received
    assert payload["type"] == "view_closed" and payload["is_cleared"] is False
    assert payload["user"]["id"] == "U_BOB" and "trigger_id" not in payload
    assert payload["view"]["id"] == view["id"]
    assert payload["view"]["callback_id"] == "sandbox.notify"
    assert payload["view"]["notify_on_close"] is True


# -- the answer to a click, beside the message clicked ----------------------------------------


@in_both_modes
def test_the_ephemeral_answering_a_click_is_shown_right_after_the_card(
    sandbox: Sandbox, world: SlackWorld
) -> None:
    card = _refund_card(sandbox, world)
    client = WebClient(token=sandbox.token, base_url=sandbox.api_url)
    client.chat_postMessage(channel="C_APPROVALS", text="a later message")
    olga = Browser(sandbox)
    olga.open_page("?as=olga")

    olga.post("click", ts=card["ts"], action_id="approval.approve")
    world.settle()

    shown = olga.state()["messages"]
    at = [m["ts"] for m in shown].index(card["ts"])
    refusal = shown[at + 1]
    assert refusal.get("ephemeral") and refusal["answers"] == card["ts"]
    assert "may not approve" in refusal["text"]
    assert shown[-1]["text"] == "a later message"
    assert "answers" not in card  # the card itself is where it was

    olga.post("command", channel="approvals", text="/gatehouse help")
    world.settle()
    after_command = olga.state()["messages"]
    assert after_command[-1].get("ephemeral") and "answers" not in after_command[-1]
