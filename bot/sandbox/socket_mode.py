"""Slack's Socket Mode, played by the sandbox: `apps.connections.open` (app-level token in, a
one-use `ws://…/link/?ticket=…` URL out) and the WebSocket behind it, speaking Slack's envelopes.

On connect the app gets `hello`; each delivery is an envelope (`events_api`, `slash_commands`,
`interactive`) with an `envelope_id` the app must ack within 3 s, with a `payload` where the
envelope `accepts_response_payload`; pings are answered with pongs; `disconnect(reason)` sends
Slack's `disconnect` (`refresh_requested`, `warning`, `link_disabled`) and routes later
deliveries to the connection the app opens next. The WebSocket framing is wsproto's (RFC 6455,
sans-IO); this module only moves its bytes and speaks Slack's JSON over it.

    links = SocketModeLinks.serve_on(api)      # api: a started SlackWebApi
    links.app_token                            # the xapp-… token the bot connects with
    links.wait_connected(timeout=10)
    ack = links.deliver("slash_commands", fields, accepts_response_payload=True)
    ack.payload if ack else "not acked within the ack wait"
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import structlog
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

if TYPE_CHECKING:
    from bot.sandbox.webapi import SlackWebApi

log = structlog.get_logger()

ACK_TIMEOUT = 3.0  # Slack counts an envelope not acked within 3 s as a failed delivery
TICKET_TTL = 30.0  # a URL from apps.connections.open is good for one connection, soon
DISCONNECT_REASONS = ("refresh_requested", "warning", "link_disabled")
ENVELOPE_TYPES = ("events_api", "slash_commands", "interactive")


class SocketModeNotConnected(ConnectionError):
    """A delivery was asked for while no app held a Socket Mode connection (a ConnectionError,
    as an HTTP-mode bot that is not listening is: the page answers 502 for either)."""


@dataclass(frozen=True)
class SocketAck:
    """The app's answer to one envelope: `{"envelope_id": …, "payload": …}`."""

    envelope_id: str
    payload: dict[str, Any] | None
    seconds: float


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    ack: SocketAck | None = None
    sent_at: float = field(default_factory=time.monotonic)


class _Link:
    """One app connection: the socket, its wsproto state, and a lock so any thread may send."""

    def __init__(self, sock: socket.socket, ws: WSConnection, app_id: str) -> None:
        self.sock, self.ws, self.app_id = sock, ws, app_id
        self.id = uuid.uuid4().hex[:12]
        self.draining = False  # sent a disconnect: new deliveries go to the next connection
        self._lock = threading.RLock()

    def send(self, event: Event) -> None:
        with self._lock:
            if self.ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                raise ConnectionError("Socket Mode link is closed")
            self.sock.sendall(self.ws.send(event))

    def send_json(self, message: Mapping[str, Any]) -> None:
        self.send(TextMessage(data=json.dumps(message)))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """A close frame (the client reconnects on it), never a bare hang-up: slack_sdk's
        builtin client spins on a dropped socket until its ping check notices."""
        with contextlib.suppress(ConnectionError, OSError):
            self.send(CloseConnection(code=code, reason=reason))


class SocketModeLinks:
    """The Socket Mode side of one sandbox workspace: tokens, tickets, live connections and the
    envelopes they carried (`envelopes`, `acks`, `unacked` for assertions)."""

    def __init__(self, api: SlackWebApi, *, ack_timeout: float = ACK_TIMEOUT) -> None:
        self.api = api
        self.app_id = api.app_id
        self.app_token = f"xapp-1-{self.app_id}-{secrets.token_hex(12)}"
        self.ack_timeout = ack_timeout
        self._tickets: dict[str, float] = {}
        self._links: list[_Link] = []
        self._pending: dict[str, _Pending] = {}
        self._changed = threading.Condition()
        self.connections_opened = 0
        self.envelopes: list[dict[str, Any]] = []  # every envelope sent, hello and disconnect too
        self.unacked: list[str] = []  # envelope ids Slack would count as failed deliveries

    @classmethod
    def serve_on(cls, api: SlackWebApi, *, ack_timeout: float = ACK_TIMEOUT) -> SocketModeLinks:
        """Socket Mode on this Web API's own server (one per api: a second call returns it)."""
        existing = api.socket_mode
        if isinstance(existing, SocketModeLinks):
            return existing
        links = cls(api, ack_timeout=ack_timeout)
        api.serve_socket_mode(links)
        return links

    # -- apps.connections.open -----------------------------------------------------------------

    def open_connection(self, token: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        """`apps.connections.open`, answered as Slack does: only this app's xapp- token."""
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token != self.app_token:
            # A bot or user token is a real token of the wrong kind; anything else is unknown.
            if token.startswith(("xoxb-", "xoxp-")) or token == self.api.token:
                return 200, {"ok": False, "error": "not_allowed_token_type"}, {}
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        ticket = uuid.uuid4().hex
        with self._changed:
            now = time.monotonic()
            self._tickets = {t: at for t, at in self._tickets.items() if now - at < TICKET_TTL}
            self._tickets[ticket] = now
        base = urlsplit(self.api.base_url)
        url = f"ws://{base.netloc}/link/?ticket={ticket}&app_id={self.app_id}"
        return 200, {"ok": True, "url": url}, {}

    # -- the WebSocket (called on the HTTP server's handler thread) -----------------------------

    def serve_link(
        self,
        sock: socket.socket,
        reader: io.BufferedIOBase,
        request_line: str,
        headers: list[tuple[str, str]],
    ) -> None:
        """Upgrade this HTTP request to a WebSocket and serve it until either side closes."""
        ws = WSConnection(ConnectionType.SERVER)
        head = request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        ws.receive_data(head.encode("latin-1"))
        request = next((e for e in ws.events() if isinstance(e, Request)), None)
        if request is None:
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        ticket = (parse_qs(urlsplit(request.target).query).get("ticket") or [""])[0]
        with self._changed:
            issued = self._tickets.pop(ticket, None)
        if issued is None or time.monotonic() - issued > TICKET_TTL:
            sock.sendall(ws.send(RejectConnection(status_code=401, has_body=False)))
            return
        sock.sendall(ws.send(AcceptConnection()))
        link = _Link(sock, ws, self.app_id)
        with self._changed:
            count = len(self._links) + 1
        # hello first: no envelope may reach the app before it (deliveries see the link after).
        self._send(
            link,
            {
                "type": "hello",
                "num_connections": count,
                "debug_info": {
                    "host": f"applink-sandbox-{link.id}",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            },
        )
        with self._changed:
            self._links.append(link)
            self.connections_opened += 1
            self._changed.notify_all()
        log.info("sandbox.socket_mode.connected", link=link.id, connections=count)
        try:
            self._read(link, reader)
        finally:
            with self._changed:
                if link in self._links:
                    self._links.remove(link)
                self._changed.notify_all()
            log.info("sandbox.socket_mode.closed", link=link.id)

    def _read(self, link: _Link, reader: io.BufferedIOBase) -> None:
        text: list[str] = []
        while True:
            try:
                data = reader.read1(65536)
            except (ConnectionError, OSError, ValueError):
                data = b""
            with link._lock:
                link.ws.receive_data(data or None)
                events = list(link.ws.events())
            for event in events:
                if isinstance(event, Ping):
                    with contextlib.suppress(ConnectionError, OSError):
                        link.send(event.response())
                elif isinstance(event, TextMessage):
                    text.append(event.data)
                    if event.message_finished:
                        self._received(link, "".join(text))
                        text = []
                elif isinstance(event, CloseConnection):
                    if link.ws.state is ConnectionState.REMOTE_CLOSING:
                        with contextlib.suppress(ConnectionError, OSError):
                            link.send(event.response())
                    return
            if not data or link.ws.state is ConnectionState.CLOSED:
                return

    def _received(self, link: _Link, raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("sandbox.socket_mode.not_json", link=link.id)
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        with self._changed:
            pending = self._pending.get(str(envelope_id))
        if pending is None:
            log.warning("sandbox.socket_mode.unknown_ack", envelope_id=envelope_id)
            return
        payload = message.get("payload")
        pending.ack = SocketAck(
            str(envelope_id),
            payload if isinstance(payload, dict) else None,
            time.monotonic() - pending.sent_at,
        )
        pending.done.set()

    def _send(self, link: _Link, message: dict[str, Any]) -> None:
        with self._changed:
            self.envelopes.append(json.loads(json.dumps(message)))
        link.send_json(message)

    # -- what Slack sends ------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        with self._changed:
            return len(self._links)

    def wait_connected(self, timeout: float = 10.0, *, opened: int = 1) -> bool:
        """Until an app holds a live (not draining) connection and `opened` connections have
        been opened in all (a reconnect is `opened=previous + 1`)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: (
                    self.connections_opened >= opened
                    and any(not link.draining for link in self._links)
                ),
                timeout=timeout,
            )

    def deliver(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        connect_timeout: float = 10.0,
    ) -> SocketAck | None:
        """Send one envelope on the newest live connection (waiting up to `connect_timeout` for
        one, as during a refresh) and wait the ack wait for its ack; None when it was not acked
        (Slack's failed delivery, noted in `unacked`)."""
        if kind not in ENVELOPE_TYPES:
            raise ValueError(f"Socket Mode envelope type must be one of {ENVELOPE_TYPES}: {kind!r}")
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {"envelope_id": envelope_id, "payload": payload, "type": kind}
        if kind == "events_api":
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = retry_reason or ""
        envelope["accepts_response_payload"] = accepts_response_payload
        if not self.wait_connected(connect_timeout):
            raise SocketModeNotConnected(
                f"no app holds a Socket Mode connection to this sandbox after {connect_timeout} s:"
                " start the bot with SLACK_APP_TOKEN set to the sandbox's app token"
            )
        with self._changed:
            link = next(link for link in reversed(self._links) if not link.draining)
            pending = self._pending[envelope_id] = _Pending()
        try:
            self._send(link, envelope)
            acked = pending.done.wait(self.ack_timeout)
        finally:
            with self._changed:
                self._pending.pop(envelope_id, None)
        if not acked:
            with self._changed:
                self.unacked.append(envelope_id)
            log.info("sandbox.socket_mode.not_acked", envelope_id=envelope_id, type=kind)
            return None
        return pending.ack

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack's `disconnect` on every live connection; later deliveries wait for the app's
        next connection (the app opens it, then closes the old one)."""
        if reason not in DISCONNECT_REASONS:
            raise ValueError(f"disconnect reason must be one of {DISCONNECT_REASONS}: {reason!r}")
        with self._changed:
            links = [link for link in self._links if not link.draining]
            for link in links:
                link.draining = True
        for link in links:
            with contextlib.suppress(ConnectionError, OSError):
                self._send(
                    link,
                    {
                        "type": "disconnect",
                        "reason": reason,
                        "debug_info": {"host": f"applink-sandbox-{link.id}"},
                    },
                )

    def close(self) -> None:
        """Close every connection with a close frame (the sandbox is stopping)."""
        with self._changed:
            links = list(self._links)
        for link in links:
            link.close(1001, "going away")
