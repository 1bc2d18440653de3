"""`gatehouse cancel`, `retry`, `resolve`: the way out for a run that cannot go on by itself
(the engine's side is `pipelines.run_operations`). Each acts `--as USER`, checked like a Slack
user (the operators and the approvers of the run's tools) and audited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.session import (
    CliError,
    JsonFlag,
    open_gatehouse,
    parse_json_option,
    print_json,
    say,
)

if TYPE_CHECKING:
    from pipelines import Gatehouse, Run

RequiredUser = Annotated[str, typer.Option("--as", help="Who acts (a user id).")]
RunId = Annotated[str, typer.Argument(help="A run id (`gatehouse runs`).")]
NoRunFlag = Annotated[
    bool, typer.Option("--no-run", help="Leave the run queued for a worker instead of here.")
]


def _carry_on(gatehouse: Gatehouse, run_id: str, *, here: bool) -> Run:
    if here:
        gatehouse.resume(run_id)  # None: another worker has it; the run shows where it is
    return gatehouse.run(run_id)


def _report(run: Run, as_json: bool, **extra: object) -> None:
    if as_json:
        print_json({**extra, "run": run.to_json()})
        return
    from bot.cli import render as cli_render

    say(cli_render.run_summary(run))


def cancel_command(
    run_id: RunId,
    as_user: RequiredUser,
    reason: Annotated[str, typer.Option("--reason", help="Why (required; shown on its cards).")],
    as_json: JsonFlag = False,
) -> None:
    """Cancel a queued, waiting, running or needs_attention run; a running one stops before its
    next tool or model call, and its open approvals and human tasks are closed."""
    with open_gatehouse(quiet=as_json) as gatehouse:
        was = gatehouse.run(run_id).status
        run = gatehouse.cancel(run_id, user=as_user, reason=reason)
    if not as_json:
        typer.echo(f"✖ run {run_id} cancelled by {as_user} (it was {was}): {reason}")
        if was == "running":
            typer.echo("  it stops before its next tool or model call")
    _report(run, as_json)


def retry_command(
    run_id: RunId,
    as_user: RequiredUser,
    no_run: NoRunFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a new attempt of a failed, needs_attention or cancelled run: its succeeded calls
    are reused, the call that ended it runs again. Carried on here unless --no-run."""
    with open_gatehouse(quiet=as_json) as gatehouse:
        gatehouse.retry(run_id, user=as_user)
        run = _carry_on(gatehouse, run_id, here=not no_run)
    if not as_json:
        typer.echo(f"↻ run {run_id} retried by {as_user}")
    _report(run, as_json)


def resolve_command(
    call_id: Annotated[str, typer.Argument(help="An outcome_unknown call id (`gatehouse run`).")],
    as_user: RequiredUser,
    reason: Annotated[str, typer.Option("--reason", help="How you know (required).")],
    happened: Annotated[
        bool, typer.Option("--happened", help="The effect happened (give --result).")
    ] = False,
    did_not_happen: Annotated[
        bool, typer.Option("--did-not-happen", help="It did not: the run makes the call again.")
    ] = False,
    result: Annotated[
        str | None,
        typer.Option("--result", help="What the tool returned, as JSON or @file.json."),
    ] = None,
    no_run: NoRunFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Settle a call whose outcome is unknown, then carry its run on (here unless --no-run)."""
    if happened == did_not_happen:
        raise CliError("say which: --happened [--result JSON] or --did-not-happen")
    if did_not_happen and result is not None:
        raise CliError("--result goes with --happened (a call that did not happen has none)")
    value = parse_json_option("--result", result) if result is not None else None
    with open_gatehouse(quiet=as_json) as gatehouse:
        call = gatehouse.resolve(
            call_id, user=as_user, happened=happened, reason=reason, result=value
        )
        run_id = call.run_id or ""
        before = gatehouse.run(run_id).status
        run = _carry_on(gatehouse, run_id, here=not no_run and before == "queued")
    if not as_json:
        verdict = "happened" if happened else "did not happen"
        typer.echo(f"✔ call {call_id} ({call.name}) resolved by {as_user}: it {verdict}")
        if before != "queued":
            typer.echo(f"  run {run.id} is {before}; `gatehouse retry {run.id}` carries it on")
    _report(run, as_json, call=call.to_json())
