"""Keep-alive connections for `response_url` replies, shared by the work lanes.

Every slash command and many clicks are answered with a POST to their `response_url`, all on
one Slack host. slack-sdk's `WebhookClient` opens (and TLS-handshakes) a new connection for each
and parses the answer through urllib's handler chain: measured here 0.31 ms of CPU per reply on
loopback against 0.11 ms on a kept connection, CPU taken from the same interpreter that acks
Slack (bench/ack_load.py). Here each host keeps a few idle connections and a reply takes one.

The same contract as `WebhookClient.send_dict`: a JSON POST, the answer's status and text, a
timeout per socket operation, certificates verified (the default SSL context), one retry on a
fresh connection when the connection was reset or closed under us (slack-sdk's default
connection-error handler retries once too; a kept connection the server has since closed fails
that way). A failure raises OSError. Behind a proxy (HTTPS_PROXY and the like, as slack-sdk reads
them) or for a URL that is neither http nor https, the reply goes through `WebhookClient` as
before.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from slack_sdk.proxy_env_variable_loader import load_http_proxy_from_env
from slack_sdk.web.internal_utils import get_user_agent
from slack_sdk.webhook import WebhookClient

IDLE_PER_HOST = 4  # as many as the lanes that reply at once (bot/slack/bot.py: 4 a lane)
RESET = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)  # RemoteDisconnected too

Key = tuple[str, str, int]


class ReplyConnections:
    """`post(url, payload) -> (status, text)` over a kept connection to the url's host."""

    def __init__(self, *, timeout: float, idle_per_host: int = IDLE_PER_HOST) -> None:
        self.timeout = timeout
        self.idle_per_host = idle_per_host
        self._idle: dict[Key, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None
        self._headers = {
            "Content-Type": "application/json;charset=utf-8",
            "User-Agent": get_user_agent(None, None),
        }

    def post(self, url: str, payload: dict[str, Any]) -> tuple[int, str]:
        parts = urlsplit(url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or load_http_proxy_from_env()
        ):
            reply = WebhookClient(url, timeout=int(self.timeout)).send_dict(payload)
            return reply.status_code, reply.body
        https = parts.scheme == "https"
        key = (parts.scheme, parts.hostname, parts.port or (443 if https else 80))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = json.dumps(payload).encode()
        connection = self._take(key) or self._open(key)
        for attempt in (1, 2):
            try:
                connection.request("POST", path, body=body, headers=self._headers)
                answer = connection.getresponse()
                text = answer.read().decode("utf-8", "replace")
            except RESET:
                connection.close()
                if attempt == 2:
                    raise
                connection = self._open(key)
                continue
            except http.client.HTTPException as exc:
                connection.close()
                raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
            except BaseException:
                connection.close()
                raise
            if answer.will_close:
                connection.close()
            else:
                self._give(key, connection)
            return answer.status, text
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _take(self, key: Key) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def _give(self, key: Key, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.idle_per_host:
                idle.append(connection)
                return
        connection.close()

    def _open(self, key: Key) -> http.client.HTTPConnection:
        scheme, host, port = key
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)
