"""Block Kit for a budget alert (pipelines.budgets): which limit was reached, the figures, and
what the pause it came with means. Pure functions from the alert's view to its message."""

from __future__ import annotations

from typing import Any

from bot.formatting import clock
from bot.slack.alert_pause_cards import choice_blocks
from bot.slack.blocks import context, header, section
from bot.slack.mrkdwn import escape, truncate
from pipelines.budgets import PAUSE_KEY
from pipelines.operations.alerting import AlertView

NAME_LIMIT = 100
ICON = ":money_with_wings:"


def _figures(alert: AlertView) -> str:
    figures = alert.detail("figures") or {}
    if alert.detail("window") == "rate":
        return (
            f"{figures.get('runs_last_hour', 0)} runs were created in the last hour; the limit "
            f"is {figures.get('max_runs_per_hour', '?')} an hour."
        )
    text = (
        f"Spent {figures.get('spent_usd', 0.0):.2f} USD in {figures.get('calls', 0)} model "
        f"call(s) since UTC midnight; the limit is {figures.get('limit_usd', 0.0):.2f} USD."
    )
    if figures.get("in_flight_usd"):
        text += f" {figures['in_flight_usd']:.2f} USD is reserved by calls in flight."
    if figures.get("unpriced_calls"):
        text += (
            f" {figures['unpriced_calls']} call(s) went to a model without a price: their spend "
            "is unknown."
        )
    return text


def _pause_text(alert: AlertView, command: str) -> str:
    """What the alert did to the pipeline's switch (as recorded on it), and what to do."""
    pipeline = escape(alert.pipeline)
    pause = alert.detail(PAUSE_KEY)
    raise_it = (
        "Raise the budget (`@pipeline` or `GATEHOUSE_BUDGETS`) if it should spend more, then "
        f"resume it: `{escape(command)} resume {pipeline}` or "
        f"`gatehouse resume {pipeline} --as USER`."
    )
    if not isinstance(pause, dict):
        return raise_it
    held = "it takes no new run, and its running runs wait before their next model or tool call"
    if pause.get("paused"):
        return f"Gatehouse paused the pipeline: {held}. {raise_it}"
    return f"The pipeline was paused already: {held}. {raise_it}"


def budget_alert_blocks(alert: AlertView, command: str = "/gatehouse") -> list[dict[str, Any]]:
    name = truncate(alert.pipeline, NAME_LIMIT)
    reason = escape(str(alert.detail("reason") or "budget reached"))
    return [
        header(f"{ICON} Budget alert: {name}"),
        section(f"*{reason}*\n{escape(_figures(alert))}"),
        section(_pause_text(alert, command)),
        *choice_blocks(alert),
        context(
            f"alert #{alert.id} · opened {clock(alert.opened_at)} · budgets count the model calls "
            "and runs of every replica"
        ),
    ]


def budget_alert_text(alert: AlertView) -> str:
    """The message's `text` (notifications, screen readers), escaped like the blocks."""
    reason = str(alert.detail("reason") or "budget reached")
    pause = alert.detail(PAUSE_KEY)
    paused = "; the pipeline is paused" if isinstance(pause, dict) else ""
    return escape(f"Budget alert: {alert.pipeline}: {reason}{paused}")
