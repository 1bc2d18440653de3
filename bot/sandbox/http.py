"""The sandbox's HTTP server (stdlib, a thread per connection): the Web API at `/api/`, the
response_url, upload and file endpoints, when a page is attached the web page and its JSON API,
and, when Socket Mode is served, the WebSocket upgrade at `/link/` (bot/sandbox/socket_mode.py)."""

from __future__ import annotations

import contextlib
import io
import json
import mimetypes
import socket
import sys
import threading
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from bot.sandbox.webapi import SlackWebApi

Reply = tuple[int, str, bytes, Mapping[str, str]]

# Form-encoded Web API calls carry these arguments as JSON strings.
JSON_PARAMS = ("blocks", "attachments", "view", "metadata")


class PageRoutes(Protocol):
    """The web page and its JSON API (bot/sandbox/page.py), served beside the Web API."""

    def handle(
        self, method: str, path: str, query: str, body: bytes, cookie: str = ""
    ) -> Reply | None:
        """(status, content type, body, extra headers) for a route it serves, else None;
        `cookie` is the request's Cookie header."""
        ...


class SocketModeServer(Protocol):
    """Socket Mode (bot/sandbox/socket_mode.py): `apps.connections.open` and its WebSocket."""

    def open_connection(self, token: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, body, headers) of `apps.connections.open` called with `token`."""
        ...

    def serve_link(
        self,
        sock: socket.socket,
        reader: io.BufferedIOBase,
        request_line: str,
        headers: list[tuple[str, str]],
    ) -> None:
        """Upgrade this request to a WebSocket and serve it until it closes."""
        ...


class LoopbackHttpServer(ThreadingHTTPServer):
    """A threaded loopback server that can stop at once: it tracks its keep-alive connections so
    `close_connections()` unblocks handler threads waiting for a next request, and a client that
    hung up (a timeout under test, a closed page) is not reported as an error."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def serve_in_thread(self) -> threading.Thread:
        """Serve in a daemon thread that polls for `stop_serving` every 10 ms."""
        thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        thread.start()
        return thread

    def stop_serving(self, thread: threading.Thread | None) -> None:
        """Stop serving, unblock the keep-alive handlers, close the socket, wait for `thread`."""
        self.shutdown()
        self.close_connections()
        self.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def close_connections(self) -> None:
        """Unblock keep-alive handler threads still waiting for a next request."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hung up; anything else is a bug in the server
        super().handle_error(request, client_address)


class SandboxHttpServer(LoopbackHttpServer):
    request_queue_size = 128  # the ack benchmark opens 50 connections at once
    api: SlackWebApi
    page: PageRoutes | None

    def __init__(
        self, address: tuple[str, int], api: SlackWebApi, page: PageRoutes | None = None
    ) -> None:
        self.api, self.page = api, page
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as slack-sdk's urllib client may reuse
    disable_nagle_algorithm = True  # headers and body in two writes: no 40 ms delayed-ACK stall
    server: SandboxHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        links = self.server.api.socket_mode
        if (
            links is not None
            and urlsplit(self.path).path == "/link/"
            and self.headers.get("Upgrade", "").lower() == "websocket"
        ):
            self.close_connection = True  # the socket is the WebSocket's from here on
            links.serve_link(
                self.connection, self.rfile, self.requestline, list(self.headers.items())
            )
            return
        self._serve(b"")

    def do_POST(self) -> None:
        self._serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _serve(self, raw: bytes) -> None:
        url = urlsplit(self.path)
        api = self.server.api
        if url.path.startswith("/response_url/"):
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = None
            status, text = api._respond(url.path.removeprefix("/response_url/"), body)
            self._send(status, text.encode(), "text/plain; charset=utf-8")
            return
        if url.path.startswith("/files/"):  # a shared file's permalink: its bytes
            file_id = url.path.removeprefix("/files/").split("/")[0]  # /files/ID[/name]
            found = api.file_content(file_id)
            if found is None:
                self._send(404, b"Slack sandbox: no such file", "text/plain; charset=utf-8")
                return
            name, data = found
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self._send(200, data, content_type, {"Cache-Control": "max-age=3600"})
            return
        if url.path.startswith("/upload/"):
            status, text = api._receive_upload(url.path.removeprefix("/upload/"), raw)
            self._send(status, text.encode(), "text/plain; charset=utf-8")
            return
        if not url.path.startswith("/api/"):
            page = self.server.page
            cookie = self.headers.get("Cookie", "")
            reply = page.handle(self.command, url.path, url.query, raw, cookie) if page else None
            if reply is not None:
                status, content_type, data, headers = reply
                self._send(status, data, content_type, headers)
                return
            self._send(404, b"Slack sandbox: no such route", "text/plain; charset=utf-8")
            return
        params: dict[str, Any] = dict(parse_qsl(url.query, keep_blank_values=True))
        content_type = self.headers.get("Content-Type", "")
        if raw and content_type.startswith("application/json"):
            try:
                body = json.loads(raw)
            except ValueError:
                self._send_json(200, {"ok": False, "error": "invalid_json"})
                return
            params.update(body if isinstance(body, dict) else {})
        elif raw:
            params.update(parse_qsl(raw.decode(), keep_blank_values=True))
        for name in JSON_PARAMS:  # form-encoded requests carry these as JSON strings
            if isinstance(params.get(name), str):
                with contextlib.suppress(ValueError):  # left as is: the method refuses it
                    params[name] = json.loads(params[name])
        token = params.pop("token", None)
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            token = authorization.removeprefix("Bearer ")
        status, payload, headers = api._dispatch(
            url.path.removeprefix("/api/"), params, token, content_type if raw else None
        )
        self._send_json(status, payload, headers)

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def _send(
        self, status: int, data: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-slack-req-id", uuid.uuid4().hex)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
