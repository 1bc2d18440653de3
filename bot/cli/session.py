"""What every `gatehouse` command uses: the settings, the engine for one invocation, its
output (lines, JSON, one `error:` line), the `--json` flag and help for a bare command group,
and the parsing of the flags several commands share.

Importing this module costs only typer: the engine, SQLAlchemy, Slack and the renderers are
imported inside the functions that use them, so `gatehouse --help` stays fast (bot/cli/main.py).

Errors a user can act on print one line, `error: <message>`, on stderr and exit 1 (2 for a
malformed command line); `--json` prints JSON only on stdout.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperArgument, TyperGroup

if TYPE_CHECKING:
    from pipelines import Gatehouse, Settings
    from pipelines.directory import ApproverGroups
    from pipelines.errors import NotAuthorized
    from storage.db import Database

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only, on stdout.")]


def show_help_without_a_command(ctx: typer.Context) -> None:
    """A group called without a command prints its help (click's no_args_is_help would report
    the help text as a usage *error*)."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


class CliError(Exception):
    """A problem with what was typed (a flag's value, a file); raised before anything runs."""


def fail(message: str, code: int = 1) -> NoReturn:
    from bot.formatting import visible_controls

    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    typer.echo(visible_controls(f"error: {'; '.join(lines) or 'unknown error'}"), err=True)
    sys.exit(code)


class NamedArgument(TyperArgument):
    """A positional argument shown as `NAME` in usage lines and errors (click's and every
    man page's convention), where typer writes `{name}`."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar or (self.name or "").upper()

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def name_arguments(command: Any) -> None:
    """Show every positional argument of `command` (a command built by typer) and of its
    subcommands as `NAME`."""
    for param in command.params:
        if type(param) is TyperArgument:
            param.__class__ = NamedArgument
    for sub in getattr(command, "commands", {}).values():
        name_arguments(sub)


class GatehouseGroup(TyperGroup):
    """The root command: turns every expected failure into one `error:` line and an exit code,
    and shows positional arguments as `NAME` (`NamedArgument`)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        name_arguments(self)
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
        except CliError as exc:
            fail(str(exc))
        except Exception as exc:
            message = expected_failure(exc)
            if message is None:
                raise
            fail(message)
        code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def expected_failure(exc: Exception) -> str | None:
    """The `error:` line for a failure the engine or the database expects, None for a bug.

    The classes are looked up only in modules already imported: an exception cannot be an
    instance of a class whose module was never loaded, and --help must not load the engine.
    """
    errors = sys.modules.get("pipelines.errors")
    if errors is not None and isinstance(exc, errors.NotAuthorized):
        return cli_refusal(exc)
    if errors is not None and isinstance(exc, errors.GatehouseError):
        return str(exc)
    db = sys.modules.get("storage.db")
    if db is not None and isinstance(exc, db.DatabaseConfigError):
        return str(exc)
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError):
        from storage.db_errors import database_error_line

        return database_error_line(exc, _last_database_url or _configured_database_url())
    return None


def _configured_database_url() -> str | None:
    from pipelines.config import ConfigurationError, load_settings

    try:
        return load_settings().database_url
    except ConfigurationError:
        return None


def cli_refusal(refusal: NotAuthorized) -> str:
    """A refusal naming its people as `carol (U_CAROL)` where GATEHOUSE_PEOPLE names them,
    else by id."""
    from pipelines.config import ConfigurationError, load_settings

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
    from pipelines.directory import approver_directory

    if settings.slack_bot_token and settings.slack_bot_token.get_secret_value():
        from bot.slack.directory import SlackDirectory
        from bot.slack.web_client import build_web_client

        return approver_directory(settings.groups, SlackDirectory(build_web_client(settings)))
    return approver_directory(
        settings.groups,
        None,
        no_workspace="SLACK_BOT_TOKEN is not set for the CLI, so only GATEHOUSE_GROUPS was read",
    )


def say(lines: Iterable[str]) -> None:
    from bot.formatting import visible_controls

    # A terminal honours bidi overrides too: what others wrote is shown as it is.
    for line in lines:
        typer.echo(visible_controls(line))


def print_json(value: Any) -> None:
    from bot.cli import render as cli_render
    from bot.formatting import visible_controls

    typer.echo(visible_controls(cli_render.pretty_json(value)))  # `\u202e` is valid JSON


def settings_for_cli(*, worker: bool = False) -> Settings:
    """Settings from the environment, with logging configured from them.

    A one-shot command reports refusals and failures itself, so unless GATEHOUSE_LOG_LEVEL is
    set it logs only errors (the engine's warnings would repeat the `error:` line); a worker
    has nobody else to report for it and keeps the configured level (default warning).
    """
    from pipelines.config import load_settings

    settings = load_settings()
    configure_cli_logging(settings, worker=worker)
    return settings


def configure_cli_logging(settings: Settings, *, worker: bool = False) -> None:
    """Logging as `settings_for_cli` configures it (see there)."""
    from pipelines.logs import configure_logging

    explicit = "log_level" in settings.model_fields_set
    level = settings.log_level if worker or explicit else "error"
    configure_logging(settings.log_format, level)


_last_database_url: str | None = None  # named by a database error (storage.db_errors)


@contextmanager
def open_gatehouse(
    *, quiet: bool, settings: Settings | None = None, read_only: bool = False
) -> Iterator[Gatehouse]:
    """An engine for this one invocation; engine events print to stderr when quiet.

    A command that may write migrates the database first (as `gatehouse db upgrade` does). A
    `read_only` one does not import or run Alembic: it checks the schema revision
    (storage.schema_version) and fails naming `gatehouse db upgrade` when the database is
    behind; a database with no schema yet is created, as before.
    """
    global _last_database_url
    from bot.cli.terminal_notifier import TerminalNotifier
    from pipelines import Gatehouse

    settings = settings or settings_for_cli()
    _last_database_url = settings.database_url
    gatehouse = Gatehouse.from_settings(
        settings,
        notifier=TerminalNotifier(err=quiet),
        directory=workspace_directory(settings),
        upgrade=not read_only,
    )
    try:
        if read_only:
            require_readable_schema(gatehouse.db, settings)
        yield gatehouse
    finally:
        gatehouse.db.dispose()


@contextmanager
def open_database() -> Iterator[Database]:
    """The database alone, for a command that reads rows the engine has no part in (the list
    of runs): no engine, no registered pipelines, no ORM, no logging set up unless the schema
    must be created. The schema is checked as `open_gatehouse(read_only=True)` checks it."""
    global _last_database_url
    from pipelines.config import load_settings
    from storage.db import Database

    settings = load_settings()
    _last_database_url = settings.database_url
    database = Database(settings.database_url)
    try:
        require_readable_schema(database, settings, logging_ready=False)
        yield database
    finally:
        database.dispose()


def require_readable_schema(
    database: Database, settings: Settings, *, logging_ready: bool = True
) -> None:
    """Fail naming `gatehouse db upgrade` unless the schema is this code's; a database with no
    schema yet is created (with logging configured first, as a migrating command has it)."""
    from storage.schema_version import SchemaState, require_current_schema

    check = require_current_schema(database, safe_url(settings.database_url))
    if check.state is SchemaState.EMPTY:
        if not logging_ready:  # as Gatehouse.from_settings has it before it migrates
            from pipelines.logs import remember_secrets, settings_secrets

            remember_secrets(settings_secrets(settings), keys=settings.log_redact_keys)
            configure_cli_logging(settings)
        database.upgrade()


@contextmanager
def without_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused for a short read (`gatehouse runs`, `run`, `pending`):
    most of such a command's time is importing, which allocates objects the collector would
    walk again and again (several percent of the start) and which all live to the end anyway.
    Restored afterwards (the CLI's tests run commands in one process); a command that reads
    without bound (an export, a verification of the whole log) does not use it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
    from pipelines.durations import parse_duration

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
    from storage.statuses import RunStatus

    try:
        return str(RunStatus(text.strip().lower()))
    except ValueError:
        known = ", ".join(s.value for s in RunStatus)
        raise CliError(f"--status {text!r} is not a run status; use one of: {known}") from None


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # the URL is about to be rejected with a clearer message anyway
        return url
