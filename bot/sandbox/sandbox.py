"""`Sandbox`: the Web API, the web page and the sender to the bot (signed requests, or Socket
Mode envelopes with `socket_mode=True`), on one loopback port."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from types import TracebackType

from bot.sandbox.page import SandboxPage
from bot.sandbox.sender import SlackSender
from bot.sandbox.socket_mode import SocketModeLinks
from bot.sandbox.webapi import SlackWebApi
from bot.sandbox.workspace import DEFAULT_CHANNELS, DEFAULT_USERS, DEMO_GROUPS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


class Sandbox:
    """A local Slack for the bot. `bot_events_url` may be given later with `connect_bot` (the
    bot may need the sandbox's `api_url` before its own URL is known). With `socket_mode` the
    bot connects instead (`app_token`, through `apps.connections.open`) and everything the page
    sends goes over that connection."""

    def __init__(
        self,
        bot_events_url: str | None = None,
        signing_secret: str | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        users: Mapping[str, str] | None = None,
        groups: Mapping[str, list[str]] | None = None,
        channels: Mapping[str, str] | None = None,
        command: str = "/gatehouse",
        default_user: str = "U_ALICE",
        socket_mode: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.token = token or f"xoxb-sandbox-{secrets.token_hex(12)}"
        self.signing_secret = signing_secret or secrets.token_hex(16)
        self.api = SlackWebApi(
            users=DEFAULT_USERS if users is None else users,
            groups=DEMO_GROUPS if groups is None else groups,
            channels=DEFAULT_CHANNELS if channels is None else channels,
            token=self.token,  # the clock is the wall clock: messages show when they were posted
        )
        self.page = SandboxPage(self.api, None, command=command, default_user=default_user)
        self.socket_mode = SocketModeLinks.serve_on(self.api) if socket_mode else None
        if self.socket_mode is not None:
            self.page.sender = SlackSender(
                "", self.signing_secret, self.api, socket_mode=self.socket_mode
            )
        elif bot_events_url:
            self.connect_bot(bot_events_url)

    def connect_bot(self, bot_events_url: str) -> None:
        """Where clicks, submissions and commands go (the bot's `/slack/events`)."""
        if self.socket_mode is not None:
            raise ValueError("a Socket Mode sandbox delivers over the bot's connection, not a URL")
        self.page.sender = SlackSender(bot_events_url, self.signing_secret, self.api)

    @property
    def sender(self) -> SlackSender | None:
        return self.page.sender

    @property
    def app_token(self) -> str | None:
        """The xapp- token `apps.connections.open` accepts (Socket Mode only)."""
        return self.socket_mode.app_token if self.socket_mode is not None else None

    @property
    def url(self) -> str:
        """The web page, e.g. http://127.0.0.1:8765 (known once started)."""
        return self.api.base_url

    @property
    def api_url(self) -> str:
        """The Web API base URL for the bot's WebClient, e.g. http://127.0.0.1:8765/api/."""
        return self.api.api_url

    def start(self) -> Sandbox:
        self.api.start(self.host, self.port, self.page)
        return self

    def stop(self) -> None:
        if self.socket_mode is not None:
            self.socket_mode.close()
        self.api.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def reachable_host(bind_host: str) -> str:
    """Where to reach, from this machine, a server bound to `bind_host` (0.0.0.0 → loopback)."""
    return "127.0.0.1" if bind_host in ("", "0.0.0.0", "::") else bind_host
