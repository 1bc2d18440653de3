"""The bot's ASGI app: `/slack/events` (HTTP mode), the webhook and metrics routes, `/healthz`,
every route behind the size and rate limits.
"""

from __future__ import annotations

from collections.abc import Sequence

from slack_bolt import App
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.http.limits import HTTPLimits, Limits
from bot.http.slack_ingress import SlackIngress
from pipelines import Settings
from pipelines.replays import ReplayGuard

SLACK_MAX_BODY_BYTES = Settings.model_fields["slack_max_body_bytes"].default


def build_asgi(
    app: App | None,
    extra_routes: Sequence[BaseRoute] = (),
    settings: Settings | None = None,
    *,
    replays: ReplayGuard | None = None,
) -> Starlette:
    """The HTTP server: `/slack/events` (HTTP mode; none for Socket Mode, `app=None`), webhook
    routes, `/healthz`; every route behind the size and rate limits of `settings` (their
    defaults without). `replays` takes each signed Slack request once: `gatehouse serve` passes
    `ReplayGuard(rt, "slack")`; without it a replay within the window is dispatched again."""

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"]), *extra_routes]
    if app is not None:
        ingress = SlackIngress(
            app,
            # The secret Bolt verifies with again inside dispatch: one source for both checks.
            signing_secret=app._signing_secret,
            max_body_bytes=SLACK_MAX_BODY_BYTES
            if settings is None
            else settings.slack_max_body_bytes,
            replays=replays,
        )
        routes.append(Route("/slack/events", ingress.handle, methods=["POST"]))
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
