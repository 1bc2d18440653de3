"""What every `gatehouse` command group shares: the `--json` flag and help for a bare group.

Its own module because `bot/cli.py` imports the command groups to mount them, so they cannot
import these from it at load time.
"""

from __future__ import annotations

from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only, on stdout.")]


def show_help_without_a_command(ctx: typer.Context) -> None:
    """A group called without a command prints its help (click's no_args_is_help would report
    the help text as a usage *error*)."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
