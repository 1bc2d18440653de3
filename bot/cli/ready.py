"""`gatehouse ready [PIPELINE] [--json]`: the four readiness questions per pipeline, green or red
with the reason (`pipelines.operations.readiness`); exit 1 when any answer is red.

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
    (amber from 80%, red when reached). Exit 1 if any answer is red."""
    from pipelines.operations.readiness import readiness

    with open_gatehouse(quiet=True) as gatehouse:
        found = readiness(gatehouse.rt, [pipeline] if pipeline else None)
        paused = gatehouse.paused_pipelines()
    if as_json:
        pipelines = [
            r.to_json() | {"paused": paused[r.pipeline].to_json() if r.pipeline in paused else None}
            for r in found
        ]
        print_json({"ready": all(r.ready for r in found), "pipelines": pipelines})
    else:
        say(readiness_lines(found, paused))
    if not all(r.ready for r in found):
        raise typer.Exit(1)
