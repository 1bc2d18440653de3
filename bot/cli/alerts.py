"""`gatehouse alerts`: open and recent alerts of every rule; `gatehouse alerts check` evaluates now.

A Typer sub-app mounted by `bot.cli` (`app.add_typer(cli_alerts.app, name="alerts")`); its
errors reach the root command, which prints one `error: …` line and exits 1. `check` is what
the bot's job does every minute. With SLACK_BOT_TOKEN and
GATEHOUSE_ALERTS_CHANNEL set it posts what is due, exactly as the job would; without them it
still evaluates (alerts open and recover in the database) and prints what it would post, and
the bot sends those messages at its next check. `check --drift` also evaluates drift (PSI),
which the bot does hourly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.session import (
    CliError,
    JsonFlag,
    fail,
    open_gatehouse,
    print_json,
    say,
    settings_for_cli,
)

if TYPE_CHECKING:
    from pipelines import Settings
    from pipelines.operations.alerting import AlertChange, AlertView

app = typer.Typer(
    name="alerts",
    help="Alerts (error rate, human exits, confidence, drift): the open and recent ones; "
    "`check` evaluates now.",
    add_completion=False,
    rich_markup_mode=None,
)


SinceOption = Annotated[
    str, typer.Option("--since", help="Also list alerts opened this far back (7d, 24h, 30m).")
]


@app.callback(invoke_without_command=True)
def alerts_default(
    ctx: typer.Context, as_json: JsonFlag = False, since: SinceOption = "7d"
) -> None:
    """Open alerts, and the others opened in the last 7 days (newest first)."""
    if ctx.invoked_subcommand is None:
        show_alerts(as_json=as_json, since=since)


@app.command("list")
def list_command(as_json: JsonFlag = False, since: SinceOption = "7d") -> None:
    """Open alerts, and the others opened in the last 7 days (newest first)."""
    show_alerts(as_json=as_json, since=since)


DriftFlag = Annotated[
    bool, typer.Option("--drift", help="Also evaluate drift (PSI), which the bot does hourly.")
]


@app.command("check")
def check_command(as_json: JsonFlag = False, with_drift: DriftFlag = False) -> None:
    """Evaluate every alert rule now and post what is due (what the bot does each minute);
    without Slack settings, print what would be posted."""
    # bot.cli mounts this app, so its helpers are imported when a command runs.
    from pipelines.operations.alerts import evaluate
    from pipelines.operations.drift import evaluate_drift

    settings = settings_for_cli()
    missing = slack_missing(settings)
    with open_gatehouse(quiet=as_json, settings=settings) as gatehouse:
        if missing:
            changes = evaluate(gatehouse.rt, settings)
            if with_drift:
                changes += evaluate_drift(gatehouse.rt, settings)
            if as_json:
                print_json(
                    {
                        "changes": [c.to_json() for c in changes],
                        "posted": [],
                        "failed": [],
                        "not_posted": missing,
                    }
                )
                return
            say(would_post_lines(changes, missing))
            return
        from bot.slack.alerts import check_alerts, check_drift
        from bot.slack.bot import Bot, build_web_client

        bot = Bot(gatehouse=gatehouse, client=build_web_client(settings), settings=settings)
        try:
            result = check_alerts(bot)
            if with_drift:
                drifted = check_drift(bot, budget_seconds=None)
                result.changes.extend(drifted.changes)
                result.posted.extend(drifted.posted)
                result.failed.extend(drifted.failed)
        finally:
            bot.shutdown()
    if as_json:
        print_json(result.to_json())
    else:
        say(change_lines(result.changes))
        for alert_id, stage in result.posted:
            typer.echo(f"posted: alert #{alert_id} {_stage_words(stage)}")
    if result.failed:
        fail(
            "; ".join(
                f"alert #{alert_id} {_stage_words(stage)} not posted: {error}"
                for alert_id, stage, error in result.failed
            )
            + " (the alert is kept; the next check posts it)"
        )


def show_alerts(*, as_json: bool, since: str) -> None:
    from pipelines.durations import parse_duration
    from pipelines.operations.alerting import list_alerts

    try:
        window = parse_duration(since)
    except ValueError:
        raise CliError(f"--since {since!r} is not a duration; use e.g. 30m, 24h, 7d") from None
    with open_gatehouse(quiet=as_json, read_only=True) as gatehouse:
        found = list_alerts(gatehouse.rt, since=window)
    if as_json:
        print_json([alert.to_json() for alert in found])
        return
    if not found:
        typer.echo(f"no alerts open or opened in the last {since}")
        return
    for alert in found:
        say(alert_lines(alert))


def slack_missing(settings: Settings) -> str | None:
    """Why `check` cannot post (None when it can)."""
    missing = []
    if not settings.slack_bot_token or not settings.slack_bot_token.get_secret_value():
        missing.append("SLACK_BOT_TOKEN")
    if not settings.alerts_channel:
        missing.append("GATEHOUSE_ALERTS_CHANNEL")
    return f"{' and '.join(missing)} not set" if missing else None


# -- rendering (pure) ----------------------------------------------------------------------------


_TITLES = {
    "error_rate": "Error-rate alert",
    "human_exit_rate": "Human-exit alert",
    "confidence_drop": "Confidence drop",
    "input_drift": "Input drift",
    "output_drift": "Output drift",
}


def _stage_words(stage: str) -> str:
    return "message" if stage == "opened" else "recovered reply"


def headline(alert: AlertView) -> str:
    """The rule and its figure against the baseline, in one line."""
    from pipelines.operations.alerting import percent

    minutes = f"{alert.window.total_seconds() / 60:g} min"
    figures = alert.detail("figures") or {}
    if alert.rule == "human_exit_rate":
        return (
            f"human exits {percent(alert.rate)} ({figures.get('human_exits', 0)}/"
            f"{alert.window_runs} calls in {minutes}), baseline {percent(alert.baseline)}"
        )
    if alert.rule == "confidence_drop":
        baseline = "n/a" if alert.baseline is None else f"{alert.baseline:.2f}"
        return (
            f"mean confidence {alert.rate:.2f} ({alert.window_runs} answers in {minutes}), "
            f"baseline {baseline}"
        )
    if alert.rule in ("input_drift", "output_drift"):
        return (
            f"{alert.rule.replace('_', ' ')}: PSI {alert.rate:.2f} "
            f"({alert.detail('recent_count', 0)} recent values, "
            f"{alert.detail('reference_count', 0)} before)"
        )
    return (
        f"{percent(alert.rate)} errors ({alert.window_errors}/{alert.window_runs} runs in "
        f"{minutes}), baseline {percent(alert.baseline)}"
    )


def alert_lines(alert: AlertView) -> list[str]:
    """One alert for the terminal: a headline, then what the Slack message shows."""
    from bot.formatting import when
    from pipelines.operations.alerting import percent

    state = "OPEN" if alert.is_open else "recovered"
    lines = [
        f"#{alert.id} {state:<9} [{alert.rule}] {alert.subject or alert.pipeline}: "
        f"{headline(alert)}",
        f"    opened {when(alert.opened_at)}"
        + (f", recovered {when(alert.recovered_at)}" if alert.recovered_at else "")
        + (
            f", under the threshold since {when(alert.below_since)}"
            if alert.is_open and alert.below_since
            else ""
        )
        + ("" if alert.ts else ", not yet posted to Slack"),
    ]
    for error in alert.top_errors:
        lines.append(f"    {error.count:>5} x {error.message}")
    if alert.sample_run_ids:
        lines.append(f"    runs: {', '.join(alert.sample_run_ids)}")
    for shift in alert.detail("top_shifts") or []:
        lines.append(
            f"    {shift['value']}: {percent(shift['reference_share'])} -> "
            f"{percent(shift['recent_share'])}"
        )
    return lines


def change_lines(changes: list[AlertChange]) -> list[str]:
    if not changes:
        return ["no alert opened or recovered"]
    lines = []
    for change in changes:
        verb = "opened" if change.kind == "opened" else "recovered"
        alert = change.alert
        lines.append(f"{verb}: alert #{alert.id} [{alert.rule}] on {alert.subject}")
        lines += alert_lines(change.alert)[1:]
    return lines


def would_post_lines(changes: list[AlertChange], missing: str) -> list[str]:
    from pipelines.operations.alerting import percent

    if not changes:
        return [f"no alert opened or recovered; nothing would be posted ({missing})"]
    lines = [f"{missing}: not posting; this is what the bot will post at its next check:"]
    for change in changes:
        alert = change.alert
        if change.kind == "opened":
            title = _TITLES.get(alert.rule, "Alert")
            lines.append(f"[alerts channel] {title}: {alert.subject or alert.pipeline}")
            lines += alert_lines(alert)
        else:
            lines.append(f"[thread of alert #{alert.id}] Recovered: {alert.subject}")
            if alert.rule == "error_rate":
                rate = (
                    percent(alert.recovery_rate) if alert.recovery_rate is not None else "no runs"
                )
                lines.append(f"    back under {percent(alert.threshold)} (now {rate})")
            else:
                now = "n/a" if alert.recovery_rate is None else f"{alert.recovery_rate:.3g}"
                lines.append(f"    back under the bar (now {now})")
    return lines
