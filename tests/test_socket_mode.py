"""Socket Mode end to end: the bot connects to the sandbox as `gatehouse serve` does with
SLACK_APP_TOKEN (apps.connections.open, then the WebSocket), Slack's envelopes come over it and
the acks come back; refusals, disconnects, the ack wait and a clean stop."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.sandbox import Sandbox
from bot.sandbox.sender import NOT_ACKED, NotOverSocketMode
from bot.sandbox.socket_mode import SocketModeLinks
from bot.slack.app import build_bolt_app
from bot.slack.socket_mode import connect_socket_mode
from pipelines.config import ConfigurationError
from tests.conftest import REPO_ROOT
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack, SlackSender
from tests.slack_harness import SlackWorld, slack_world

LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}


@pytest.fixture
def world(fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock) -> Iterator[SlackWorld]:
    with slack_world(fake_slack, sqlite_url, clock, mode="socket") as built:
        yield built


def _wait(condition: Any, timeout: float = 10.0) -> bool:
    """Poll a condition another thread makes true (a reconnect, a pong)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def _healthz(port: int) -> int | None:
    """/healthz's status on the bot's HTTP port, or None while nothing listens there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as health:
            return int(health.status)
    except OSError:
        return None


def _sent(links: SocketModeLinks, kind: str) -> list[dict[str, Any]]:
    return [e for e in links.envelopes if e.get("type") == kind]


def _texts(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks)


def _has_buttons(message: dict[str, Any]) -> bool:
    return any(block.get("type") == "actions" for block in message.get("blocks", []))


def _request_refund(world: SlackWorld) -> tuple[str, str, dict[str, Any]]:
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    assert run.status == "waiting", run.error
    [card] = world.approval_cards()
    return run.id, run.waiting_for[0], card


# -- the bot over Socket Mode ---------------------------------------------------------------


def test_the_bot_connects_with_hello_and_the_app_token_through_apps_connections_open(
    world: SlackWorld,
) -> None:
    assert world.socket_mode is not None
    [hello] = _sent(world.socket_mode, "hello")
    assert hello["num_connections"] == 1
    assert hello["connection_info"] == {"app_id": world.fake.app_id}
    assert set(hello["debug_info"]) == {"host", "build_number", "approximate_connection_time"}
    assert len(world.fake.calls_to("apps.connections.open")) == 1
    # Nothing came to /slack/events: in Socket Mode the HTTP server has no such route.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(world.server.url, data=b"{}"), timeout=5)
    assert refused.value.code == 404


def test_app_home_opened_first_delivery_over_socket_mode_publishes_the_home_tab(
    world: SlackWorld,
) -> None:
    response = world.slack.app_home_opened("U_ALICE")
    assert response.status == 200
    world.settle()
    assert world.fake.home("U_ALICE") is not None
    assert world.socket_mode is not None
    [envelope] = _sent(world.socket_mode, "events_api")
    assert envelope["retry_attempt"] == 0 and envelope["retry_reason"] == ""
    assert envelope["accepts_response_payload"] is False
    assert envelope["payload"]["type"] == "event_callback"
    assert envelope["payload"]["event"]["type"] == "app_home_opened"


def test_a_resent_event_goes_as_a_retry_attempt_with_its_reason(world: SlackWorld) -> None:
    first = world.slack.app_home_opened("U_ALICE")
    world.slack.resend(first.request, retry_num=2, retry_reason="timeout")
    assert world.socket_mode is not None
    first_env, retry = _sent(world.socket_mode, "events_api")
    assert (first_env["retry_attempt"], retry["retry_attempt"]) == (0, 2)
    assert retry["retry_reason"] == "timeout"
    assert retry["payload"] == first_env["payload"]  # the same event_id, redelivered
    assert retry["envelope_id"] != first_env["envelope_id"]


def test_a_slash_command_over_socket_mode_is_acked_and_answered(world: SlackWorld) -> None:
    response = world.slack.command("help", user_id="U_CAROL")
    assert response.status == 200
    world.settle()
    [reply] = world.fake.ephemerals("U_CAROL")
    assert reply["text"] == "Gatehouse commands" and reply["via"] == "response_url"
    assert world.socket_mode is not None
    [envelope] = _sent(world.socket_mode, "slash_commands")
    assert envelope["accepts_response_payload"] is True
    assert envelope["payload"]["command"] == "/gatehouse" and envelope["payload"]["text"] == "help"
    assert "retry_attempt" not in envelope


def test_an_approve_click_over_socket_mode_decides_and_updates_the_card(
    world: SlackWorld,
) -> None:
    run_id, approval_id, card = _request_refund(world)
    response = world.slack.block_action("approval.approve", message=card["ts"], user_id="U_BOB")
    assert response.status == 200
    world.settle()
    assert world.gatehouse.approval(approval_id).status == "approved"
    assert world.gatehouse.run(run_id).status == "succeeded"
    updated = world.card(card["ts"])
    assert "approval.approve" not in str(updated["blocks"])  # decided (an Undo may follow)
    assert "Approved by" in _texts(updated["blocks"])
    assert world.socket_mode is not None
    [envelope] = _sent(world.socket_mode, "interactive")
    assert envelope["payload"]["type"] == "block_actions"
    assert envelope["accepts_response_payload"] is False
    assert world.fake.rejected == []


def test_a_view_submissions_errors_come_back_in_the_ack(world: SlackWorld) -> None:
    run_id, _approval_id, card = _request_refund(world)
    world.slack.block_action("approval.reject", message=card["ts"], user_id="U_BOB")
    world.settle()
    [modal] = world.fake.views
    empty = world.slack.view_submission(
        "approval.reject_reason", {"reason": {"reason": "  "}}, user_id="U_BOB", view_id=modal["id"]
    )
    assert empty.status == 200
    assert empty.json["response_action"] == "errors" and "reason" in empty.json["errors"]
    assert world.socket_mode is not None
    submission = _sent(world.socket_mode, "interactive")[-1]
    assert submission["accepts_response_payload"] is True
    world.slack.view_submission(
        "approval.reject_reason",
        {"reason": {"reason": "duplicate request"}},
        user_id="U_BOB",
        view_id=modal["id"],
    )
    world.settle()
    assert world.gatehouse.run(run_id).status == "rejected"


@pytest.mark.parametrize("reason", ["refresh_requested", "warning", "link_disabled"])
def test_after_a_disconnect_the_bot_reconnects_and_the_next_delivery_is_handled(
    world: SlackWorld, reason: str
) -> None:
    links = world.socket_mode
    assert links is not None
    links.disconnect(reason)
    assert links.wait_connected(timeout=10, opened=2), "the bot did not reconnect"
    assert _wait(lambda: links.connections == 1), "the old connection was left open"
    assert len(world.fake.calls_to("apps.connections.open")) == 2  # a new URL, a new ticket
    [disconnect] = _sent(links, "disconnect")
    assert disconnect["reason"] == reason
    response = world.slack.app_home_opened("U_ALICE")
    assert response.status == 200
    world.settle()
    assert world.fake.home("U_ALICE") is not None


def test_the_clients_pings_get_pongs(world: SlackWorld) -> None:
    assert world.connection is not None
    session = world.connection.handler.client.current_session
    assert session is not None
    # The client pings on connect and stores the time its pong echoes.
    assert _wait(lambda: session.last_ping_pong_time is not None)


def test_signature_overrides_and_url_verification_are_refused_over_the_socket(
    world: SlackWorld,
) -> None:
    with pytest.raises(NotOverSocketMode, match="not signed"):
        world.slack.command("help", signature="v0=" + "0" * 64)
    with pytest.raises(NotOverSocketMode, match="not signed"):
        world.slack.app_home_opened("U_ALICE", timestamp="1000000000")
    with pytest.raises(NotOverSocketMode, match="url_verification"):
        world.slack.url_verification()
    assert world.socket_mode is not None
    assert _sent(world.socket_mode, "events_api") == []


def test_stopping_the_bot_leaves_no_socket_mode_thread_and_logs_no_error(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = set(threading.enumerate())
    with slack_world(fake_slack, sqlite_url, clock, mode="socket") as world:
        assert world.connection is not None and world.connection.connected
        began = time.monotonic()
    assert time.monotonic() - began < 2.5  # not the client's 3 s receive timeout
    assert _wait(lambda: set(threading.enumerate()) <= before, timeout=5), [
        t.name for t in set(threading.enumerate()) - before
    ]
    assert world.socket_mode is not None
    assert _wait(lambda: world.socket_mode.connections == 0)  # type: ignore[union-attr]
    # slack_sdk logs a failed read or a reconnect attempt at WARNING or ERROR: none happened.
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]
    assert any("connection has been closed" in r.getMessage() for r in caplog.records)


# -- apps.connections.open and the sandbox's side ---------------------------------------------


def test_apps_connections_open_takes_only_the_apps_xapp_token(fake_slack: FakeSlack) -> None:
    links = SocketModeLinks.serve_on(fake_slack)
    client = WebClient(base_url=fake_slack.api_url)
    with pytest.raises(SlackApiError) as bot_token:
        client.apps_connections_open(app_token=fake_slack.token)
    assert bot_token.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as unknown:
        client.apps_connections_open(app_token="xapp-1-A_OTHER-0000-deadbeef")
    assert unknown.value.response["error"] == "invalid_auth"
    opened = client.apps_connections_open(app_token=links.app_token)
    assert str(opened["url"]).startswith(f"ws://{fake_slack.base_url.removeprefix('http://')}")
    assert "ticket=" in opened["url"] and f"app_id={fake_slack.app_id}" in opened["url"]


def test_a_wrong_app_token_stops_the_bot_with_a_configuration_error(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    SocketModeLinks.serve_on(fake_slack)
    with slack_world(fake_slack, sqlite_url, clock) as world:
        app = build_bolt_app(world.bot)
        with pytest.raises(ConfigurationError, match=r"SLACK_APP_TOKEN.*not_allowed_token_type"):
            connect_socket_mode(app, fake_slack.token)
        with pytest.raises(ConfigurationError, match=r"SLACK_APP_TOKEN.*invalid_auth"):
            connect_socket_mode(app, "xapp-1-A_OTHER-0000-deadbeef")


def test_a_ticket_opens_one_connection_only(fake_slack: FakeSlack) -> None:
    links = SocketModeLinks.serve_on(fake_slack)
    url = WebClient(base_url=fake_slack.api_url).apps_connections_open(app_token=links.app_token)[
        "url"
    ]
    path = str(url).split("/", 3)[3]
    statuses = []
    for _ in range(2):
        host, port = fake_slack.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(
                f"GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            statuses.append(sock.recv(1024).split(b"\r\n")[0])
    assert statuses[0].startswith(b"HTTP/1.1 101")
    assert statuses[1].startswith(b"HTTP/1.1 401")


class _RawApp:
    """slack_sdk's own Socket Mode client as the app, with a listener a test scripts."""

    def __init__(self, api: FakeSlack, links: SocketModeLinks, answer: Any) -> None:
        self.requests: list[SocketModeRequest] = []
        self.client = SocketModeClient(
            app_token=links.app_token, web_client=WebClient(base_url=api.api_url)
        )

        def listen(client: SocketModeClient, request: SocketModeRequest) -> None:
            self.requests.append(request)
            reply = answer(request)
            if reply is not False:
                client.send_socket_mode_response(SocketModeResponse(request.envelope_id, reply))

        self.client.socket_mode_request_listeners.append(listen)  # type: ignore[arg-type]
        self.client.connect()

    def close(self) -> None:
        # As bot/slack/socket_mode.py does: end the blocking read first (else close waits 3 s).
        self.client.current_session_state.terminated = True
        session = self.client.current_session
        if session is not None and session.sock is not None:
            session.sock.shutdown(socket.SHUT_RDWR)
        self.client.close()


def test_a_slash_commands_ack_payload_comes_back_over_the_socket_and_is_shown(
    fake_slack: FakeSlack,
) -> None:
    links = SocketModeLinks.serve_on(fake_slack)
    app = _RawApp(fake_slack, links, lambda request: {"text": "pong from the ack"})
    try:
        assert links.wait_connected(timeout=10)
        sender = SlackSender("", "unused", fake_slack, socket_mode=links)
        response = sender.command("ping", user_id="U_ALICE", channel_id="C_GENERAL")
        assert response.status == 200 and response.json == {"text": "pong from the ack"}
        [shown] = fake_slack.ephemerals("U_ALICE")
        assert shown["text"] == "pong from the ack" and shown["via"] == "ack"
        assert shown["channel"] == "C_GENERAL"
        [request] = app.requests
        assert request.type == "slash_commands" and request.accepts_response_payload
    finally:
        app.close()


def test_an_envelope_not_acked_within_the_ack_wait_counts_as_a_failed_delivery(
    fake_slack: FakeSlack,
) -> None:
    links = SocketModeLinks.serve_on(fake_slack, ack_timeout=0.3)
    app = _RawApp(fake_slack, links, lambda request: False)  # never acks
    try:
        assert links.wait_connected(timeout=10)
        sender = SlackSender("", "unused", fake_slack, socket_mode=links)
        response = sender.app_home_opened("U_ALICE")
        assert response.status == NOT_ACKED and response.json is None
        [envelope] = _sent(links, "events_api")
        assert links.unacked == [envelope["envelope_id"]]
        assert _wait(lambda: len(app.requests) == 1)  # it did arrive; only the ack is missing
    finally:
        app.close()


def test_the_sandbox_page_reaches_a_bot_in_socket_mode(sqlite_url: str, clock: FakeClock) -> None:
    with Sandbox(socket_mode=True, port=0) as sandbox:
        assert sandbox.app_token is not None and sandbox.app_token.startswith("xapp-")
        with slack_world(sandbox.api, sqlite_url, clock, mode="socket") as world:
            answer = _post_json(f"{sandbox.url}/sandbox/api/home", {"user": "U_BOB"})
            assert answer["ok"] and answer["status"] == 200, answer
            world.settle()
            assert sandbox.api.home("U_BOB") is not None
            assert sandbox.socket_mode is world.socket_mode  # the page's sender used the link
            assert len(_sent(sandbox.socket_mode, "events_api")) == 1
        with pytest.raises(ValueError, match="Socket Mode"):
            sandbox.connect_bot("http://127.0.0.1:3000/slack/events")


# -- gatehouse serve with SLACK_APP_TOKEN, and make demo DEMO_ARGS=--socket-mode -------------


def _serve_env(fake: FakeSlack, sqlite_url: str, app_token: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GATEHOUSE_"))}
    return {
        **env,
        "GATEHOUSE_DATABASE_URL": sqlite_url,
        "SLACK_BOT_TOKEN": fake.token,
        "SLACK_APP_TOKEN": app_token,  # Socket Mode: no signing secret needed
        "SLACK_API_URL": fake.api_url,
        "GATEHOUSE_APPROVALS_CHANNEL": "C_APPROVALS",
        "GATEHOUSE_HTTP_PORT": str(port),
        "GATEHOUSE_SERVE_WORKERS": "1",
        "GATEHOUSE_TRIGGERERS": '{"*": ["*"]}',
        "GATEHOUSE_OPERATORS": '["*"]',
    }


@pytest.mark.slow
def test_gatehouse_serve_in_socket_mode_answers_over_the_socket_and_stops_cleanly(
    fake_slack: FakeSlack, sqlite_url: str
) -> None:
    links = SocketModeLinks.serve_on(fake_slack)
    port = _free_port()
    bot = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve"],
        env=_serve_env(fake_slack, sqlite_url, links.app_token, port),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert links.wait_connected(timeout=30), bot.poll() is None or bot.communicate()
        sender = SlackSender("", "unused", fake_slack, socket_mode=links)
        assert sender.command("help", user_id="U_ALICE").status == 200
        assert _wait(lambda: len(fake_slack.ephemerals("U_ALICE")) == 1, timeout=15)
        # The HTTP port still serves /healthz in Socket Mode (it may bind just after the socket
        # connects: both start as the process starts).
        assert _wait(lambda: _healthz(port) == 200, timeout=15), "no /healthz on the HTTP port"
    finally:
        bot.send_signal(signal.SIGTERM)
        try:
            code = bot.wait(timeout=30)
        finally:
            if bot.poll() is None:
                bot.kill()
    out, err = bot.communicate()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert out.splitlines() == [  # said once the HTTP port is bound, whatever the log level
        f"Gatehouse is serving Slack over Socket Mode; webhooks at http://127.0.0.1:{port}/hooks/"
        f", health at http://127.0.0.1:{port}/healthz. "
        "Ctrl-C stops it (running runs finish or suspend first)."
    ]
    assert _wait(lambda: links.connections == 0)


@pytest.mark.slow
def test_gatehouse_serve_refuses_an_app_token_slack_refuses(
    fake_slack: FakeSlack, sqlite_url: str
) -> None:
    SocketModeLinks.serve_on(fake_slack)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"],
        env=_serve_env(fake_slack, sqlite_url, "xapp-1-A_OTHER-0000-deadbeef", _free_port()),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "error: SLACK_APP_TOKEN: apps.connections.open refused it (invalid_auth)" in done.stderr
    assert "Traceback" not in done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        return dict(json.loads(response.read()))


@pytest.mark.slow
def test_the_demo_in_socket_mode_answers_the_sandbox_over_the_socket(tmp_path: Any) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GATEHOUSE_", "OPENAI_"))
    }
    stderr_path = tmp_path / "stderr.log"
    stderr = stderr_path.open("w")
    args = ["--dir", str(tmp_path / "demo"), "--days", "1", "--socket-mode"]
    ports = ["--port", str(_free_port()), "--bot-port", str(_free_port())]
    demo = subprocess.Popen(
        [sys.executable, "-m", "bot.demo", *args, *ports],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in demo.stdout or ()], daemon=True
    ).start()
    began = time.monotonic()
    try:
        url = None
        printed: list[str] = []
        while url is None and time.monotonic() - began < 60:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert demo.poll() is None, (printed, stderr_path.read_text())
                continue
            printed.append(line)
            if line.startswith("Gatehouse sandbox: "):
                url = line.removeprefix("Gatehouse sandbox: ").strip()
        assert url is not None, printed
        # The composer's command reaches the bot over its Socket Mode connection (once it holds
        # one: the page answers 502 until then) and the bot's reply shows in the channel.
        deadline = time.monotonic() + 30
        answer: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                answer = _post_json(
                    f"{url}/sandbox/api/command",
                    {"user": "U_ALICE", "channel": "C_GENERAL", "text": "help"},
                )
            except urllib.error.HTTPError as exc:
                assert exc.code == 502, exc.read()
                time.sleep(0.2)
                continue
            break
        assert answer.get("ok") and answer.get("status") == 200, answer
        texts: list[str] = []
        while time.monotonic() < deadline:
            with urllib.request.urlopen(
                f"{url}/sandbox/api/state?user=U_ALICE&channel=C_GENERAL", timeout=5
            ) as response:
                state = json.loads(response.read())
            texts = [str(m.get("text", "")) for m in state["messages"] if m.get("ephemeral")]
            if any(text == "Gatehouse commands" for text in texts):
                break
            time.sleep(0.2)
        assert any(text == "Gatehouse commands" for text in texts), texts
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            code = demo.wait(timeout=15)
        finally:
            if demo.poll() is None:
                demo.kill()
            stderr.close()
    log = stderr_path.read_text()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
