"""Back-pressure: when the bot's work lanes already hold their limit of unfinished work, a new
request from Slack is refused before any listener sees it, with the answer Slack expects.

Every listener acks at once and leaves its work on a lane (bot/slack/bot.py); without a bound a
burst that comes faster than the work drains grows the lanes' queues without end, and every reply
and card falls further behind. Over GATEHOUSE_SLACK_WORK_LIMIT unfinished items:
- a slash command is answered at once, only to the person who sent it, that Gatehouse is busy and
  did nothing (Slack does not retry a command; the person can send it again);
- an Events API delivery gets a 503, and in Socket Mode no ack: Slack redelivers it (its retries
  come a moment, a minute and five minutes later), and it is not yet recorded as seen, so the
  redelivery is taken;
- a click, a modal submission or an options request gets a 503: Slack tells the person it did not
  go through, and the card or the modal (with what was typed in it) stays as it was, to try again.
Nothing is half done: the refusal comes before the event check, the listener and its ack.
`url_verification` and anything else that carries no work pass untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from slack_bolt import BoltResponse

if TYPE_CHECKING:
    from bot.slack.bot import Bot

log = structlog.get_logger()

BUSY_TEXT = (
    ":hourglass: Gatehouse is busy and did not run `{typed}`: nothing was done. "
    "Send it again in a few seconds."
)
INTERACTIVE = frozenset(
    {
        "block_actions",
        "view_submission",
        "block_suggestion",
        "shortcut",
        "message_action",
        "interactive_message",
    }
)


def busy_answer(body: Mapping[str, Any]) -> BoltResponse | None:
    """What Slack gets for `body` while the lanes are full; None for a request that carries no
    work (url_verification, view_closed…) and passes even then."""
    if "command" in body:
        typed = " ".join(str(part) for part in (body.get("command"), body.get("text")) if part)
        text = BUSY_TEXT.format(typed=typed)
        return BoltResponse(
            status=200,
            body=json.dumps({"response_type": "ephemeral", "text": text}),
            headers={"content-type": "application/json"},
        )
    kind = body.get("type")
    if kind == "event_callback" or kind in INTERACTIVE:
        return BoltResponse(
            status=503,
            body=json.dumps({"error": "Gatehouse is busy; nothing was done, send it again"}),
            headers={"content-type": "application/json", "retry-after": "1"},
        )
    return None


def refuse_when_busy(
    bot: Bot,
) -> Callable[[Any, BoltResponse, Callable[[], BoltResponse]], BoltResponse | None]:
    """The Bolt global middleware (first of all) that applies the bound."""

    def refuse(
        req: Any, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        if bot.has_room():
            return next()
        body = req.body if isinstance(req.body, Mapping) else {}
        answer = busy_answer(body)
        if answer is None:
            return next()
        log.warning(
            "slack.busy_refused",
            kind="command" if "command" in body else str(body.get("type")),
            unfinished=bot.unfinished(),
            limit=bot.work_limit,
        )
        return answer

    return refuse
