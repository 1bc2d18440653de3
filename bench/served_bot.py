"""What the benchmarks that start `gatehouse serve` as its own process share: a free port, the
environment that points it at the fake Slack, and the wait for `/healthz`."""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from typing import Any

SECRET = "bench-signing-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(fake: Any, database_url: str, port: int, **more: str) -> dict[str, str]:
    """`gatehouse serve` in HTTP mode against the fake Slack `fake`, one worker, quiet logs."""
    return {
        **os.environ,
        "GATEHOUSE_DATABASE_URL": database_url,
        "SLACK_BOT_TOKEN": fake.token,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake.api_url,
        "GATEHOUSE_APPROVALS_CHANNEL": "C_APPROVALS",
        "GATEHOUSE_HTTP_PORT": str(port),
        "GATEHOUSE_SERVE_WORKERS": "1",
        # `serve` against a Slack (not the sandbox) runs the production policy: it needs both.
        "GATEHOUSE_TRIGGERERS": '{"*": ["*"]}',
        "GATEHOUSE_OPERATORS": '["*"]',
        "GATEHOUSE_LOG_LEVEL": "error",
        **more,
    }


def wait_healthy(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the bot did not come up")
