"""Block Kit for alerts: pure functions from an alert's view to its message (the figures, the
top errors, sample runs, the rule that fired), its text fallback and the recovered reply."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.formatting import clock
from bot.slack.alert_pause_cards import pause_blocks
from bot.slack.blocks import context, header, section
from bot.slack.budget_alert_cards import budget_alert_blocks, budget_alert_text
from bot.slack.mrkdwn import code, escape, truncate
from pipelines.budgets import BUDGET
from pipelines.operations.alerting import (
    CONFIDENCE_DROP,
    HUMAN_EXIT_RATE,
    INPUT_DRIFT,
    OUTPUT_DRIFT,
    AlertView,
    percent,
)

ERROR_LIMIT = 800  # one error line, escaped, in a message (3 of them + labels < 3,000)
NAME_LIMIT = 100


TITLES = {
    "error_rate": (":rotating_light:", "Error-rate alert"),
    HUMAN_EXIT_RATE: (":raising_hand:", "Human-exit alert"),
    CONFIDENCE_DROP: (":chart_with_downwards_trend:", "Confidence drop"),
    INPUT_DRIFT: (":twisted_rightwards_arrows:", "Input drift"),
    OUTPUT_DRIFT: (":twisted_rightwards_arrows:", "Output drift"),
}


DRIFT_RULES = (INPUT_DRIFT, OUTPUT_DRIFT)


CALL_RULES = (HUMAN_EXIT_RATE, CONFIDENCE_DROP)


def _name(alert: AlertView) -> str:
    """The alert's subject (the pipeline, `pipeline · llm KEY`, `pipeline · input.FIELD`)."""
    return escape(truncate(alert.subject or alert.pipeline, NAME_LIMIT))


def _title(alert: AlertView) -> str:
    return TITLES.get(alert.rule, (":rotating_light:", "Alert"))[1]


def _confidence(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _calls(count: int, noun: str = "call") -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _days(days: Any) -> str:
    return f"{float(days):g} day" + ("" if float(days) == 1 else "s")


def _minutes(length: timedelta) -> str:
    minutes = length.total_seconds() / 60
    if minutes >= 120 and minutes % 60 == 0:
        return f"{minutes / 60:g} h"
    return f"{minutes:g} min"


def _hours(length: timedelta) -> str:
    return f"{length.total_seconds() / 3600:g} h"


def _runs(count: int) -> str:
    return f"{count:,} run" + ("" if count == 1 else "s")


def summary_text(alert: AlertView) -> str:
    """The rule's figure and what it is compared with, as escaped mrkdwn."""
    if alert.rule in CALL_RULES:
        return _call_summary(alert)
    if alert.rule in DRIFT_RULES:
        return _drift_summary(alert)
    line = (
        ("" if alert.is_open else "When it opened: ")
        + f"*{percent(alert.rate)}* of the {_runs(alert.window_runs)} that finished in the last "
        f"{_minutes(alert.window)} ended in error ({alert.window_errors:,})."
    )
    if alert.baseline is None:
        baseline = f"No runs finished in the {_hours(alert.baseline_window)} before: no baseline."
    else:
        baseline = (
            f"Baseline: *{percent(alert.baseline)}* over the {_hours(alert.baseline_window)} "
            f"before ({_runs(alert.baseline_runs)})."
        )
    return f"{line}\n{baseline}"


def _call_summary(alert: AlertView) -> str:
    figures = alert.detail("figures") or {}
    key = alert.detail("call_key")
    calls = f"the LLM call {code(key, 200)}" if key else "the LLM calls"
    opened = "" if alert.is_open else "When it opened: "
    if alert.rule == HUMAN_EXIT_RATE:
        line = (
            f"{opened}*{percent(alert.rate)}* of the {_calls(alert.window_runs)} to {calls} "
            f"in the last {_minutes(alert.window)} took the human exit "
            f"({int(figures.get('human_exits', 0)):,})."
        )
        base_calls = int(figures.get("baseline_calls", 0))
        baseline = (
            f"Baseline: *{percent(alert.baseline)}* over the {_hours(alert.baseline_window)} "
            f"before ({_calls(base_calls)})."
            if alert.baseline is not None
            else f"No calls in the {_hours(alert.baseline_window)} before: no baseline."
        )
        return f"{line}\n{baseline}"
    line = (
        f"{opened}Mean confidence *{_confidence(alert.rate)}* over "
        f"{_calls(alert.window_runs, 'answer')} of {calls} in the last {_minutes(alert.window)}."
    )
    baseline = (
        f"Baseline: *{_confidence(alert.baseline)}* over the {_hours(alert.baseline_window)} "
        f"before ({_calls(int(figures.get('baseline_confident', 0)), 'answer')})."
    )
    return f"{line}\n{baseline}"


def _drift_summary(alert: AlertView) -> str:
    opened = "" if alert.is_open else "When it opened: "
    return (
        f"{opened}PSI *{alert.rate:.2f}* for {code(alert.detail('label', '?'), 300)}: the last "
        f"{_days(alert.detail('recent_days', 7))} ({_calls(int(alert.detail('recent_count', 0)), 'value')}) "
        f"against the {_days(alert.detail('reference_days', 28))} before "
        f"({_calls(int(alert.detail('reference_count', 0)), 'value')})."
    )


def shifts_text(alert: AlertView) -> str:
    """The categories that moved most, with their share before and now."""
    lines = [
        f"• {code(shift.get('value'), 300)}: {percent(shift.get('reference_share'))} → "
        f"{percent(shift.get('recent_share'))}"
        for shift in alert.detail("top_shifts") or []
    ]
    return "*Most shifted*\n" + ("\n".join(lines) or "none")


def top_errors_text(alert: AlertView) -> str:
    if not alert.top_errors:
        return "*Top errors*\nnone recorded"
    lines = [f"• {code(e.message, ERROR_LIMIT)} — {_runs(e.count)}" for e in alert.top_errors]
    return "*Top errors*\n" + "\n".join(lines)


def sample_runs_text(alert: AlertView, command: str) -> str:
    lines = [f"• `{escape(command)} run {escape(run_id)}`" for run_id in alert.sample_run_ids]
    return "*Sample runs*\n" + ("\n".join(lines) or "none")


def rule_text(alert: AlertView) -> str:
    if alert.rule == HUMAN_EXIT_RATE:
        return (
            f"alert #{alert.id} · opened {clock(alert.opened_at)} · fires at ≥ "
            f"{percent(alert.threshold)} human exits and ≥ {alert.factor:g} times the baseline "
            f"with ≥ {_calls(alert.min_volume)}"
        )
    if alert.rule == CONFIDENCE_DROP:
        return (
            f"alert #{alert.id} · opened {clock(alert.opened_at)} · fires when the mean "
            f"confidence falls more than {alert.threshold:g} under the baseline with ≥ "
            f"{_calls(alert.min_volume, 'answer')}"
        )
    if alert.rule in DRIFT_RULES:
        return (
            f"alert #{alert.id} · opened {clock(alert.opened_at)} · fires at a PSI above "
            f"{alert.threshold:g} with ≥ {_calls(alert.min_volume, 'value')} in each period"
        )
    return (
        f"alert #{alert.id} · opened {clock(alert.opened_at)} · fires at ≥ "
        f"{percent(alert.threshold)} and ≥ {alert.factor:g} times the baseline with ≥ "
        f"{_runs(alert.min_volume)}"
    )


def recovery_text(alert: AlertView) -> str:
    """How the alert ended, as escaped mrkdwn (only for a recovered alert)."""
    ended = alert.recovered_at or alert.opened_at
    after = (
        f"Recovered {clock(ended, same_day_as=alert.opened_at)}, "
        f"after {_duration(ended - alert.opened_at)}."
    )
    if alert.rule in DRIFT_RULES:
        now_psi = "n/a" if alert.recovery_rate is None else f"{alert.recovery_rate:.2f}"
        return f"PSI back at or under {alert.threshold:g} (now {now_psi}). {after}"
    if alert.rule == CONFIDENCE_DROP:
        return (
            f"Mean confidence back within {alert.threshold:g} of the baseline for "
            f"{_minutes(alert.window)} (now {_confidence(alert.recovery_rate)}). {after}"
        )
    if alert.rule == HUMAN_EXIT_RATE:
        return (
            f"Human exits back under the bar for {_minutes(alert.window)} "
            f"(now {percent(alert.recovery_rate)}). {after}"
        )
    now_rate = (
        f"now {percent(alert.recovery_rate)} over {_runs(alert.recovery_runs or 0)}"
        if alert.recovery_rate is not None
        else "no runs finished in the last window"
    )
    return (
        f"Back under {percent(alert.threshold)} for {_minutes(alert.window)} ({now_rate}). "
        f"Recovered {clock(ended, same_day_as=alert.opened_at)}, "
        f"after {_duration(ended - alert.opened_at)}."
    )


def _duration(length: timedelta) -> str:
    minutes = int(length.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def alert_blocks(alert: AlertView, command: str = "/gatehouse") -> list[dict[str, Any]]:
    """The alert message; once recovered, the same message says so (for `chat.update`)."""
    if alert.rule == BUDGET:
        return budget_alert_blocks(alert, command)
    subject = truncate(alert.subject or alert.pipeline, NAME_LIMIT)
    if alert.is_open:
        icon, title = TITLES.get(alert.rule, (":rotating_light:", "Alert"))
        text = f"{icon} {title}: {subject}"
    else:
        text = f":white_check_mark: Recovered: {subject}"
    blocks: list[dict[str, Any]] = [header(text)]
    if not alert.is_open:
        blocks.append(section(recovery_text(alert)))
    blocks.append(section(summary_text(alert)))
    if alert.rule in DRIFT_RULES:
        blocks.append(section(shifts_text(alert)))
    elif alert.rule not in CALL_RULES:
        blocks += [section(top_errors_text(alert)), section(sample_runs_text(alert, command))]
    blocks += pause_blocks(alert)
    if not alert.is_open:
        quiet = "recovered"
    elif alert.rule in DRIFT_RULES:
        quiet = "quiet until the PSI is back under the bar at an hourly check"
    elif alert.rule in CALL_RULES:
        quiet = f"quiet until the call is back under the bar for {_minutes(alert.window)}"
    else:
        quiet = (
            f"quiet until the rate stays under {percent(alert.threshold)} for "
            f"{_minutes(alert.window)}"
        )
    blocks.append(context(f"{rule_text(alert)} · {quiet}"))
    return blocks


def alert_text(alert: AlertView) -> str:
    """The message's `text` (notifications, screen readers), escaped like the blocks."""
    if alert.rule == BUDGET:
        return budget_alert_text(alert)
    if alert.is_open and alert.rule == HUMAN_EXIT_RATE:
        return (
            f"Human-exit alert: {_name(alert)}: {percent(alert.rate)} of "
            f"{_calls(alert.window_runs)} took the human exit (baseline {percent(alert.baseline)})"
        )
    if alert.is_open and alert.rule == CONFIDENCE_DROP:
        return (
            f"Confidence drop: {_name(alert)}: mean {_confidence(alert.rate)} "
            f"(baseline {_confidence(alert.baseline)})"
        )
    if alert.is_open and alert.rule in DRIFT_RULES:
        return f"{_title(alert)}: {_name(alert)}: PSI {alert.rate:.2f}"
    if not alert.is_open and alert.rule != "error_rate":
        return f"Recovered: {_name(alert)} ({_title(alert).lower()})"
    if alert.is_open:
        return (
            f"Error-rate alert: {_name(alert)}: {percent(alert.rate)} of "
            f"{_runs(alert.window_runs)} in {_minutes(alert.window)} ended in error "
            f"(baseline {percent(alert.baseline)})"
        )
    return f"Recovered: {_name(alert)} (was {percent(alert.rate)} errors)"


def recovered_reply_blocks(alert: AlertView) -> list[dict[str, Any]]:
    return [section(f":white_check_mark: *Recovered*: {_name(alert)}. {recovery_text(alert)}")]


def recovered_text(alert: AlertView) -> str:
    if alert.rule != "error_rate":
        return f"Recovered: {_name(alert)} ({_title(alert).lower()})"
    return f"Recovered: {_name(alert)} is back under {percent(alert.threshold)} errors"
