"""The slash command listener: ack at once (an empty 200), answer through `response_url`.

Nothing runs before the ack, not even a quick query: `stats` over a busy week or a `trigger`
that calls a model can take longer than Slack's 3 seconds. A reply Slack does not take (an
expired or used response_url) is logged with Slack's error (bot/slack/private_replies.py).
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App

from bot.slack import commands
from bot.slack.bot import Bot
from bot.slack.private_replies import ResponseUrl
from bot.slack.stats_upload import ChartUploadFailed, private_chart_reply, stats_chart_reply


def register(app: App, bot: Bot) -> None:
    @app.command(bot.settings.slash_command)
    def slash(ack: Ack, command: dict[str, Any]) -> None:
        ack()
        text = str(command.get("text") or "")
        subcommand, rest = commands.split_command(text)
        url = command.get("response_url")
        respond = ResponseUrl(
            url if isinstance(url, str) else None,
            purpose=f"command.{subcommand if subcommand in commands.USAGE else 'unknown'}",
        )
        if subcommand == "eval":  # runs for minutes: its summary is posted in the channel
            user, channel = str(command["user_id"]), str(command["channel_id"])
            from bot.slack import eval as eval_slack  # the evaluation package: only when asked

            bot.submit(eval_slack.run_in_channel, bot, channel, user, rest, respond)
            return
        bot.submit(answer, bot, text, str(command["user_id"]), respond)
        if subcommand == "stats":
            bot.submit(
                send_chart, bot, str(command["channel_id"]), str(command["user_id"]), rest, respond
            )


def send_chart(bot: Bot, channel: str, user: str, rest: str, respond: ResponseUrl) -> None:
    """The 7-day chart, where only the asker sees it (their DM with the app), or with `public`
    shared in the channel; its link comes back privately either way."""
    tokens = [t for t in rest.split() if t.lower() != commands.PUBLIC]
    public = len(tokens) != len(rest.split())
    pipeline = tokens[0] if tokens and not tokens[0][0].isdigit() else None
    try:
        if public:
            link = stats_chart_reply(bot, channel=channel, user=user, pipeline=pipeline)
        else:
            link = private_chart_reply(bot, user=user, pipeline=pipeline)
    except ChartUploadFailed as exc:
        respond(
            response_type="ephemeral", text=f":warning: no chart: {exc}", replace_original=False
        )
        return
    text = (
        f"7-day chart, shared in this channel: {link}"
        if public
        else f"7-day chart, sent only to you in your DM with Gatehouse: {link} · "
        f"`{bot.settings.slash_command} stats public` shares it in the channel"
    )
    respond(response_type="ephemeral", text=text, replace_original=False)


def answer(bot: Bot, text: str, user: str, respond: ResponseUrl) -> None:
    reply = commands.handle_command(
        text,
        user_id=user,
        gatehouse=bot.gatehouse,
        command=bot.settings.slash_command,
    )
    respond(**reply.to_payload())
