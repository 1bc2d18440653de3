"""Private replies to one person: `chat.postEphemeral` in the conversation of their click, or
the interaction's `response_url` (which works in any conversation, the bot a member or not).

`chat.postEphemeral` fails where the bot is not a member (`not_in_channel`, `channel_not_found`,
an archived channel…); the click's `response_url` still reaches the person, so that is where
the reply goes then. A `response_url` POST that fails (an HTTP error such as 404 `expired_url`,
or a `{"ok": false, "error": …}` body) is logged with Slack's error, never dropped silently.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.slack.refusals import NOT_POSTABLE, log_refusal
from bot.slack.reply_connections import ReplyConnections

log = structlog.get_logger()

RESPONSE_URL_TIMEOUT = 10
# Kept connections to the response_url host, shared by every lane (bot/slack/reply_connections.py).
REPLIES = ReplyConnections(timeout=RESPONSE_URL_TIMEOUT)


def response_url_error(status: int, body: str) -> str | None:
    """Slack's error for a response_url answer, or None when it took the reply. Slack answers
    200 `ok` (or `{"ok": true}`), or an HTTP error with the reason as text (`expired_url`,
    `used_url`, `no_text`), or 200 with `{"ok": false, "error": …}`."""
    text = (body or "").strip()
    parsed: Any = None
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
    if isinstance(parsed, dict) and parsed.get("ok") is False:
        return str(parsed.get("error") or "unknown_error")
    if 200 <= status < 300:
        return None
    return text[:100] or f"http_{status}"


def post_to_response_url(url: str, payload: dict[str, Any], *, purpose: str) -> bool:
    """POST `payload` to a response_url; True when Slack took it, else logged and False."""
    try:
        status, body = REPLIES.post(url, payload)
    except (OSError, SlackClientError) as exc:
        log.warning("slack.reply_failed", via="response_url", purpose=purpose, error=repr(exc))
        return False
    error = response_url_error(status, body)
    if error is not None:
        log.warning(
            "slack.reply_failed",
            via="response_url",
            purpose=purpose,
            status=status,
            error=error,
        )
        return False
    return True


class ResponseUrl:
    """A slash command's or a click's `response_url`, as a callable like Bolt's `respond` that
    says whether the reply arrived (and logs it when it did not)."""

    def __init__(self, url: str | None, *, purpose: str) -> None:
        self.url = url or None
        self.purpose = purpose

    def __call__(self, **payload: Any) -> bool:
        if self.url is None:
            log.warning(
                "slack.reply_failed",
                via="response_url",
                purpose=self.purpose,
                error="no_response_url",
            )
            return False
        return post_to_response_url(self.url, payload, purpose=self.purpose)


def tell_privately(
    client: WebClient,
    *,
    user: str,
    channel: str | None,
    text: str,
    response_url: str | None = None,
    blocks: list[dict[str, Any]] | None = None,
    purpose: str = "notice",
) -> bool:
    """An ephemeral to `user` in `channel`; where the bot may not post there (or there is no
    channel), through `response_url` when there is one. True when it arrived."""
    if channel is not None:
        try:
            client.chat_postEphemeral(channel=channel, user=user, text=text, blocks=blocks)
            return True
        except SlackApiError as exc:
            error = log_refusal("slack.ephemeral_failed", exc, channel=channel, purpose=purpose)
            if error not in NOT_POSTABLE or not response_url:
                return False
    if not response_url:
        log.warning(
            "slack.reply_failed",
            via="none",
            purpose=purpose,
            user=user,
            error="no_channel_or_response_url",
        )
        return False
    payload: dict[str, Any] = {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": text,
    }
    if blocks:
        payload["blocks"] = blocks
    return post_to_response_url(response_url, payload, purpose=purpose)


def clicker(body: dict[str, Any]) -> str:
    """Who clicked (or submitted) in an interaction payload."""
    return str(body["user"]["id"])


def click_channel(body: dict[str, Any]) -> str | None:
    """The conversation of a click in a message (None for a modal's or the Home tab's)."""
    channel = body.get("channel") or {}
    container = body.get("container") or {}
    return channel.get("id") or container.get("channel_id")


def tell(client: WebClient, body: dict[str, Any], text: str, *, purpose: str = "notice") -> bool:
    """A private line to the person behind an interaction, where they clicked."""
    url = body.get("response_url")
    return tell_privately(
        client,
        user=clicker(body),
        channel=click_channel(body),
        text=text,
        response_url=url if isinstance(url, str) else None,
        purpose=purpose,
    )
