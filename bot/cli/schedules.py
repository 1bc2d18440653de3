"""`gatehouse schedules`: list every cron/every trigger with its next fire; pause and resume.

A Typer sub-app mounted by `bot.cli` (`app.add_typer(cli_schedules.app, name="schedules")`).
Its errors reach the root command, which prints one `error: …` line and exits 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.session import JsonFlag, open_gatehouse, print_json, say, settings_for_cli

if TYPE_CHECKING:
    from pipelines.operations.schedules import ScheduleInfo

app = typer.Typer(
    name="schedules",
    help="Cron and interval triggers: next fire times, last fires, pause and resume.",
    add_completion=False,
    rich_markup_mode=None,
)

RequiredUser = Annotated[str, typer.Option("--as", help="Who acts (a user id).")]
ScheduleName = Annotated[str, typer.Argument(help="A schedule (`gatehouse schedules`).")]


# -- rendering (pure) --------------------------------------------------------------------------


def local_time(value: datetime | None, timezone: str) -> str:
    if value is None:
        return "-"
    from pipelines.fire_times import zone

    return value.astimezone(zone(timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def next_fire_text(info: ScheduleInfo) -> str:
    if info.paused:
        return f"paused by {info.paused_by}" if info.paused_by else "paused"
    return local_time(info.next_fire, info.timezone)


def last_fire_text(info: ScheduleInfo) -> str:
    last = info.last_fire
    if last is None:
        return "never"
    text = f"{local_time(last.fire_time, info.timezone)} {last.outcome}"
    if last.reason:
        text += f" ({last.reason})"
    return text + (f" → {last.run_id}" if last.run_id else "")


def schedule_lines(infos: Sequence[ScheduleInfo]) -> list[str]:
    if not infos:
        return ["no schedules: no pipeline declares cron(...) or every(...) triggers"]
    from bot.cli.tables import table

    rows = [[i.name, i.pipeline, i.trigger, next_fire_text(i), last_fire_text(i)] for i in infos]
    lines = table(["schedule", "pipeline", "trigger", "next fire", "last fire"], rows)
    lines += [f"  ! {i.name}: {i.problem}" for i in infos if i.problem]
    return lines


# -- commands ----------------------------------------------------------------------------------
# bot.cli mounts this app, so its helpers are imported when a command runs, not at import time.


def _show(infos: list[ScheduleInfo], as_json: bool) -> None:

    if as_json:
        print_json([i.to_json() for i in infos])
    else:
        say(schedule_lines(infos))


@app.callback(invoke_without_command=True)
def schedules(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the schedules (the default), or pause / resume one."""
    if ctx.invoked_subcommand is None:
        list_schedules(as_json)


@app.command("list")
def list_schedules(as_json: JsonFlag = False) -> None:
    """Every cron/every trigger: next fire time, last fire and its run, paused or not."""
    from pipelines.operations.schedules import ScheduleOptions, schedules_overview

    settings = settings_for_cli()
    with open_gatehouse(quiet=as_json, settings=settings) as gatehouse:
        infos = schedules_overview(gatehouse.rt, ScheduleOptions.from_settings(settings))
    _show(infos, as_json)


@app.command("pause")
def pause_schedule(name: ScheduleName, as_user: RequiredUser, as_json: JsonFlag = False) -> None:
    """Stop a schedule's fires in every process until it is resumed (missed fires stay missed)."""
    from pipelines.operations.schedules import ScheduleOptions, pause

    settings = settings_for_cli()
    with open_gatehouse(quiet=as_json, settings=settings) as gatehouse:
        info = pause(gatehouse.rt, name, as_user, ScheduleOptions.from_settings(settings))
    if as_json:
        print_json(info.to_json())
        return
    typer.echo(
        f"⏸ paused {info.name} ({info.trigger}) for {as_user}; "
        f"`gatehouse schedules resume {info.name} --as USER` starts it again"
    )


@app.command("resume")
def resume_schedule(name: ScheduleName, as_user: RequiredUser, as_json: JsonFlag = False) -> None:
    """Start a paused schedule again from its next fire time."""
    from pipelines.operations.schedules import ScheduleOptions, resume

    settings = settings_for_cli()
    with open_gatehouse(quiet=as_json, settings=settings) as gatehouse:
        info = resume(gatehouse.rt, name, as_user, ScheduleOptions.from_settings(settings))
    if as_json:
        print_json(info.to_json())
        return
    typer.echo(
        f"▶ resumed {info.name} ({info.trigger}); next fire "
        f"{local_time(info.next_fire, info.timezone)}"
    )
