"""`/slack/events` in HTTP mode: Slack's signature checked over the raw bytes before anything
parses them, each signed request taken once, and parsing and Bolt's dispatch off the event loop.

Order matters. The size cap and the signature come first and cost a read and one HMAC on the
loop; an unsigned body is never parsed, so nesting 1,000 deep from anyone is a 401, not a
RecursionError. A verified request is checked against the replay guard (a database write) and
only then parsed and dispatched, both on a worker thread: a flood of junk cannot hold the loop
that acks Slack. Bolt verifies the signature again inside dispatch; it is the same secret read
from the same app, costs one more HMAC, and keeps Bolt safe wherever else it is mounted.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import structlog
from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.http.limits import read_capped_body
from bot.http.observed import time_ack
from pipelines.replays import SIGNATURE_WINDOW, ReplayGuard

log = structlog.get_logger()

WINDOW_SECONDS = SIGNATURE_WINDOW.total_seconds()  # Slack's ±300 s
# Threads that take verified requests (the replay check, Bolt's dispatch). Their own few, not
# anyio's shared 40: each thread hop through anyio cost the loop a tenth of its time under load
# (bench/ack_load.py), and fewer threads contend less with the loop for the interpreter. Eight
# keep up with a database round trip of a millisecond or more per request.
DISPATCH_THREADS = 8
_DISPATCH = ThreadPoolExecutor(DISPATCH_THREADS, thread_name_prefix="slack-ingress")
# What parsing a signed body can raise: bytes that are not UTF-8, JSON nested past the
# recursion limit, a JSON value that is not the object Bolt expects.
MALFORMED = (RecursionError, ValueError, TypeError, AttributeError, KeyError, IndexError)


class SlackIngress:
    """The `/slack/events` endpoint: 413 over `max_body_bytes`, 401 unless signed with
    `signing_secret` within the window, 200 with an empty body for a replay, 400 for a signed
    body Bolt cannot read; otherwise Bolt's own answer."""

    def __init__(
        self,
        app: App,
        *,
        signing_secret: str,
        max_body_bytes: int,
        replays: ReplayGuard | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.replays = replays
        self._secret = signing_secret.encode()
        self._now = now
        if not signing_secret:
            log.error(
                "slack.no_signing_secret", hint="set SLACK_SIGNING_SECRET; every request 401s"
            )

    async def handle(self, request: Request) -> Response:
        began = time.perf_counter()
        body = await read_capped_body(request, self.max_body_bytes)
        if body is None:
            return self._too_large()
        signature = request.headers.get("x-slack-signature", "")
        signed_at = self.verified_at(
            request.headers.get("x-slack-request-timestamp", ""), signature, body
        )
        if signed_at is None:
            log.info("slack.unverified", client=request.client.host if request.client else None)
            return JSONResponse(
                {
                    "error": "the request is not signed with this app's signing secret "
                    "within 5 minutes"
                },
                status_code=401,
            )
        context = contextvars.copy_context()  # structlog's bound values go with the request
        return await asyncio.get_running_loop().run_in_executor(
            _DISPATCH, context.run, self._take, request, body, signature, signed_at, began
        )

    def verified_at(self, timestamp: str, signature: str, body: bytes) -> datetime | None:
        """When Slack signed `body`, if `signature` is Slack's v0 HMAC of it with this app's
        secret and `timestamp` is within the window of now; else None. The header is compared as
        the bytes that came (Starlette decodes latin-1): a non-ASCII one is a mismatch, not a
        TypeError."""
        if not self._secret or not timestamp.isascii() or not timestamp.isdigit():
            return None
        if len(timestamp) > 12 or abs(self._now() - int(timestamp)) > WINDOW_SECONDS:
            return None
        base = b"v0:" + timestamp.encode() + b":" + body
        expected = b"v0=" + hmac.new(self._secret, base, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, signature.encode("latin-1")):
            return None
        return datetime.fromtimestamp(int(timestamp), UTC)

    def _take(
        self, request: Request, body: bytes, signature: str, signed_at: datetime, began: float
    ) -> Response:
        """On a worker thread: the replay check, then Bolt's parse and dispatch."""
        try:
            replayed = self.replays is not None and not self.replays.first_time(
                signature, signed_at
            )
        except SQLAlchemyError as exc:
            # Not known to be new, so not taken: Slack retries a 5xx (re-signed) a few times,
            # and by then the database may be back. One line, no traceback.
            log.warning("slack.replay_check_failed", error=type(exc).__name__)
            return JSONResponse(
                {"error": "the database is unreachable; the request was not taken"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        if replayed:
            log.info("slack.replay_ignored", signed_at=signed_at.isoformat())
            return Response(status_code=200)
        try:
            bolt_request = to_bolt_request(request, body)
        except MALFORMED as exc:
            log.warning("slack.malformed_request", error=type(exc).__name__)
            return _malformed()
        if not isinstance(bolt_request.body, dict):
            log.warning("slack.malformed_request", error="not an object")
            return _malformed()
        try:
            bolt_response = self.app.dispatch(bolt_request)
        except MALFORMED as exc:
            log.warning("slack.malformed_request", error=type(exc).__name__)
            return _malformed()
        if bolt_response.status == 503:
            # Not taken, and said so on purpose (the event check could not reach the database):
            # Slack redelivers it.
            return to_starlette_response(bolt_response)
        if bolt_response.status >= 500:
            # Listeners ack first and work off the request thread, so a 500 here is Bolt
            # choking on the shape of a signed payload (an action without `actions`…), never
            # lost work: answer as the malformed request it is, and Slack does not retry.
            log.warning("slack.malformed_request", status=bolt_response.status)
            return _malformed()
        time_ack("http", began)
        return to_starlette_response(bolt_response)

    def _too_large(self) -> Response:
        log.info("slack.too_large", limit=self.max_body_bytes)
        return JSONResponse(
            {
                "error": f"the request body is over the {self.max_body_bytes}-byte limit "
                "(GATEHOUSE_SLACK_MAX_BODY_BYTES)"
            },
            status_code=413,
        )


def _malformed() -> Response:
    return JSONResponse({"error": "the Slack request is malformed"}, status_code=400)
