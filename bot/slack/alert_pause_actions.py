"""The **Resume** and **Keep paused** buttons of an alert that paused its pipeline: ack, then on
the work pool ask the engine (`pipelines.operations.alert_pauses.choose`: operators only,
audited) and update the alert's message with who chose what. A refusal is told privately to
the person who clicked, where they clicked."""

from __future__ import annotations

from typing import Any

import structlog
from slack_bolt import Ack, App
from slack_sdk.errors import SlackClientError

from bot.slack.alert_cards import alert_blocks, alert_text
from bot.slack.alert_pause_cards import KEEP_PAUSED_ACTION, RESUME_ACTION
from bot.slack.bot import Bot
from bot.slack.private_replies import clicker, tell
from pipelines import GatehouseError
from pipelines.operations.alert_pauses import choose

log = structlog.get_logger()


def choose_and_update(bot: Bot, body: dict[str, Any], value: str, *, resume: bool) -> None:
    try:
        outcome = choose(bot.gatehouse.rt, int(value), user=clicker(body), resume=resume)
    except ValueError:
        tell(bot.client, body, f":warning: `{value[:40]}` is not an alert id")
        return
    except GatehouseError as refusal:
        tell(bot.client, body, f":no_entry: {refusal}")
        return
    alert = outcome.alert
    if not alert.channel or not alert.ts:
        return
    try:
        bot.client.chat_update(
            channel=alert.channel,
            ts=alert.ts,
            blocks=alert_blocks(alert, bot.settings.slash_command),
            text=alert_text(alert),
        )
    except (SlackClientError, OSError) as exc:
        # The choice is made and recorded; the message shows it at its next update.
        log.warning("alert.update_failed", alert_id=alert.id, error=str(exc))


def register(app: App, bot: Bot) -> None:
    @app.action(RESUME_ACTION)
    def resume_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        bot.submit(choose_and_update, bot, body, str(action["value"]), resume=True)

    @app.action(KEEP_PAUSED_ACTION)
    def keep_paused_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        bot.submit(choose_and_update, bot, body, str(action["value"]), resume=False)
