"""Request size and rate limits for every HTTP route: one ASGI middleware in front of Starlette.

A body over `max_body_bytes` gets 413, whether Content-Length says so up front or a chunked body
grows past it while the route reads it (the route's own work is discarded: it never saw the whole
body). Each client address has a token bucket (`rate` requests a second, `burst` at once); an empty
bucket gets 429 with `Retry-After`. The defaults are generous: Slack sends from many addresses and
retries only after 3 s, and `/healthz` and `/metrics` scrapes are a few a minute. Behind a reverse
proxy every request comes from the proxy's address: raise the rate or set it to 0 (off) there.
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

log = structlog.get_logger()

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

MAX_TRACKED_CLIENTS = 10_000  # the oldest bucket is forgotten past this: memory stays bounded


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1_000_000
    rate: float = 50.0  # requests per second per client address; 0 turns rate limiting off
    burst: int = 200


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
        """0 if a request may go now, else the seconds until one may."""
        now = self._now()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1 - tokens) / self.rate
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
        if self.buckets is not None:
            client = scope.get("client")
            wait = self.buckets.take(client[0] if client else "unknown")
            if wait > 0:
                log.info("http.rate_limited", path=scope.get("path"), retry_after=wait)
                await _reply(
                    send,
                    429,
                    "too many requests from this address; retry later",
                    {"retry-after": str(max(1, math.ceil(wait)))},
                )
                return
        limit = self.limits.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit():
                    await _reply(send, 400, "Content-Length is not a number")
                    return
                if int(value) > limit:
                    await _too_large(send, limit, scope)
                    return
        await self._call_counting(scope, receive, send, limit)

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
