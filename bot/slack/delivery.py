"""Slack's Web API as a delivery channel: what a failure means for the outbox (`DeliveryFailed`:
retry when, give up, or hold until an operator acts: a revoked token pauses every delivery, a
missing scope holds the deliveries that need it and names the scope), which errors mean the
message to update is gone (the card is posted again), and the message metadata that names what
a message shows, so that a message posted by a sender that died before recording it can be found
again and not re-posted.
"""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from pipelines.ports import DeliveryFailed, retry_after_seconds

# Slack errors that say "try again later" with a 200 or without a Retry-After.
RETRYABLE_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "service_unavailable",
        "fatal_error",
        "internal_error",
        "request_timeout",
        "team_added_to_org",
    }
)
# A message that is no longer there to update (deleted, or past its edit window): the card is
# posted again, with its state now, rather than given up.
MESSAGE_GONE_ERRORS = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})

REINSTALL = "reinstall the app in the workspace and set the new SLACK_BOT_TOKEN, then restart"
# Errors that refuse every call with this token, whatever the call: delivery pauses (and never
# goes dead) until an operator does what each says.
PAUSE_ERRORS: dict[str, str] = {
    "not_authed": "set SLACK_BOT_TOKEN (no token reached Slack), then restart",
    "invalid_auth": REINSTALL,
    "token_revoked": REINSTALL,
    "token_expired": REINSTALL + " (or turn token rotation off)",
    "account_inactive": "the app's bot user or workspace was deactivated: " + REINSTALL,
    "not_allowed_token_type": "SLACK_BOT_TOKEN must be a bot token (xoxb-…); " + REINSTALL,
    "team_access_not_granted": "an org admin must grant the app access to this workspace",
    "org_login_required": "the workspace is migrating to Enterprise Grid; delivery resumes after",
    "ekm_access_denied": "a Slack admin suspended posting (Enterprise Key Management)",
    "accesslimited": "Slack refuses this network (IP allowlisting): allow this host's address",
    "two_factor_setup_required": "the app's installer must set up two-factor authentication",
}
MISSING_SCOPE = "missing_scope"
CARD_EVENT = "gatehouse_card"  # the message metadata's event_type on everything the bot delivers
HISTORY_PAGES = 5  # of 200 messages, newest first: how far back a lost message is looked for


def delivery_failure(exc: Exception) -> DeliveryFailed:
    """What a Web API failure means for a delivery: when to retry, that retrying is futile, or
    that nothing works until an operator acts (a token, a scope: `hold`, with the `action`)."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        error = str(response.get("error") or "") if response is not None else ""
        status = getattr(response, "status_code", 200) if response is not None else 200
        retry_after = retry_after_seconds(getattr(response, "headers", None))
        method = method_of(response)
        if error in PAUSE_ERRORS:
            action = PAUSE_ERRORS[error]
            return DeliveryFailed(
                f"Slack refused {method}: {error}; {action}",
                retryable=True,
                code=error,
                hold="delivery",
                action=action,
            )
        if error == MISSING_SCOPE:
            needed = str(response.get("needed") or "") if response is not None else ""
            action = scope_action(needed)
            provided = str(response.get("provided") or "") if response is not None else ""
            return DeliveryFailed(
                f"Slack refused {method}: the app lacks "
                + (f"the {needed} scope" if needed else "a scope this method needs")
                + f"; {action}"
                + (f" (the token has: {provided})" if provided else ""),
                retryable=True,
                code=error,
                hold="subject",
                action=action,
            )
        retryable = status == 429 or status >= 500 or error in RETRYABLE_ERRORS
        return DeliveryFailed(
            f"slack {error or status}",
            retryable=retryable,
            retry_after=retry_after,
            code=error or None,
        )
    # The client could not reach Slack (refused, reset, timed out, DNS): try again later.
    return DeliveryFailed(f"slack unreachable: {type(exc).__name__}: {exc}", retryable=True)


def scope_action(needed: str) -> str:
    """What an operator does about a missing scope (Slack's `needed` names it, maybe several)."""
    return (
        f"add {needed or 'the scope the method documents'} under OAuth & Permissions "
        "(and to manifest.yml) and reinstall the app"
    )


def method_of(response: Any) -> str:
    """The Web API method an answer is from (`chat.postMessage`), from the URL it was sent to."""
    url = str(getattr(response, "api_url", "") or "")
    return url.rstrip("/").rsplit("/", 1)[-1] or "a Web API call"


def message_gone(exc: Exception) -> bool:
    """Slack says the message to update is not there any more (deleted, or not editable)."""
    if not isinstance(exc, SlackApiError) or exc.response is None:
        return False
    return str(exc.response.get("error") or "") in MESSAGE_GONE_ERRORS


def metadata(kind: str, ref_id: str) -> dict[str, Any]:
    """The message metadata that names what a delivered message shows."""
    return {"event_type": CARD_EVENT, "event_payload": {"kind": kind, "ref_id": ref_id}}


def looks_up_history(channel: str) -> bool:
    """`conversations.history` takes channel ids only (C…, G…), not names."""
    return channel[:1] in ("C", "G") and channel.upper() == channel


def find_by_metadata(client: WebClient, channel: str, ref_id: str) -> tuple[str, str] | None:
    """(channel, ts) of the newest message in the channel's recent history whose metadata names
    `ref_id`, or None. Slack's ts is not compared with our clock: only the metadata identifies
    the message. Raises `DeliveryFailed` when Slack cannot be asked."""
    cursor = None
    try:
        for _ in range(HISTORY_PAGES):
            page = client.conversations_history(
                channel=channel, include_all_metadata=True, limit=200, cursor=cursor
            )
            for message in page.get("messages") or []:
                meta = message.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if meta.get("event_type") == CARD_EVENT and payload.get("ref_id") == ref_id:
                    return str(page.get("channel") or channel), str(message["ts"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
    except (SlackClientError, OSError) as exc:
        raise delivery_failure(exc) from exc
    return None
