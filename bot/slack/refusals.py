"""What a person is told when Slack refuses a call made for them, and how the refusal is logged.

One table from Slack's error code to a sentence saying what happened and what to do, so a
refused `views.open`, `views.update`, `views.publish` or reply reads the same everywhere. A
refusal is Slack's answer, not our bug: it is logged once as a structured warning naming the
method and the error (no traceback); tracebacks are kept for exceptions of our own.
"""

from __future__ import annotations

from typing import Any

import structlog
from slack_sdk.errors import SlackApiError

log = structlog.get_logger()

_EXPIRED = "This button expired before Gatehouse could open {thing}; click it again."
_BUSY = "Slack is busy right now; click again in a moment."
_BROKEN = (
    "Slack refused {thing} as invalid ({error}); tell whoever runs Gatehouse "
    "(the details are in its log)."
)
_INSTALL = "Gatehouse's Slack installation needs attention ({error}); tell whoever runs Gatehouse."
_SLACK_DOWN = "Slack had a problem on its side ({error}); try again in a moment."

SENTENCES: dict[str, str] = {
    # views.open / views.push: the trigger_id lives 3 s and opens one modal.
    "expired_trigger_id": _EXPIRED,
    "invalid_trigger_id": _EXPIRED,
    "exchanged_trigger_id": _EXPIRED,
    "trigger_exchanged": _EXPIRED,
    "expired_interactivity_pointer": _EXPIRED,
    "ratelimited": _BUSY,
    "rate_limited": _BUSY,
    "view_too_large": (
        "{Thing} is too large for Slack to show (its limit is 250 kB); tell whoever runs Gatehouse."
    ),
    "push_limit_reached": "Slack shows at most three stacked forms; close one and try again.",
    "duplicate_external_id": "{Thing} is already open; close it and click the button again.",
    # views.update
    "not_found": "{Thing} was closed before Gatehouse could fill it in; click the button again.",
    "hash_conflict": (
        "{Thing} changed while Gatehouse was filling it in; close it and click the button again."
    ),
    "invalid_arguments": _BROKEN,
    "invalid_blocks": _BROKEN,
    "invalid_blocks_format": _BROKEN,
    "msg_too_long": _BROKEN,
    "no_text": _BROKEN,
    # where a reply goes
    "not_in_channel": (
        "Gatehouse is not a member of this channel; invite it with `/invite @Gatehouse`."
    ),
    "channel_not_found": "Gatehouse cannot see this conversation; invite it, or use it elsewhere.",
    "is_archived": "This channel is archived, so Gatehouse cannot post in it.",
    "user_not_found": "Slack does not know this user in Gatehouse's workspace.",
    # the installation
    "invalid_auth": _INSTALL,
    "not_authed": _INSTALL,
    "token_revoked": _INSTALL,
    "token_expired": _INSTALL,
    "account_inactive": _INSTALL,
    "missing_scope": _INSTALL,
    "not_allowed_token_type": _INSTALL,
    "not_enabled": _INSTALL,
    # Slack's side
    "fatal_error": _SLACK_DOWN,
    "internal_error": _SLACK_DOWN,
    "service_unavailable": _SLACK_DOWN,
    "request_timeout": _SLACK_DOWN,
}
_OTHERWISE = (
    "Slack refused {thing} ({error}); try again, and if it keeps happening tell whoever runs "
    "Gatehouse."
)
UNREACHABLE = "Gatehouse could not reach Slack to open {thing}; click again in a moment."

# Errors that mean "the bot may not post here" although the person can be reached through the
# interaction's response_url (which works in any conversation).
NOT_POSTABLE = frozenset(
    {
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "user_not_in_channel",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
        "team_access_not_granted",
        "ekm_access_denied",
    }
)


def error_code(exc: SlackApiError) -> str:
    """Slack's error code for a refusal (`ratelimited` for an HTTP 429 without one)."""
    response = exc.response
    data = response.data if isinstance(response.data, dict) else {}
    error = data.get("error")
    if response.status_code == 429 and not error:
        return "ratelimited"
    return str(error or f"http_{response.status_code}")


def method_of(exc: SlackApiError) -> str:
    """The Web API method a refusal answered (`views.open`), from the URL it was sent to."""
    url = str(getattr(exc.response, "api_url", "") or "")
    return url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or "unknown"


def sentence(error: str, thing: str = "the form") -> str:
    """What the person reads for Slack's `error`, about `thing` ("the form", "the dashboard")."""
    template = SENTENCES.get(error, _OTHERWISE)
    return template.format(thing=thing, Thing=thing[:1].upper() + thing[1:], error=error)


def log_refusal(event: str, exc: SlackApiError, **context: Any) -> str:
    """Log Slack's refusal once, as a warning with the method, the error and Slack's own
    explanation (`response_metadata.messages`, e.g. which block was invalid); returns the
    error code."""
    error = error_code(exc)
    data = exc.response.data if isinstance(exc.response.data, dict) else {}
    metadata = data.get("response_metadata")
    messages = metadata.get("messages") if isinstance(metadata, dict) else None
    extra: dict[str, Any] = {}
    if isinstance(messages, list) and messages:
        extra["slack_messages"] = [str(m)[:300] for m in messages[:5]]
    if exc.response.status_code != 200:
        extra["status"] = exc.response.status_code
    retry_after = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
    if retry_after:
        extra["retry_after"] = str(retry_after)
    log.warning(event, method=method_of(exc), error=error, **extra, **context)
    return error
