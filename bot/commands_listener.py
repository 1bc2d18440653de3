"""The slash command listener: inspect commands answer in the ack itself; slow ones (trigger,
replay, undo) ack with a note and answer through `response_url` when done."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from bot import commands
from bot.app import Bot

SLOW = ("trigger", "replay", "undo")


def register(app: App, bot: Bot) -> None:
    @app.command(bot.settings.slash_command)
    def slash(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        text = str(command.get("text") or "").strip()
        user = str(command["user_id"])
        if text.split(" ", 1)[0].lower() in SLOW:
            ack(response_type="ephemeral", text=f"Working on `{text[:100]}`…")
            bot.submit(_answer_later, bot, text, user, respond)
            return
        reply = commands.handle_command(text, user_id=user, gatehouse=bot.gatehouse)
        ack(response_type="ephemeral", blocks=reply.blocks, text=reply.text)


def _answer_later(bot: Bot, text: str, user: str, respond: Respond) -> None:
    reply = commands.handle_command(text, user_id=user, gatehouse=bot.gatehouse)
    respond(response_type="ephemeral", blocks=reply.blocks, text=reply.text, replace_original=False)
