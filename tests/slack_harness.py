"""The whole bot on loopback: the fake Slack Web API, the Bolt app served by uvicorn, the engine
on the test database, and a SlackSender that plays Slack's side: signed requests in HTTP mode,
envelopes over the bot's own Socket Mode connection in Socket Mode (`mode="socket"`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from pydantic import SecretStr

from bot.http.asgi import build_asgi
from bot.http.server import BackgroundServer
from bot.sandbox.socket_mode import SocketModeLinks
from bot.serve import build_bot
from bot.slack.app import build_bolt_app
from bot.slack.bot import Bot
from bot.slack.socket_mode import SocketModeConnection, connect_socket_mode
from pipelines import Gatehouse, Settings
from pipelines.replays import ReplayGuard
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack, SlackSender

# A Slack journey a person takes, run over both ways Slack reaches the bot (the `slack_mode`
# fixture's HTTP and Socket Mode); a test without it runs over HTTP (`requested_mode`).
in_both_modes = pytest.mark.usefixtures("slack_mode")


def requested_mode(request: pytest.FixtureRequest) -> str:
    """The Slack mode a `world` fixture builds for this test: `slack_mode`'s when the test asks
    for it (`in_both_modes`), else HTTP."""
    return (
        str(request.getfixturevalue("slack_mode"))
        if "slack_mode" in request.fixturenames
        else "http"
    )


def card_texts(node: Any) -> str:
    """Every piece of text in a card's blocks (or any JSON inside them), one a line: what a
    person reads, for asserting on it."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("text"), str):
                found.append(value["text"])
            for inner in value.values():
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(node)
    return "\n".join(found)


SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
APPROVALS = "C_APPROVALS"


@dataclass
class SlackWorld:
    fake: FakeSlack
    bot: Bot
    server: BackgroundServer
    slack: SlackSender
    clock: FakeClock
    mode: Literal["http", "socket"] = "http"
    socket_mode: SocketModeLinks | None = None  # the sandbox's side, in Socket Mode
    connection: SocketModeConnection | None = None  # the bot's side, in Socket Mode

    @property
    def gatehouse(self) -> Gatehouse:
        return self.bot.gatehouse

    def settle(self) -> None:
        """Wait until the work the bot took after its acks is done. The bound is generous: the
        first chart a fresh venv draws builds matplotlib's font cache, which on a loaded
        machine has taken more than 15 s; an idle bot returns at once whatever the bound."""
        self.bot.wait_idle(timeout=60)

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
        # The triggerer's DMs are posts too: off unless a test asks, so journeys count cards.
        "tell_triggerer": False,
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
    mode: Literal["http", "socket"] = "http",
    **overrides: Any,
) -> Iterator[SlackWorld]:
    """`production=True`: the bot as `gatehouse serve` builds it against a real Slack (the
    closed policy); otherwise as the sandbox and the demo do (the open one). `mode="socket"`:
    the bot gets the sandbox's app token and connects as `serve` does (bot/slack/socket_mode.py);
    `world.slack` then delivers over that connection, and the HTTP server serves only what
    `serve` still serves in Socket Mode (webhooks, /healthz)."""
    links = SocketModeLinks.serve_on(fake) if mode == "socket" else None
    if links is not None:
        overrides = {"slack_app_token": SecretStr(links.app_token), **overrides}
    bot = build_bot(
        settings_for(fake, database_url, **overrides), clock=clock, production=production
    )
    app = build_bolt_app(bot)
    # As `gatehouse serve` has it: the settings' limits, replays refused, its trusted proxies.
    asgi = (
        build_asgi(app, settings=bot.settings, replays=ReplayGuard(bot.gatehouse.rt, "slack"))
        if links is None
        else build_asgi(None, settings=bot.settings)
    )
    server = BackgroundServer(asgi, trusted_proxies=bot.settings.trusted_proxies).start()
    connection = None
    try:
        if links is not None:
            opened = links.connections_opened
            connection = connect_socket_mode(app, links.app_token)
            assert links.wait_connected(timeout=10, opened=opened + 1), "no Socket Mode link"
        sender = SlackSender(server.url, SIGNING_SECRET, fake, socket_mode=links)
        yield SlackWorld(fake, bot, server, sender, clock, mode, links, connection)
    finally:
        if connection is not None:
            connection.close()
        server.stop()
        bot.shutdown()
        bot.gatehouse.db.dispose()
