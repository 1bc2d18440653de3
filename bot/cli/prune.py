"""`gatehouse prune`: retention on the command line (pipelines/retention.py does the work).

Imported when the command runs, so the other commands do not load the retention code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.session import CliError, JsonFlag, open_gatehouse, print_json, say

if TYPE_CHECKING:
    from pipelines.retention import PruneReport


def prune_command(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Delete runs that finished longer ago than this (90d; 35d or more).",
        ),
    ],
    as_user: Annotated[str, typer.Option("--as", help="Who prunes (an operator's user id).")],
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only this pipeline.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete finished runs older than --older-than with their calls, approvals, tasks and review
    items, in batches; keep the stats; cut the audit log's old prefix behind a checkpoint."""
    from pipelines.durations import parse_duration
    from pipelines.retention import prune_runs

    try:
        length = parse_duration(older_than)
    except ValueError:
        raise CliError(f"--older-than {older_than!r} is not a duration (35d, 90d, 2160h)") from None
    with open_gatehouse(quiet=as_json) as gatehouse:
        report = prune_runs(
            gatehouse.rt, older_than=length, pipeline=pipeline, dry_run=dry_run, user=as_user
        )
    if as_json:
        print_json(report.to_json())
    else:
        say(report_lines(report))


def report_lines(report: PruneReport) -> list[str]:
    scope = f" of {report.pipeline}" if report.pipeline else ""
    verb = "would delete" if report.dry_run else "deleted"
    lines = [
        f"{verb} {report.runs} finished runs{scope} that finished before "
        f"{report.cutoff:%Y-%m-%d %H:%M} UTC"
        + ("" if report.dry_run else f" ({report.batches} batches)")
    ]
    lines += [f"  {name:<30} {n}" for name, n in sorted(report.by_pipeline.items())]
    if report.requested_cutoff is not None:
        lines.append(
            f"the stats rollups reach only {report.cutoff:%Y-%m-%d %H:%M} UTC: runs finished "
            f"between then and {report.requested_cutoff:%Y-%m-%d %H:%M} UTC are kept until they "
            "are rolled (`gatehouse serve` rolls them every minute)"
        )
    if not report.dry_run:
        lines.append(
            f"audit log: {report.audit_entries} entries cut behind a checkpoint"
            if report.audit_entries
            else "audit log: nothing cut (its oldest entry is recent or belongs to a kept run)"
        )
    if report.kept_unfinished:
        lines.append(
            f"kept {report.kept_unfinished} older runs that are not over "
            "(queued, running, waiting or needing attention)"
        )
    return lines
