"""Socket Mode: the Bolt app connected to Slack over a WebSocket (SLACK_APP_TOKEN, xapp-…).

slack_bolt's `SocketModeHandler` on slack_sdk's builtin client: `apps.connections.open` with the
app-level token on the Web API base URL, then the returned URL; every envelope runs the same
Bolt app HTTP mode runs, and its ack carries the listener's answer. `gatehouse serve` and the
test harness both start it here, so the tests run what production runs.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass

import structlog
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest

from bot.http.observed import time_ack
from pipelines.config import ConfigurationError

log = structlog.get_logger()

# Seconds between the client's pings; it reconnects after four without a pong.
PING_INTERVAL = 10.0


@dataclass
class SocketModeConnection:
    """A started Socket Mode client; `close()` stops it and its threads."""

    handler: SocketModeHandler

    @property
    def connected(self) -> bool:
        return bool(self.handler.client.is_connected())

    def close(self) -> None:
        """Stop cleanly: no reconnect, no thread left, nothing logged as an error.

        slack_sdk's `close()` waits for its receiving thread, which sits in a blocking `recv`
        for up to its 3 s receive timeout; shutting the socket down first ends that read at
        once (an empty read the terminated session then leaves). The ping monitor stops before
        that, or its next ping would log a broken pipe."""
        client = self.handler.client
        client.closed = True
        client.auto_reconnect_enabled = False
        client.current_session_state.terminated = True
        if client.current_app_monitor.is_alive():
            client.current_app_monitor.shutdown()  # type: ignore[no-untyped-call]
        session = client.current_session
        sock = session.sock if session is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        client.message_queue.put(None)  # wakes the message processor's 1 s wait
        self.handler.close()  # type: ignore[no-untyped-call]
        log.info("slack.socket_mode.closed")


class TimedSocketModeHandler(SocketModeHandler):
    """Bolt's handler, timing each envelope from its arrival to its ack being sent."""

    def handle(self, client: BaseSocketModeClient, req: SocketModeRequest) -> None:
        began = time.perf_counter()
        super().handle(client, req)  # type: ignore[arg-type]
        time_ack("socket", began)


def connect_socket_mode(app: App, app_token: str) -> SocketModeConnection:
    """Open the Socket Mode connection for `app` (its client's base URL is the Web API's).

    A token Slack refuses is a configuration error naming SLACK_APP_TOKEN; a connection that
    fails after a good `apps.connections.open` is retried by the client's own monitor."""
    handler = TimedSocketModeHandler(app, app_token, ping_interval=PING_INTERVAL)
    try:
        handler.connect()  # type: ignore[no-untyped-call]
    except SlackApiError as exc:
        SocketModeConnection(handler).close()
        error = exc.response.get("error", "unknown_error")
        raise ConfigurationError(
            f"SLACK_APP_TOKEN: apps.connections.open refused it ({error}); it must be the app's "
            "app-level token (xapp-…, Basic Information → App-Level Tokens) with the "
            "connections:write scope, and Socket Mode must be on for the app"
        ) from exc
    connection = SocketModeConnection(handler)
    log.info("slack.socket_mode.connected", connected=connection.connected)
    return connection
