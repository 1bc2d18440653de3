"""The whole bot on loopback: the fake Slack Web API, the Bolt app served by uvicorn, the engine
on the test database, and a SlackSender that plays Slack's side with signed requests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from bot.http.asgi import build_asgi
from bot.http.server import BackgroundServer
from bot.serve import build_bot
from bot.slack.app import build_bolt_app
from bot.slack.bot import Bot
from pipelines import Gatehouse, Settings
from pipelines.replays import ReplayGuard
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack, SlackSender

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
APPROVALS = "C_APPROVALS"


@dataclass
class SlackWorld:
    fake: FakeSlack
    bot: Bot
    server: BackgroundServer
    slack: SlackSender
    clock: FakeClock

    @property
    def gatehouse(self) -> Gatehouse:
        return self.bot.gatehouse

    def settle(self) -> None:
        """Wait until the work the bot took after its acks is done."""
        self.bot.wait_idle(timeout=15)

    def card(self, ref_ts: str) -> dict[str, Any]:
        return self.fake.find_message(ref_ts)[1]

    def approval_cards(self) -> list[dict[str, Any]]:
        return self.fake.messages(APPROVALS)


def settings_for(fake: FakeSlack, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "slack_bot_token": SecretStr(fake.token),
        "slack_signing_secret": SecretStr(SIGNING_SECRET),
        "slack_api_url": fake.api_url,
        "approvals_channel": APPROVALS,
        "serve_workers": 0,
        **overrides,
    }
    return Settings.model_construct(**{**Settings().model_dump(), **values})


@contextmanager
def slack_world(
    fake: FakeSlack,
    database_url: str,
    clock: FakeClock,
    *,
    production: bool = False,
    **overrides: Any,
) -> Iterator[SlackWorld]:
    """`production=True`: the bot as `gatehouse serve` builds it against a real Slack (the
    closed policy); otherwise as the sandbox and the demo do (the open one)."""
    bot = build_bot(
        settings_for(fake, database_url, **overrides), clock=clock, production=production
    )
    # As `gatehouse serve` has it: the settings' limits, replays refused, its trusted proxies.
    asgi = build_asgi(
        build_bolt_app(bot), settings=bot.settings, replays=ReplayGuard(bot.gatehouse.rt, "slack")
    )
    server = BackgroundServer(asgi, trusted_proxies=bot.settings.trusted_proxies).start()
    try:
        yield SlackWorld(fake, bot, server, SlackSender(server.url, SIGNING_SECRET, fake), clock)
    finally:
        server.stop()
        bot.shutdown()
        bot.gatehouse.db.dispose()
