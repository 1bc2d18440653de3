"""Small modals the listeners show while work happens or when there is nothing to do."""

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


def notice_modal(title: str, text: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": title[:24]},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": escape(text)[:3000]}}],
    }
