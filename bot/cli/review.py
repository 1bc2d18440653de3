"""`gatehouse review`: post this week's review thread now, export reviewed runs as a test set.

A Typer sub-app mounted by `bot.cli` (`app.add_typer(cli_review.app, name="review")`), whose
helpers are imported when a command runs (so mounting it makes no import cycle); errors reach
the root command, which prints one `error: …` line on stderr and exits 1. `export` writes JSON
Lines on stdout (or `--out`) and its count on stderr, so
`gatehouse review export --flagged --since 30d > regressions.jsonl` leaves a clean file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bot.cli.session import (
    JsonFlag,
    open_gatehouse,
    parse_since,
    print_json,
    settings_for_cli,
    show_help_without_a_command,
)

app = typer.Typer(
    name="review",
    help="The weekly review: post it now, export flagged runs as a regression set.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


app.callback(invoke_without_command=True)(show_help_without_a_command)


@app.command("post")
def post(
    pace: Annotated[
        float | None,
        typer.Option(
            "--pace",
            min=0,
            help="Seconds between messages (default: the bot's own pace; Slack allows about "
            "1/s per channel).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Post this week's review thread in GATEHOUSE_REVIEW_CHANNEL (the stored pick: running it
    again carries on an interrupted post and never posts a run twice)."""
    from bot.serve import build_bot, slack_config_problems
    from bot.slack.review import post_weekly_review
    from bot.slack.review_cards import DEFAULT_PACE_SECONDS
    from pipelines.config import ConfigurationError

    settings = settings_for_cli()
    problems = slack_config_problems(settings)
    if not settings.review_channel:
        problems.append(
            "GATEHOUSE_REVIEW_CHANNEL is not set: the channel (id or name) the review is posted in"
        )
    if problems:
        raise ConfigurationError("; ".join(problems))
    bot = build_bot(settings)
    try:
        week = post_weekly_review(bot, pace_seconds=DEFAULT_PACE_SECONDS if pace is None else pace)
    finally:
        bot.shutdown()
        bot.gatehouse.db.dispose()
    if as_json:
        print_json(week.to_json())
        return
    typer.echo(
        f"weekly review of week {week.week_start:%Y-%m-%d}: {week.total} runs in {week.channel} "
        f"(thread {week.parent_ts}); {week.reviewed}/{week.total} reviewed, {week.flagged} flagged"
    )


@app.command("export")
def export(
    flagged: Annotated[
        bool, typer.Option("--flagged", help="Only flagged runs (default: every reviewed run).")
    ] = False,
    since: Annotated[
        str, typer.Option("--since", help="Reviewed within this long (30d, 12h) or since a time.")
    ] = "30d",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Reviewed runs as JSON Lines, one test case a line: `input`, `expected` (when known),
    `note`, and the record (`recorded_output`, `pipeline`, `run_id`, `verdict`, `flag`)."""

    moment = parse_since(since)
    with open_gatehouse(quiet=True) as gatehouse:
        cases = gatehouse.export_reviewed(since=moment, flagged_only=flagged)
    lines = [json.dumps(case, ensure_ascii=False, default=str) for case in cases]
    if out is not None:
        out.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    else:
        for line in lines:
            typer.echo(line)
    what = "flagged" if flagged else "reviewed"
    where = f" to {out}" if out is not None else ""
    typer.echo(f"exported {len(lines)} {what} run(s){where}", err=True)
