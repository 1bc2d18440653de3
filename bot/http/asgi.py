"""The bot's ASGI app: `/slack/events` (HTTP mode), the webhook and metrics routes, `/healthz`,
every route behind the size and rate limits.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.http.limits import HTTPLimits, Limits
from pipelines import Settings

log = structlog.get_logger()

MAX_BODY_BYTES = 1_000_000  # Slack's payloads are far smaller; refuse anything larger


def build_asgi(
    app: App | None, extra_routes: Sequence[BaseRoute] = (), settings: Settings | None = None
) -> Starlette:
    """The HTTP server: `/slack/events` (HTTP mode), webhook routes, `/healthz`; every route
    behind the size and rate limits of `settings` (their defaults without)."""

    async def slack_events(request: Request) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        try:
            # Bolt parses the body before it checks the signature: malformed JSON, bytes that
            # are not UTF-8 or JSON that is not an object raise there, from anyone.
            bolt_request = to_bolt_request(request, body)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError):
            bolt_request = None
        if bolt_request is None or not isinstance(bolt_request.body, dict):
            return JSONResponse({"error": "the body is not a Slack request"}, status_code=400)
        assert app is not None
        bolt_response = app.dispatch(bolt_request)
        if bolt_response.status >= 500:
            # Listeners ack first and work off the request thread, so a 500 here is Bolt
            # choking on the shape of a signed payload (an action without `actions`…), never
            # lost work: answer as the malformed request it is, and Slack does not retry.
            log.warning("slack.malformed_request", status=bolt_response.status)
            return JSONResponse({"error": "the Slack request is malformed"}, status_code=400)
        return to_starlette_response(bolt_response)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"]), *extra_routes]
    if app is not None:
        routes.append(Route("/slack/events", slack_events, methods=["POST"]))
    return Starlette(routes=routes, middleware=[http_limits_middleware(settings)])


def http_limits_middleware(settings: Settings | None) -> Middleware:
    limits = (
        Limits()
        if settings is None
        else Limits(
            max_body_bytes=settings.http_max_body_bytes,
            rate=settings.http_rate_limit,
            burst=settings.http_rate_burst,
        )
    )
    return Middleware(HTTPLimits, limits=limits)
