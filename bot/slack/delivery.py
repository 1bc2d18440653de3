"""Slack's Web API as a delivery channel: what a failure means for the outbox (`DeliveryFailed`:
retry when, or give up), and the message metadata that names what a message shows, so that a
message posted by a sender that died before recording it can be found again and not re-posted.
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
CARD_EVENT = "gatehouse_card"  # the message metadata's event_type on everything the bot delivers
HISTORY_PAGES = 5  # of 200 messages, newest first: how far back a lost message is looked for


def delivery_failure(exc: Exception) -> DeliveryFailed:
    """What a Web API failure means for a delivery: when to retry, or that retrying is futile."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        error = str(response.get("error") or "") if response is not None else ""
        status = getattr(response, "status_code", 200) if response is not None else 200
        retry_after = retry_after_seconds(getattr(response, "headers", None))
        retryable = status == 429 or status >= 500 or error in RETRYABLE_ERRORS
        return DeliveryFailed(
            f"slack {error or status}",
            retryable=retryable,
            retry_after=retry_after,
            code=error or None,
        )
    # The client could not reach Slack (refused, reset, timed out, DNS): try again later.
    return DeliveryFailed(f"slack unreachable: {type(exc).__name__}: {exc}", retryable=True)


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
