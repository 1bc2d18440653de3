"""The Undo button on an approval card whose call succeeded: `gatehouse undo` from Slack.

The click has passed its confirm dialog (Slack shows it before sending the click). It acks, then
on the work pool calls the engine's undo (`pipelines.reversal.undo`), which checks who may undo
(`pipelines.authorization`, the same rule as the command), audits, reverses once and owes the
card its update; the card then says who undid it. A refusal, a second click and a failed
reverse are told to the person privately, beside the card.
"""

from __future__ import annotations

from typing import Any

import structlog
from slack_bolt import Ack, App

from bot.formatting import clock
from bot.slack.bot import Bot
from bot.slack.mrkdwn import escape, mention
from bot.slack.outcome_cards import UNDO_ACTION
from bot.slack.private_replies import clicker, tell
from pipelines import GatehouseError
from pipelines.call_outcomes import outcome_of
from pipelines.errors import AlreadyReversed, ReversalFailed

log = structlog.get_logger()


def already_undone_text(bot: Bot, call_id: str, fallback: str) -> str:
    """Who undid it and when, from the record; the engine's own words when it cannot say."""
    outcome = outcome_of(bot.gatehouse.rt, call_id)
    undo = outcome.undo if outcome is not None else None
    if undo is None or undo.status == "failed":
        return escape(fallback)
    at = f" at {clock(undo.at)}" if undo.status == "succeeded" else ""
    done = "already undone" if undo.status == "succeeded" else "being undone"
    return f"This call was {done} by {mention(undo.by)}{at} (reversal `{escape(undo.call_id)}`)."


def undo_and_tell(bot: Bot, body: dict[str, Any], call_id: str) -> None:
    user = clicker(body)
    try:
        bot.gatehouse.undo(call_id, user=user)
    except AlreadyReversed as exc:
        tell(
            bot.client, body, ":information_source: " + already_undone_text(bot, call_id, str(exc))
        )
        return
    except ReversalFailed as exc:
        log.warning("slack.undo_failed", call_id=call_id, error=str(exc))
        tell(bot.client, body, f":warning: {escape(str(exc))}")
        return
    except GatehouseError as refusal:  # not allowed (audited), not reversible, unknown call
        tell(bot.client, body, f":no_entry: {escape(str(refusal))}")
        return
    log.info("slack.undone", call_id=call_id, user=user)


def register(app: App, bot: Bot) -> None:
    @app.action(UNDO_ACTION)
    def undo_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        bot.submit(undo_and_tell, bot, body, str(action["value"]))
