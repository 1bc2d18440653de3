"""`gatehouse serve` as a real process: it starts from the environment, serves /healthz and the
webhooks, runs queued runs on its workers, and drains on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipelines import Gatehouse
from storage.db import Database
from tests.conftest import REPO_ROOT
from tests.fakes.slack import FakeSlack

TOKEN = "hook-token-for-tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:
        return 0  # not listening yet


def _post(url: str, body: dict[str, object], token: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_serve_takes_a_webhook_runs_it_and_drains_on_sigterm(
    fake_slack: FakeSlack, sqlite_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "GATEHOUSE_DATABASE_URL": sqlite_url,
        "GATEHOUSE_PIPELINES": "pipelines.catalog",
        "SLACK_BOT_TOKEN": fake_slack.token,
        "SLACK_SIGNING_SECRET": "serve-test-secret",
        "SLACK_API_URL": fake_slack.api_url,
        "GATEHOUSE_APPROVALS_CHANNEL": "C_APPROVALS",
        "GATEHOUSE_HTTP_PORT": str(port),
        "GATEHOUSE_SERVE_WORKERS": "1",
        "GATEHOUSE_WORKER_POLL_SECONDS": "0.05",
        "GATEHOUSE_WEBHOOK_TOKENS": json.dumps({"refund_request": TOKEN}),
        # Against a real Slack these are decisions to write down; "*" is anyone.
        "GATEHOUSE_TRIGGERERS": '{"*": ["*"]}',
        "GATEHOUSE_OPERATORS": '["*"]',
    }
    env.pop("SLACK_APP_TOKEN", None)
    bot = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _get(base + "/healthz") != 200:
            assert bot.poll() is None, bot.communicate()
            time.sleep(0.05)
        small = {"order_id": "ord_1001", "amount": "12.50", "reason": "scratched"}
        assert _post(base + "/hooks/refund_request", small, "wrong")[0] == 401
        status, body = _post(base + "/hooks/refund_request", small, TOKEN)
        assert status == 202, body
        run_id = str(body["run_id"])
        engine = Gatehouse(Database(sqlite_url))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and engine.run(run_id).status in ("queued", "running"):
            time.sleep(0.05)
        assert engine.run(run_id).status == "succeeded"
        assert engine.run(run_id).trigger == "webhook"
    finally:
        bot.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = bot.communicate(timeout=30)
        finally:
            if bot.poll() is None:
                bot.kill()
    assert bot.returncode == 0, stderr
    # At the default log level the only line says where it listened: once, after the bind.
    assert stdout.splitlines() == [
        f"Gatehouse is serving Slack in HTTP mode at http://127.0.0.1:{port}/slack/events, "
        f"health at http://127.0.0.1:{port}/healthz. "
        "Ctrl-C stops it (running runs finish or suspend first)."
    ]
