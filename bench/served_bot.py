"""What the benchmarks that start `gatehouse serve` as its own process share: a free port, the
environment that points it at the fake Slack, and the wait for `/healthz`."""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

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


def help_command_request(
    fake: Any, port: int, *, response_url: str, trigger_id: str, timestamp: str, close: bool = False
) -> bytes:
    """`/gatehouse help` from carol in #approvals as Slack sends it, form-encoded and signed at
    `timestamp`, as raw HTTP/1.1 to the bot on `port` (`close`: without keep-alive)."""
    body = urlencode(
        {
            "token": fake.verification_token,
            "team_id": fake.team_id,
            "team_domain": fake.team_domain,
            "channel_id": "C_APPROVALS",
            "channel_name": "approvals",
            "user_id": "U_CAROL",
            "user_name": "carol",
            "command": "/gatehouse",
            "text": "help",
            "api_app_id": fake.app_id,
            "response_url": response_url,
            "trigger_id": trigger_id,
        }
    )
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=body)
    head = (
        f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"X-Slack-Request-Timestamp: {timestamp}\r\nX-Slack-Signature: {signature}\r\n"
        f"Content-Length: {len(body.encode())}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    )
    return head.encode() + body.encode()
