"""The Slack bot: the Bolt app (sync, `process_before_response=True`) and its ASGI server.

Every listener acks at once and hands its work to a thread pool; nothing slow runs before the
ack, so Bolt's dispatch runs right on the event loop (a thread hop per request costs a third of
the throughput). Two pools: `ui` for the Slack calls a person is waiting on (`views.open` must
happen within the 3 s a trigger_id lives), `work` for decisions and the runs they resume, which
may take long. Slack's own retries of an event we already took (`X-Slack-Retry-Num`) are
acknowledged and dropped: they never cause a second effect.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import structlog
from slack_bolt import App, BoltResponse
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.http.limits import HTTPLimits, Limits
from pipelines import Gatehouse, Settings

log = structlog.get_logger()

MAX_BODY_BYTES = 1_000_000  # Slack's payloads are far smaller; refuse anything larger


@dataclass
class Bot:
    """What the listeners need: the engine, the Web API client, settings, and a place to work."""

    gatehouse: Gatehouse
    client: WebClient
    settings: Settings
    work: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "slack-work"))
    ui: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "slack-ui"))
    _pending: set[Future[None]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run after the ack on the work pool; errors are logged, never lost silently."""
        self._run(self.work, fn, *args, **kwargs)

    def submit_ui(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run after the ack on the pool that only talks to Slack (never waits on a run)."""
        self._run(self.ui, fn, *args, **kwargs)

    def shutdown(self) -> None:
        self.wait_idle(timeout=60)
        self.ui.shutdown(wait=True)
        self.work.shutdown(wait=True)

    def _run(
        self, pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:

        def guarded() -> None:
            try:
                fn(*args, **kwargs)
            except Exception:
                log.exception("slack.work_failed", work=getattr(fn, "__name__", repr(fn)))

        future = pool.submit(guarded)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until every submitted piece of work is done (shutdown, tests)."""
        with self._lock:
            pending = list(self._pending)
        _done, not_done = wait(pending, timeout=timeout)
        if not_done:
            raise TimeoutError(f"{len(not_done)} Slack work items still running after {timeout}s")


def build_web_client(settings: Settings) -> WebClient:
    """A Web API client that survives Slack's rate limits (honouring `Retry-After`) and
    connection blips through slack-sdk's own retry handlers."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    kwargs: dict[str, Any] = {}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url.rstrip("/") + "/"
    return WebClient(
        token=token,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=3),
            ConnectionErrorRetryHandler(max_retry_count=2),
        ],
        **kwargs,
    )


def build_bolt_app(bot: Bot) -> App:
    from bot.slack import actions, commands_listener, home_listener, review

    secret = bot.settings.slack_signing_secret
    app = App(
        client=bot.client,
        signing_secret=secret.get_secret_value() if secret else None,
        process_before_response=True,
        token_verification_enabled=False,
    )

    @app.middleware
    def drop_slack_retries(
        req: Any, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse:
        retry = req.headers.get("x-slack-retry-num")
        if retry:
            log.info("slack.retry_dropped", retry=retry[0] if isinstance(retry, list) else retry)
            return BoltResponse(status=200, body="")
        return next()

    actions.register(app, bot)
    commands_listener.register(app, bot)
    home_listener.register(app, bot)
    review.register(app, bot)
    return app


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
