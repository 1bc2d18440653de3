"""`gatehouse ready [PIPELINE] [--json]`: the four readiness questions per pipeline, green or red
with the reason (`pipelines.operations.readiness`), and the waiting runs today's code would
break (`pipelines.replay_check`); exit 1 when any answer is red or any waiting run would break.

Mounted by `bot.cli` (`app.command("ready")`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.pauses import paused_line
from bot.cli.session import JsonFlag, open_gatehouse, print_json, say

if TYPE_CHECKING:
    from pipelines.operations.readiness import Readiness
    from pipelines.pauses import PauseView

MARKS = {"green": "green", "amber": "amber", "red": "red  "}


def readiness_lines(
    found: list[Readiness], paused: Mapping[str, PauseView] | None = None
) -> list[str]:
    lines: list[str] = []
    for r in found:
        lines.append(f"{r.pipeline}: {'ready' if r.ready else 'not ready'}")
        if paused and r.pipeline in paused:
            lines.append(paused_line(paused[r.pipeline]))
        for answer in r.answers:
            lines.append(f"  {MARKS[answer.status]}  {answer.title.lower():<9} {answer.reason}")
            if answer.question == "gates" and not answer.ok:
                lines += [f"           - {gap}" for gap in answer.details]
    if not found:
        lines.append("no pipelines are registered")
    return lines


def ready_command(
    pipeline: Annotated[
        str | None, typer.Argument(help="Only this pipeline (default: every one).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Is each pipeline ready for production? (1) every ctx.llm has a human exit or a handler
    and every write/send/spend tool a rate limit and an approval or a reverse; (2) the gated
    tools and their approvers; (3) the share of the last 7 days' runs with a complete record;
    (4) the last eval's pass rate and age; (5) for a pipeline with a budget, what is left of it
    (amber from 80%, red when reached). Then the waiting runs today's code would break (their
    replay diverges before their wait point). Exit 1 if any answer is red or any run would
    break."""
    from bot.cli.replay_check import breaking_lines
    from pipelines.operations.readiness import readiness
    from pipelines.replay_check import breaking_waiting_runs

    with open_gatehouse(quiet=True) as gatehouse:
        found = readiness(gatehouse.rt, [pipeline] if pipeline else None)
        paused = gatehouse.paused_pipelines()
        breaking = breaking_waiting_runs(gatehouse.rt, [pipeline] if pipeline else None)
    ready = all(r.ready for r in found) and not breaking
    if as_json:
        pipelines = [
            r.to_json() | {"paused": paused[r.pipeline].to_json() if r.pipeline in paused else None}
            for r in found
        ]
        print_json(
            {
                "ready": ready,
                "pipelines": pipelines,
                "breaking_waiting_runs": [r.to_json() for r in breaking],
            }
        )
    else:
        say(readiness_lines(found, paused) + breaking_lines(breaking))
    if not ready:
        raise typer.Exit(1)
