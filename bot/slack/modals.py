"""Small views the listeners show while work happens, when there is nothing to do, or when
Slack refused the real one: modals, and the Home tab's stand-in."""

from __future__ import annotations

from typing import Any

from bot.slack.mrkdwn import escape


def loading_modal(title: str = "Answer") -> dict[str, Any]:
    """Opened at once on a click (a trigger_id lives 3 s); replaced by the real form."""
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": title[:24]},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": ":hourglass_flowing_sand: Loading the form…"},
            }
        ],
    }


def notice_modal(title: str, text: str, *, mrkdwn: str | None = None) -> dict[str, Any]:
    """`text` escaped; or `mrkdwn` already escaped by the caller (a refusal with mentions)."""
    shown = mrkdwn if mrkdwn is not None else escape(text)
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": title[:24]},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": shown[:3000]}}],
    }


def notice_home(text: str) -> dict[str, Any]:
    """The Home tab when its dashboard could not be shown: what happened, and what to do."""
    return {
        "type": "home",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": escape(text)[:3000]}},
        ],
    }
