"""The slash command listener: ack at once (an empty 200), answer through `response_url`.

Nothing runs before the ack, not even a quick query: `stats` over a busy week or a `trigger`
that calls a model can take longer than Slack's 3 seconds.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from bot import commands
from bot.app import Bot


def register(app: App, bot: Bot) -> None:
    @app.command(bot.settings.slash_command)
    def slash(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        ack()
        bot.submit(answer, bot, str(command.get("text") or ""), str(command["user_id"]), respond)


def answer(bot: Bot, text: str, user: str, respond: Respond) -> None:
    reply = commands.handle_command(
        text,
        user_id=user,
        gatehouse=bot.gatehouse,
        command=bot.settings.slash_command,
        triggerers=bot.settings.triggerers or None,
    )
    respond(**reply.to_payload())
