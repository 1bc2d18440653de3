"""Slack's deliveries, each event taken once and every request acked, in both modes.

Slack redelivers an Events API event it thinks failed (no 2xx within 3 seconds, and it does not
wait for the late answer; an error status; a connection or TLS failure) up to 3 times: nearly
at once, after 1 minute, after 5 minutes, with `X-Slack-Retry-Num` 1 to 3 and its reason.
Socket Mode says the same in the envelope (`retry_attempt`, `retry_reason`), which Bolt mirrors
into those headers, 0 on a first delivery. A retry number says only that Slack did not see an
answer, not whether Gatehouse acted: the first delivery may have been refused before any
listener saw it (429, 401, 5xx, a restart), or taken and acked too late. So the identity of a
delivery is its `event_id`: the first one to reach Bolt's dispatch is recorded (the replay store,
scope "slack-event", kept `REDELIVERY_HORIZON`, shared by replicas: on PostgreSQL the insert is
the check) and a later delivery of the same id is acked and dropped. A delivery whose listener
fails is forgotten again, so Slack's retry of it is taken. Interactions and slash commands carry
no event_id and pass untouched: their own idempotence lives with what they decide.

A request no listener wants (an event the app does not handle, `view_closed`, a click on a
button nobody listens for) is acked 200 rather than Bolt's 404: Slack counts any other answer to
an event (or, in Socket Mode, a missing ack) as a failed delivery, retries it, and disables the
event subscription of an app that keeps failing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from slack_bolt import Ack, App, BoltResponse
from slack_bolt.error import BoltUnhandledRequestError
from sqlalchemy.exc import SQLAlchemyError

from pipelines.replays import ReplayGuard

if TYPE_CHECKING:
    from bot.slack.bot import Bot

log = structlog.get_logger()

EVENT_SCOPE = "slack-event"
# Slack's last retry comes about 6 minutes after the first attempt; an hour is well past it and
# still keeps the table to an hour of events.
REDELIVERY_HORIZON = timedelta(hours=1)

Middleware = Callable[[Any, BoltResponse, Callable[[], BoltResponse]], BoltResponse | None]


def event_guard(bot: Bot) -> ReplayGuard:
    """The store of event ids seen, shared by every replica on the same database."""
    return ReplayGuard(bot.gatehouse.rt, EVENT_SCOPE, window=REDELIVERY_HORIZON)


def event_id_of(body: Any) -> str | None:
    """The event_id of an Events API delivery; None for anything else (interactions, commands,
    url_verification), which this module never drops."""
    if not isinstance(body, Mapping) or body.get("type") != "event_callback":
        return None
    event_id = body.get("event_id")
    return event_id if isinstance(event_id, str) and event_id else None


def once_per_event(guard: ReplayGuard) -> Middleware:
    """The Bolt global middleware that drops a delivery of an event_id already dispatched."""

    def drop_redeliveries(
        req: Any, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        event_id = event_id_of(req.body)
        if event_id is None:
            return next()
        try:
            first = guard.first_time(event_id, guard.rt.clock.now())
        except SQLAlchemyError as exc:
            # Not known to be new, so not taken: Slack redelivers (HTTP: the 503; Socket Mode:
            # no ack), and by then the database may be back. One line, no traceback.
            log.warning("slack.event_check_failed", event_id=event_id, error=type(exc).__name__)
            return BoltResponse(status=503, body="", headers={"retry-after": "1"})
        if not first:
            log.info(
                "slack.redelivery_dropped",
                event_id=event_id,
                retry=_header(req, "x-slack-retry-num"),
                reason=_header(req, "x-slack-retry-reason"),
            )
            return BoltResponse(status=200, body="")
        return next()

    return drop_redeliveries


def answer_errors(guard: ReplayGuard) -> Callable[..., BoltResponse | None]:
    """Bolt's error handler (`raise_error_for_unhandled_request=True` sends unhandled requests
    here too): a request no listener wants is acked 200; a listener or middleware that raised
    leaves Bolt's 500 (Slack retries) and its event is forgotten so that retry is taken."""

    def handle_error(error: Exception, request: Any) -> BoltResponse | None:
        body = request.body if isinstance(request.body, Mapping) else {}
        if isinstance(error, BoltUnhandledRequestError):
            log.info("slack.unhandled", **describe(body))
            return BoltResponse(status=200, body="")
        event_id = event_id_of(body)
        if event_id is not None:
            try:
                guard.forget(event_id)
            except SQLAlchemyError as exc:
                log.warning(
                    "slack.event_forget_failed",
                    event_id=event_id,
                    error=type(exc).__name__,
                    hint="the database is unreachable: Slack's retry of this event will be "
                    "dropped as a redelivery",
                )
        log.error("slack.dispatch_failed", **describe(body), exc_info=error)
        return None

    return handle_error


def describe(body: Mapping[str, Any]) -> dict[str, str]:
    """What a request is, for a log line: its kind and the name a listener would match."""
    if "command" in body:
        return {"kind": "command", "name": str(body.get("command"))}
    kind = str(body.get("type") or "unknown")
    if kind == "event_callback":
        event = body.get("event")
        name = event.get("type") if isinstance(event, Mapping) else None
        return {"kind": "event", "name": str(name), "event_id": str(body.get("event_id"))}
    view = body.get("view")
    if isinstance(view, Mapping):
        return {"kind": kind, "name": str(view.get("callback_id") or "")}
    actions = body.get("actions")
    if isinstance(actions, list) and actions and isinstance(actions[0], Mapping):
        return {"kind": kind, "name": str(actions[0].get("action_id") or "")}
    return {"kind": kind, "name": str(body.get("callback_id") or body.get("action_id") or "")}


def register(app: App) -> None:
    """The events an operator must act on: logged as warnings that say what to do."""

    @app.event("tokens_revoked")
    def tokens_revoked(ack: Ack, event: dict[str, Any], body: dict[str, Any]) -> None:
        ack()
        tokens: Mapping[str, Any] = event.get("tokens") or {}
        log.warning(
            "slack.tokens_revoked",
            team=body.get("team_id"),
            bot_users=list(tokens.get("bot") or []),
            user_tokens=len(tokens.get("oauth") or []),
            hint="Slack revoked Gatehouse's tokens in this workspace: every card, reply and Home "
            "tab fails until the app is reinstalled and SLACK_BOT_TOKEN is set to the new token "
            "(then restart gatehouse serve)",
        )

    @app.event("app_uninstalled")
    def app_uninstalled(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        log.warning(
            "slack.app_uninstalled",
            team=body.get("team_id"),
            enterprise=body.get("enterprise_id"),
            hint="the Gatehouse app was uninstalled from this workspace: cards, replies and the "
            "Home tab no longer reach it; reinstall the app from manifest.yml and set "
            "SLACK_BOT_TOKEN to the new token, or stop gatehouse serve",
        )


def _header(req: Any, name: str) -> str | None:
    value = req.headers.get(name)
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return value if isinstance(value, str) else None
