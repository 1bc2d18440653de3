"""bot/slack/reply_connections.py: response_url replies over kept connections, each reply
arriving exactly once, a connection the server closed retried on a fresh one, failures raised
as OSError (and so logged by `post_to_response_url`, never dropped)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.slack.private_replies import post_to_response_url
from bot.slack.reply_connections import ReplyConnections


class Receiver(ThreadingHTTPServer):
    """Keep-alive HTTP/1.1 on loopback: counts connections and records each POST's path and
    JSON; `close_after` answers with `Connection: close` from then on; `status`/`text` answer."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.posts: list[tuple[str, Any]] = []
        self.status, self.text = 200, "ok"
        self.drop_idle = False
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Receiver

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        payload = json.loads(self.rfile.read(length))
        with self.server.lock:
            self.server.posts.append((self.path, payload))
        body = self.server.text.encode()
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.server.drop_idle:  # the server drops the kept connection without saying so
            self.close_connection = True

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_replies_to_one_host_share_a_kept_connection(receiver: Receiver) -> None:
    replies = ReplyConnections(timeout=5)
    for n in range(5):
        assert replies.post(f"{receiver.url}/r/{n}?x=1", {"text": f"reply {n}"}) == (200, "ok")
    assert receiver.posts == [(f"/r/{n}?x=1", {"text": f"reply {n}"}) for n in range(5)]
    assert receiver.connections == 1
    replies.close()


def test_a_connection_the_server_dropped_is_retried_once_on_a_fresh_one(
    receiver: Receiver,
) -> None:
    replies = ReplyConnections(timeout=5)
    receiver.drop_idle = True
    for n in range(3):
        assert replies.post(f"{receiver.url}/r/{n}", {"text": "hi"}) == (200, "ok")
    # Each reply arrived once, though each kept connection was dead when it was taken again.
    assert [path for path, _ in receiver.posts] == ["/r/0", "/r/1", "/r/2"]
    assert receiver.connections == 3


def test_slacks_refusal_is_logged_and_the_reply_counts_as_not_arrived(
    receiver: Receiver,
) -> None:
    receiver.status, receiver.text = 404, "expired_url"
    with capture_logs() as logs:
        assert not post_to_response_url(f"{receiver.url}/r/old", {"text": "x"}, purpose="t")
    assert [(e["event"], e["status"], e["error"]) for e in logs] == [
        ("slack.reply_failed", 404, "expired_url")
    ]


def test_nobody_listening_is_an_oserror_logged_as_a_failed_reply() -> None:
    server = Receiver()  # bound, then closed: nothing listens on its port
    url = server.url
    server.server_close()
    with pytest.raises(OSError):
        ReplyConnections(timeout=5).post(f"{url}/r/1", {"text": "x"})
    with capture_logs() as logs:
        assert not post_to_response_url(f"{url}/r/1", {"text": "x"}, purpose="t")
    assert [e["event"] for e in logs] == ["slack.reply_failed"]


def test_behind_a_proxy_the_reply_goes_through_slack_sdk(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """slack-sdk's WebhookClient reads HTTPS_PROXY; there the kept connections step aside (the
    proxy here is the receiver itself, which answers the proxied POST)."""
    monkeypatch.setenv("HTTPS_PROXY", receiver.url)
    monkeypatch.setenv("HTTP_PROXY", receiver.url)
    assert ReplyConnections(timeout=5).post("http://hooks.example/r/9", {"text": "x"}) == (
        200,
        "ok",
    )
    assert receiver.posts == [("http://hooks.example/r/9", {"text": "x"})]
