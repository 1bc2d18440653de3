"""The fake Slack the tests use is the product's sandbox (bot/sandbox/): `FakeSlack` serves the
Web API subset the bot uses (recording every call and rejecting Block Kit that real Slack would
reject), and `SlackSender` sends the bot signed slash commands, interactions and events exactly
as Slack does.

    with FakeSlack() as slack:
        client = WebClient(token=slack.token, base_url=slack.api_url)
        sender = SlackSender(bot_url, signing_secret, slack)
        sender.command("pending", user_id="U_ALICE")
        assert slack.ephemerals("U_ALICE") and not slack.rejected
"""

from __future__ import annotations

from bot.sandbox.blockkit import check_blocks, check_view
from bot.sandbox.sender import BotResponse, SentRequest, SlackSender
from bot.sandbox.webapi import Rejection
from bot.sandbox.webapi import SlackWebApi as FakeSlack
from bot.sandbox.workspace import (
    BOT_TOKEN,
    BOT_USER_ID,
    DEFAULT_CHANNELS,
    DEFAULT_GROUPS,
    DEFAULT_USERS,
)

__all__ = [
    "BOT_TOKEN",
    "BOT_USER_ID",
    "DEFAULT_CHANNELS",
    "DEFAULT_GROUPS",
    "DEFAULT_USERS",
    "BotResponse",
    "FakeSlack",
    "Rejection",
    "SentRequest",
    "SlackSender",
    "check_blocks",
    "check_view",
]
