"""`gatehouse sandbox`: the local Slack sandbox on its own, for a bot started separately.

    gatehouse sandbox --port 8765 --bot-url http://127.0.0.1:3000/slack/events

prints the page's URL and the environment the bot needs (`SLACK_API_URL`, `SLACK_BOT_TOKEN`,
`SLACK_SIGNING_SECRET`; with `--socket-mode`, `SLACK_APP_TOKEN` instead of the secret, and the
bot connects to the sandbox), then serves until Ctrl-C. `gatehouse serve` without a SLACK_BOT_TOKEN
starts one beside the bot by itself; this command is for running the two apart.
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from pipelines.config import Settings

# bot.sandbox's DEFAULT_HOST and DEFAULT_PORT, spelled here so that building the command line
# does not import the sandbox (tests/test_cli_startup.py keeps them equal).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def _settings() -> Settings | None:
    """The bot's settings, for its default URL and channels; None when they do not load."""
    from pipelines.config import ConfigurationError, load_settings

    try:
        return load_settings()
    except ConfigurationError:
        return None


def sandbox(
    host: Annotated[str, typer.Option(help="Address the sandbox binds.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port of the page and the Web API.")] = DEFAULT_PORT,
    bot_url: Annotated[
        str | None,
        typer.Option(
            help="The bot's /slack/events [default: from GATEHOUSE_HTTP_HOST/_PORT, "
            "http://127.0.0.1:3000/slack/events]"
        ),
    ] = None,
    signing_secret: Annotated[
        str | None,
        typer.Option(
            envvar="SLACK_SIGNING_SECRET",
            help="Signs requests to the bot; generated (and printed) when unset.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="SLACK_BOT_TOKEN",
            help="The xoxb- token the Web API accepts; generated (and printed) when unset.",
        ),
    ] = None,
    socket_mode: Annotated[
        bool,
        typer.Option(
            "--socket-mode",
            help="Reach the bot over Socket Mode: it connects with the printed SLACK_APP_TOKEN "
            "(no --bot-url, no signing secret).",
        ),
    ] = False,
) -> None:
    """Run the local Slack sandbox: a web page and the Slack Web API on loopback that drive the
    bot at --bot-url with signed requests, as Slack would."""
    from bot.sandbox import Sandbox, reachable_host
    from bot.sandbox.workspace import channels_for

    settings = _settings()
    if bot_url is None:
        bot_host, bot_port = "127.0.0.1", 3000
        if settings is not None:
            bot_host, bot_port = reachable_host(settings.http_host), settings.http_port
        bot_url = f"http://{bot_host}:{bot_port}/slack/events"
    configured = (
        (settings.approvals_channel, settings.review_channel, settings.alerts_channel)
        if settings is not None
        else ()
    )
    running = Sandbox(
        bot_events_url=None if socket_mode else bot_url,
        signing_secret=signing_secret,
        host=host,
        port=port,
        token=token,
        channels=channels_for(*configured),
        command=settings.slash_command if settings is not None else "/gatehouse",
        socket_mode=socket_mode,
    )
    try:
        running.start()
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    try:
        typer.echo(f"Gatehouse sandbox: {running.url}")
        if running.app_token is not None:
            typer.echo("Socket Mode: the bot connects to the sandbox. Start the bot with:")
            reach = f"SLACK_APP_TOKEN={running.app_token}"
        else:
            typer.echo(f"Sending to the bot at {bot_url}. Start the bot with:")
            reach = f"SLACK_SIGNING_SECRET={running.signing_secret}"
        typer.echo(
            f"  SLACK_API_URL={running.api_url} SLACK_BOT_TOKEN={running.token} {reach} "
            "GATEHOUSE_APPROVALS_CHANNEL=C_APPROVALS gatehouse serve"
        )
        wait_for_signal()
    finally:
        running.stop()


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()

    def note(_signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
