"""`gatehouse replay`: one run (`RUN_ID`), or many (`--since 7d`), on today's code with no side
effects; `--check` exits 1 when today's code does not reproduce a run, `--junit FILE` writes one
testcase per run for CI (`pipelines.replay_check` judges).

Imported by the `replay` command in `bot.cli.main` when it runs.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import typer

from bot.cli import render as cli_render
from bot.cli.session import CliError, open_gatehouse, parse_since, print_json, say
from pipelines.replay_check import ReplayCheck, RunCheck, Verdict, check_replays, judge

# The label of each verdict in the text summary, in the order shown.
VERDICTS = (Verdict.SAME, Verdict.DIVERGED, Verdict.WOULD_CALL, Verdict.FAILED)


def replay(
    run_id: str | None,
    *,
    since: str | None,
    pipeline: str | None,
    limit: int | None,
    check: bool,
    junit: str | None,
    fresh: bool,
    as_json: bool,
) -> None:
    if run_id is not None and (since is not None or pipeline is not None or limit is not None):
        raise CliError("replay takes a RUN_ID or --since (with --pipeline, --limit), not both")
    if run_id is None:
        if since is None:
            raise CliError("replay needs a RUN_ID, or --since 7d to replay the recent runs")
        if fresh:
            raise CliError("--fresh asks the model again: it replays one RUN_ID, not --since")
        _replay_many(parse_since(since), pipeline, limit, check, junit, as_json)
        return
    _replay_one(run_id, check, junit, fresh, as_json)


def _replay_one(run_id: str, check: bool, junit: str | None, fresh: bool, as_json: bool) -> None:
    with open_gatehouse(quiet=as_json) as gatehouse:
        report = gatehouse.replay(run_id, fresh=fresh)
    verdict, where, position = judge(report)
    if junit is not None:
        result = RunCheck(
            report.run_id, report.pipeline, report.recorded_status, verdict, where, position, 0.0
        )
        write_junit(Path(junit), [result], 0.0)
    if as_json:
        extra = {"verdict": str(verdict), "where": where} if check else {}
        print_json(report.to_json() | extra)
    else:
        say(cli_render.replay_lines(report))
        if check:
            say([f"  verdict: {verdict}" + (f" — {where}" if where else "")])
    if check and verdict != Verdict.SAME:
        raise typer.Exit(1)


def _replay_many(
    since: datetime,
    pipeline: str | None,
    limit: int | None,
    check: bool,
    junit: str | None,
    as_json: bool,
) -> None:
    with open_gatehouse(quiet=as_json) as gatehouse:
        result = check_replays(gatehouse.rt, since=since, pipeline=pipeline, limit=limit)
    if junit is not None:
        write_junit(Path(junit), result.runs, result.seconds)
    if as_json:
        print_json(result.to_json())
    else:
        say(check_lines(result))
    if check and not result.ok:
        raise typer.Exit(1)


def check_lines(result: ReplayCheck) -> list[str]:
    """The summary, then one line per run today's code does not reproduce."""
    counts = ", ".join(f"{verdict} {result.count(verdict)}" for verdict in VERDICTS)
    lines = [
        f"replayed {len(result.runs)} runs with today's code in {result.seconds:.2f} s "
        "— nothing is written, no tool runs",
        f"  {counts}",
    ]
    differing = [r for r in result.runs if r.verdict != Verdict.SAME]
    width = max((len(str(r.verdict)) for r in differing), default=0)
    for r in differing:
        lines.append(
            f"  {r.verdict!s:<{width}}  {r.run_id} ({r.pipeline}, {r.recorded_status}): {r.where}"
        )
    lines += breaking_lines(result.breaking)
    return lines


def breaking_lines(breaking: list[RunCheck]) -> list[str]:
    """The waiting runs a deploy of today's code would break (also under `gatehouse ready`)."""
    if not breaking:
        return ["waiting runs today's code would break: none"]
    lines = [f"waiting runs today's code would break: {len(breaking)}"]
    lines += [f"  {r.run_id} ({r.pipeline}): {r.where}" for r in breaking]
    return lines


def write_junit(path: Path, runs: list[RunCheck], seconds: float) -> None:
    """JUnit XML, one testcase per run: a failure for diverged or would call, an error for
    failed to replay."""
    failures = sum(1 for r in runs if r.verdict in (Verdict.DIVERGED, Verdict.WOULD_CALL))
    errors = sum(1 for r in runs if r.verdict == Verdict.FAILED)
    counts = {"tests": str(len(runs)), "failures": str(failures), "errors": str(errors)}
    root = ET.Element(
        "testsuites", {"name": "gatehouse replay", **counts, "time": f"{seconds:.3f}"}
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        {"name": "gatehouse replay", **counts, "skipped": "0", "time": f"{seconds:.3f}"},
    )
    for r in runs:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": f"gatehouse.replay.{r.pipeline}",
                "name": f"{r.run_id} ({r.recorded_status})",
                "time": f"{r.seconds:.6f}",
            },
        )
        if r.verdict == Verdict.SAME:
            continue
        tag = "error" if r.verdict == Verdict.FAILED else "failure"
        element = ET.SubElement(case, tag, {"type": str(r.verdict), "message": r.where or ""})
        element.text = f"gatehouse replay {r.run_id}: {r.verdict}: {r.where}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise CliError(f"--junit {path}: cannot write it: {exc}") from exc
