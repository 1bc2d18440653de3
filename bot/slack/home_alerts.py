"""The alerts App Home lists: every open alert and the others opened in the last 7 days (what
`gatehouse alerts` lists), as the dashboard's notes, newest first, open ones before recovered."""

from __future__ import annotations

from datetime import timedelta

from bot.slack.alert_cards import TITLES
from bot.slack.home import AlertNote
from pipelines.operations.alerting import (
    CONFIDENCE_DROP,
    HUMAN_EXIT_RATE,
    INPUT_DRIFT,
    OUTPUT_DRIFT,
    AlertView,
    list_alerts,
    percent,
)
from pipelines.runtime import Runtime

RECENT = timedelta(days=7)


def figure(alert: AlertView) -> str:
    """The rule's figure when the alert opened, in words (plain text: the dashboard escapes)."""
    if alert.rule == HUMAN_EXIT_RATE:
        return f"human exits {percent(alert.rate)} of {alert.window_runs:,} LLM calls"
    if alert.rule == CONFIDENCE_DROP:
        return f"mean confidence {alert.rate:.2f}"
    if alert.rule in (INPUT_DRIFT, OUTPUT_DRIFT):
        return f"PSI {alert.rate:.2f}"
    return f"{percent(alert.rate)} errors ({alert.window_errors:,} of {alert.window_runs:,} runs)"


def alert_note(alert: AlertView) -> AlertNote:
    title = TITLES.get(alert.rule, ("", "Alert"))[1]
    subject = alert.subject or alert.pipeline
    if alert.is_open:
        text = f"{title}, open: {subject}: {figure(alert)}"
        at = alert.opened_at
    else:
        text = f"{title}, recovered: {subject} (when it opened: {figure(alert)})"
        at = alert.recovered_at or alert.opened_at
    return AlertNote(pipeline=alert.pipeline, at=at, text=text, recovered=not alert.is_open)


def home_alerts(rt: Runtime) -> list[AlertNote]:
    """Open alerts first, then recovered ones; newest first within each."""
    found = list_alerts(rt, since=RECENT)
    ordered = sorted(found, key=lambda a: a.opened_at, reverse=True)
    ordered.sort(key=lambda a: not a.is_open)
    return [alert_note(a) for a in ordered]
