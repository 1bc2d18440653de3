"""The Web API clients the bot talks to Slack with: the shared one (retries Slack's rate limits
after `Retry-After`) and the modal one (never retries: a trigger_id lives 3 s, so a retry after
a 429 could only fail), both logging the warnings Slack attaches to answers that succeeded.

Every Web API method of slack-sdk's `WebClient` goes through `api_call`, so overriding it once
gives every caller the warnings: `{"ok": true, "warning": "superfluous_charset",
"response_metadata": {"warnings": ["superfluous_charset"]}}` is logged as `slack.api_warning`
once per (method, warning) for the life of the bot (its process), not on every call.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from slack_sdk.web import SlackResponse

from pipelines import Settings

log = structlog.get_logger()

# How long a modal call may take before the person is told: past 3 s the trigger_id is dead
# anyway, but Slack may still have opened the modal, so the read waits a little longer.
MODAL_CALL_TIMEOUT = 10


class WarningsSeen:
    """The (method, warning) pairs already logged by one bot's clients (a process has one bot:
    `build_web_client` makes the set, and the clients beside it share it)."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def first_time(self, method: str, warning: str) -> bool:
        with self._lock:
            if (method, warning) in self._seen:
                return False
            self._seen.add((method, warning))
            return True


def answer_warnings(data: Any) -> list[str]:
    """The warnings in one Web API answer: `response_metadata.warnings` and `.messages`, and
    the older top-level `warning` (a comma-separated string), each once, in order."""
    if not isinstance(data, dict):
        return []
    found: list[str] = []
    metadata = data.get("response_metadata")
    if isinstance(metadata, dict):
        for key in ("warnings", "messages"):
            values = metadata.get(key)
            if isinstance(values, list):
                found += [str(v) for v in values if v]
    top = data.get("warning")
    if isinstance(top, str):
        found += [w.strip() for w in top.split(",") if w.strip()]
    return list(dict.fromkeys(found))


class GatehouseWebClient(WebClient):
    """slack-sdk's `WebClient`, logging Slack's warnings on successful answers (once each)."""

    def __init__(self, *args: Any, warnings_seen: WarningsSeen | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.warnings_seen = warnings_seen or WarningsSeen()

    def api_call(self, api_method: str, **kwargs: Any) -> SlackResponse:
        response = super().api_call(api_method, **kwargs)
        for warning in answer_warnings(response.data):
            if self.warnings_seen.first_time(api_method, warning):
                log.warning("slack.api_warning", method=api_method, warning=warning)
        return response


def build_web_client(settings: Settings) -> WebClient:
    """The shared client: survives Slack's rate limits (honouring `Retry-After`) and connection
    blips through slack-sdk's own retry handlers."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    kwargs: dict[str, Any] = {}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url.rstrip("/") + "/"
    return GatehouseWebClient(
        token=token,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=3),
            ConnectionErrorRetryHandler(max_retry_count=2),
        ],
        **kwargs,
    )


def unretried_web_client(shared: WebClient, *, timeout: int = 30) -> WebClient:
    """A client beside `shared` (same token and Slack) without slack-sdk's retry handlers, for
    callers that decide themselves what a 429 means (the outbox sender waits `Retry-After`
    without holding a thread; a modal call tells the person to click again)."""
    seen = shared.warnings_seen if isinstance(shared, GatehouseWebClient) else None
    return GatehouseWebClient(
        token=shared.token,
        base_url=shared.base_url,
        timeout=timeout,
        retry_handlers=[],
        warnings_seen=seen,
    )


def modal_web_client(shared: WebClient) -> WebClient:
    """The client for the calls that spend a trigger_id (`views.open`, `views.push`): no
    rate-limit retry, so a 429 comes straight back and the person is told to click again
    instead of a thread sleeping `Retry-After` and then failing with an expired trigger_id.
    No connection retry either: Slack may have opened the modal before the connection broke,
    and a second call would only be refused as exchanged."""
    return unretried_web_client(shared, timeout=MODAL_CALL_TIMEOUT)
