"""`gatehouse serve` without SLACK_BOT_TOKEN starts the local Slack sandbox beside the bot (a real
process: it prints the URL, the page is served, a slash command typed on it reaches the bot, and
SIGTERM stops both); `gatehouse sandbox` runs the sandbox alone."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.sandbox.workspace import channels_for

pytestmark = pytest.mark.slow

SLACK_VARIABLES = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_API_URL")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:
        return 0, b""  # not listening yet


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        return dict(json.loads(response.read()))


@contextmanager
def _gatehouse(
    args: list[str], env: dict[str, str], cwd: Path, printed: list[str] | None = None
) -> Iterator[tuple[Any, str]]:
    """`gatehouse ARGS` as a process; yields it and the sandbox URL from its first
    `Gatehouse sandbox: URL` line (every line it prints goes to `printed` too); SIGTERM at the
    end, which must exit 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)
            if printed is not None:
                printed.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        url = ""
        deadline = time.monotonic() + 30
        while not url and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert process.poll() is None, process.communicate()
                continue
            if line.startswith("Gatehouse sandbox: "):
                url = line.removeprefix("Gatehouse sandbox: ").strip()
        assert url, "no `Gatehouse sandbox: URL` line within 30 s"
        yield process, url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert code == 0, process.stderr.read() if process.stderr else code


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SLACK_VARIABLES}
    env = {k: v for k, v in env.items() if not k.startswith("GATEHOUSE_")}
    return {**env, **values}


def test_serve_without_a_slack_token_starts_the_sandbox_and_the_bot_answers_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    http_port, sandbox_port = _free_port(), _free_port()
    env = _env(
        GATEHOUSE_DATABASE_URL=sqlite_url,
        GATEHOUSE_HTTP_PORT=str(http_port),
        GATEHOUSE_SANDBOX_PORT=str(sandbox_port),
        GATEHOUSE_SERVE_WORKERS="1",
    )
    with _gatehouse(["serve"], env, tmp_path) as (process, url):
        assert url == f"http://127.0.0.1:{sandbox_port}"
        status, page = _get(url + "/")
        assert status == 200 and b'data-testid="user-picker"' in page
        deadline = time.monotonic() + 30
        while _get(f"http://127.0.0.1:{http_port}/healthz")[0] != 200:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)

        answer = _post(
            url + "/sandbox/api/command",
            {"user": "U_ALICE", "channel": "general", "text": "/gatehouse help"},
        )
        assert answer["status"] == 200, answer  # signed with the secret the bot shares
        deadline = time.monotonic() + 15
        shown: list[dict[str, Any]] = []
        while not shown and time.monotonic() < deadline:
            _, body = _get(url + "/sandbox/api/state?user=U_ALICE&channel=general")
            shown = [m for m in json.loads(body)["messages"] if m.get("ephemeral")]
            time.sleep(0.05)
        assert shown and "/gatehouse" in json.dumps(shown)


def test_gatehouse_sandbox_runs_alone_and_prints_what_the_bot_needs(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(SLACK_SIGNING_SECRET="alone-secret")
    args = ["sandbox", "--port", str(port), "--bot-url", "http://127.0.0.1:9/slack/events"]
    with _gatehouse(args, env, tmp_path) as (_process, url):
        status, _ = _get(url + "/")
        _, state = _get(url + "/sandbox/api/state")
        assert url == f"http://127.0.0.1:{port}" and status == 200
        assert [c["name"] for c in json.loads(state)["channels"]] == [
            "approvals",
            "review",
            "alerts",
            "general",
        ]


def test_gatehouse_sandbox_in_socket_mode_prints_an_app_token_slack_takes(tmp_path: Path) -> None:
    printed: list[str] = []
    with _gatehouse(
        ["sandbox", "--port", str(_free_port()), "--socket-mode"], _env(), tmp_path, printed
    ):
        deadline = time.monotonic() + 15
        while not any("SLACK_APP_TOKEN=" in line for line in printed):
            assert time.monotonic() < deadline, printed
            time.sleep(0.05)
        [start] = [line for line in printed if "SLACK_APP_TOKEN=" in line]
        env = dict(word.split("=", 1) for word in start.split() if "=" in word)
        assert "SLACK_SIGNING_SECRET" not in env
        client = WebClient(base_url=env["SLACK_API_URL"].rstrip("/") + "/")
        opened = client.apps_connections_open(app_token=env["SLACK_APP_TOKEN"])
        assert str(opened["url"]).startswith("ws://127.0.0.1:")
        with pytest.raises(SlackApiError) as refused:  # the bot token does not open a link
            client.apps_connections_open(app_token=env["SLACK_BOT_TOKEN"])
        assert refused.value.response["error"] == "not_allowed_token_type"


def test_configured_channels_the_defaults_lack_are_created() -> None:
    channels = channels_for("C_APPROVALS", "#ops-review", "C_PAGER", None)

    assert channels["C_OPS_REVIEW"] == "ops-review"
    assert channels["C_PAGER"] == "pager"
    assert list(channels)[:4] == ["C_APPROVALS", "C_REVIEW", "C_ALERTS", "C_GENERAL"]
