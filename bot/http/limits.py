"""Request size and rate limits for every HTTP route: one ASGI middleware in front of Starlette.

A body over `max_body_bytes` gets 413, whether Content-Length says so up front or a chunked body
grows past it while the route reads it (the route's own work is discarded: it never saw the whole
body). Each client address has a token bucket (`rate` requests a second, `burst` at once); an empty
bucket gets 429 with `Retry-After`.

The routes that verify their senders themselves (`/slack/events`, `/hooks/…`) are charged only for
requests that fail: the bucket is peeked before the body is read (an empty one gets 429 at once)
and a token is taken when the route answers that the sender was not allowed (401, 404, 413…).
Slack's verified traffic never spends a token, so a burst of signed slash commands is never
429'd (Slack does not retry a 429), while one address sending forgeries runs dry. Concurrent
failures may take the bucket into debt (down to minus `burst`), so parallel connections do not
multiply the rate. Other routes (`/healthz`, `/metrics`) spend a token on every request.

The address is the peer's, or the one a trusted proxy forwards (bot/http/server.py: uvicorn
believes `X-Forwarded-For` only from `GATEHOUSE_TRUSTED_PROXIES`). Behind a proxy that is not
listed there, every request has the proxy's address and shares one bucket.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.requests import Request

log = structlog.get_logger()

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

MAX_TRACKED_CLIENTS = 10_000  # the oldest bucket is forgotten past this: memory stays bounded
SELF_VERIFYING = ("/slack/events", "/hooks/")  # an exact path, or a prefix ending in "/"
# The answers of a self-verifying route that mean "not a sender allowed here": a bad or missing
# signature, no such hook, the wrong method, a body too large to be verified. A signed request
# the route cannot use (400) or that it queued (202) is verified traffic and costs nothing.
FAILED_VERIFICATION = frozenset({401, 403, 404, 405, 411, 413})


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1_000_000
    rate: float = 50.0  # requests per second per client address; 0 turns rate limiting off
    burst: int = 200
    self_verifying: tuple[str, ...] = SELF_VERIFYING


class _BodyTooLarge(Exception):
    pass


class TokenBuckets:
    """One bucket per key, refilled continuously; thread-safe, bounded in size."""

    def __init__(self, rate: float, burst: int, now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._now = now
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if a request may go now (a token is spent), else the seconds until one may."""
        return self._update(key, spend=True, debt=False)

    def peek(self, key: str) -> float:
        """As `take`, spending nothing."""
        return self._update(key, spend=False, debt=False)

    def charge(self, key: str) -> None:
        """A token for a request already let through, into debt when the bucket is empty."""
        self._update(key, spend=True, debt=True)

    def _update(self, key: str, *, spend: bool, debt: bool) -> float:
        now = self._now()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            if spend and (wait == 0 or debt):
                tokens = max(-float(self.burst), tokens - 1)
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > MAX_TRACKED_CLIENTS:
                self._buckets.popitem(last=False)
        return wait


class HTTPLimits:
    """ASGI middleware: 429 over the rate, 413 over the size, everything else passes through."""

    def __init__(
        self,
        app: ASGIApp,
        limits: Limits | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.buckets = (
            TokenBuckets(self.limits.rate, self.limits.burst, now) if self.limits.rate > 0 else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = client[0] if client else "unknown"
        charge_failures = False
        if self.buckets is not None:
            charge_failures = self._verifies_itself(str(scope.get("path", "")))
            wait = self.buckets.peek(key) if charge_failures else self.buckets.take(key)
            if wait > 0:
                log.info("http.rate_limited", path=scope.get("path"), retry_after=wait)
                await _reply(
                    send,
                    429,
                    "too many requests from this address; retry later",
                    {"retry-after": str(max(1, math.ceil(wait)))},
                )
                return
            if charge_failures:
                send = self._charging(send, key)
        limit = self.limits.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit():
                    await _reply(send, 400, "Content-Length is not a number")
                    if charge_failures and self.buckets is not None:
                        self.buckets.charge(key)
                    return
                if int(value) > limit:
                    await _too_large(send, limit, scope)
                    return
        await self._call_counting(scope, receive, send, limit)

    def _verifies_itself(self, path: str) -> bool:
        return any(
            path.startswith(route) if route.endswith("/") else path == route
            for route in self.limits.self_verifying
        )

    def _charging(self, send: Send, key: str) -> Send:
        """`send`, spending a token of `key`'s when the answer says verification failed."""
        buckets = self.buckets
        assert buckets is not None

        async def charging_send(message: Message) -> None:
            if (
                message["type"] == "http.response.start"
                and message["status"] in FAILED_VERIFICATION
            ):
                buckets.charge(key)
            await send(message)

        return charging_send

    async def _call_counting(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message: Message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:  # the route answered from a body it never fully read: drop that answer
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _too_large(send, limit, scope)


async def _too_large(send: Send, limit: int, scope: Scope) -> None:
    log.info("http.too_large", path=scope.get("path"), limit=limit)
    await _reply(send, 413, f"the request body is over the {limit}-byte limit")


async def _reply(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def read_capped_body(request: Request, limit: int) -> bytes | None:
    """A route's own cap, below the middleware's: the body, or None when Content-Length says
    it is over `limit` (nothing read) or a chunked body grows past it (the rest unread)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
