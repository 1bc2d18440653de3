"""`gatehouse pause PIPELINE` / `gatehouse resume PIPELINE`: the circuit breaker from the shell
(operators only, `GATEHOUSE_OPERATORS`; see `pipelines.pauses`), and the paused lines that
`gatehouse pipelines` and `gatehouse ready` show.

Mounted by `bot.cli` (`app.command("pause")`, `app.command("resume")`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.session import JsonFlag, open_gatehouse, print_json

if TYPE_CHECKING:
    from pipelines import Settings
    from pipelines.pauses import PauseView

PipelineName = Annotated[str, typer.Argument(help="A pipeline (`gatehouse pipelines`).")]
RequiredUser = Annotated[str, typer.Option("--as", help="Who acts (an operator's user id).")]


def paused_line(pause: PauseView, indent: str = "  ") -> str:
    """ "  ⏸ paused by U0OPS since 2026-12-04 01:50 UTC: deploy going out" """
    return f"{indent}⏸ {pause.describe()}"


def paused_or_none(settings: Settings) -> dict[str, PauseView]:
    """The paused pipelines, for `gatehouse pipelines`: the list is read from the code and is
    still worth printing when the database cannot be reached (said on stderr)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with open_gatehouse(quiet=True, settings=settings) as gatehouse:
            return gatehouse.paused_pipelines()
    except SQLAlchemyError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        typer.echo(f"note: cannot tell which pipelines are paused ({reason})", err=True)
        return {}


def pause_command(
    name: PipelineName,
    as_user: RequiredUser,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")],
    as_json: JsonFlag = False,
) -> None:
    """Pause a pipeline in every process: no new runs from any trigger, and its running runs
    wait before their next tool or model call until it is resumed."""
    with open_gatehouse(quiet=as_json) as gatehouse:
        changed = gatehouse.pause_pipeline(name, user=as_user, reason=reason)
        pause = gatehouse.pipeline_pause(name)
    if as_json:
        print_json({"changed": changed, "pause": pause.to_json() if pause else None})
        return
    if not changed and pause is not None:
        typer.echo(f"{name} was already {pause.describe()}; nothing changed")
        return
    typer.echo(
        f"⏸ paused {name} for {as_user}; `gatehouse resume {name} --as USER` starts it again"
    )


def resume_command(
    name: PipelineName,
    as_user: RequiredUser,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (kept in the audit log).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Resume a paused pipeline: triggers are accepted again and the runs it held carry on."""
    with open_gatehouse(quiet=as_json) as gatehouse:
        before = gatehouse.pipeline_pause(name)
        changed = gatehouse.resume_pipeline(name, user=as_user, reason=reason)
    if as_json:
        print_json({"changed": changed, "was": before.to_json() if before else None})
        return
    if not changed:
        typer.echo(f"{name} is not paused; nothing changed")
        return
    typer.echo(f"▶ resumed {name} for {as_user}; its waiting runs are queued again")
