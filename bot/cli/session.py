"""What every `gatehouse` command uses: the settings, the engine for one invocation, its
output (lines, JSON, one `error:` line), the `--json` flag and help for a bare command group,
and the parsing of the flags several commands share.

Errors a user can act on print one line, `error: <message>`, on stderr and exit 1 (2 for a
malformed command line); `--json` prints JSON only on stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from typer.core import TyperGroup

from bot.cli import render as cli_render
from bot.cli.terminal_notifier import TerminalNotifier
from bot.formatting import visible_controls
from bot.slack.directory import SlackDirectory
from bot.slack.web_client import build_web_client
from pipelines import Gatehouse, GatehouseError, Settings
from pipelines.config import ConfigurationError, load_settings
from pipelines.directory import ApproverGroups, approver_directory
from pipelines.durations import parse_duration
from pipelines.errors import NotAuthorized
from pipelines.logs import configure_logging
from storage.db import DatabaseConfigError
from storage.models import RunStatus

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only, on stdout.")]


def show_help_without_a_command(ctx: typer.Context) -> None:
    """A group called without a command prints its help (click's no_args_is_help would report
    the help text as a usage *error*)."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


class CliError(Exception):
    """A problem with what was typed (a flag's value, a file); raised before anything runs."""


def fail(message: str, code: int = 1) -> NoReturn:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    typer.echo(visible_controls(f"error: {'; '.join(lines) or 'unknown error'}"), err=True)
    sys.exit(code)


class GatehouseGroup(TyperGroup):
    """The root command: turns every expected failure into one `error:` line and an exit code."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(
                args=args,
                prog_name=prog_name or "gatehouse",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except typer.Abort:
            fail("aborted")
        except typer.TyperException as exc:  # click's usage errors: unknown flag, missing --as
            fail(exc.format_message(), getattr(exc, "exit_code", 2))
        except NotAuthorized as exc:
            fail(cli_refusal(exc))
        except (CliError, GatehouseError, DatabaseConfigError) as exc:
            fail(str(exc))
        except SQLAlchemyError as exc:
            fail(f"database error: {str(exc).splitlines()[0]}")
        code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def cli_refusal(refusal: NotAuthorized) -> str:
    """A refusal naming its people as `carol (U_CAROL)` where GATEHOUSE_PEOPLE names them,
    else by id."""
    try:
        names = load_settings().people
    except ConfigurationError:
        names = {}

    def person(user: str) -> str:
        name = names.get(user)
        return f"{name} ({user})" if name and name != user else user

    return refusal.render(person)


def workspace_directory(settings: Settings) -> ApproverGroups:
    """The approver directory the bot uses, from here: GATEHOUSE_GROUPS and, when this
    environment has a bot token, the workspace's Slack user groups (asked at SLACK_API_URL);
    without one, a source that says Slack was not asked and why."""
    if settings.slack_bot_token and settings.slack_bot_token.get_secret_value():
        return approver_directory(settings.groups, SlackDirectory(build_web_client(settings)))
    return approver_directory(
        settings.groups,
        None,
        no_workspace="SLACK_BOT_TOKEN is not set for the CLI, so only GATEHOUSE_GROUPS was read",
    )


def say(lines: Iterable[str]) -> None:
    # A terminal honours bidi overrides too: what others wrote is shown as it is.
    for line in lines:
        typer.echo(visible_controls(line))


def print_json(value: Any) -> None:
    typer.echo(visible_controls(cli_render.pretty_json(value)))  # `\u202e` is valid JSON


def settings_for_cli(*, worker: bool = False) -> Settings:
    """Settings from the environment, with logging configured from them.

    A one-shot command reports refusals and failures itself, so unless GATEHOUSE_LOG_LEVEL is
    set it logs only errors (the engine's warnings would repeat the `error:` line); a worker
    has nobody else to report for it and keeps the configured level (default warning).
    """
    settings = load_settings()
    explicit = "log_level" in settings.model_fields_set
    level = settings.log_level if worker or explicit else "error"
    configure_logging(settings.log_format, level)
    return settings


@contextmanager
def open_gatehouse(*, quiet: bool, settings: Settings | None = None) -> Iterator[Gatehouse]:
    """An engine for this one invocation, migrated; engine events print to stderr when quiet."""
    settings = settings or settings_for_cli()
    gatehouse = Gatehouse.from_settings(
        settings, notifier=TerminalNotifier(err=quiet), directory=workspace_directory(settings)
    )
    try:
        yield gatehouse
    finally:
        gatehouse.db.dispose()


def parse_json_option(flag: str, text: str) -> Any:
    """`--input '{...}'` or `--input @file.json`; a clear one-line error says where JSON broke."""
    source, origin = text, flag
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise CliError(f"{flag} {text}: there is no file {str(path)!r}")
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"{flag} {text}: cannot read {str(path)!r}: {exc}") from exc
        origin = f"{flag} {text}"
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        near = source[max(exc.pos - 15, 0) : exc.pos + 15]
        raise CliError(
            f"{origin} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(near {near!r}); nothing was run"
        ) from exc


def parse_since(text: str) -> datetime:
    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"--since {text!r} is neither a duration (90s, 15m, 24h, 7d) "
            "nor an ISO time (2025-01-31T09:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_status(text: str) -> str:
    try:
        return str(RunStatus(text.strip().lower()))
    except ValueError:
        known = ", ".join(s.value for s in RunStatus)
        raise CliError(f"--status {text!r} is not a run status; use one of: {known}") from None


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # the URL is about to be rejected with a clearer message anyway
        return url
