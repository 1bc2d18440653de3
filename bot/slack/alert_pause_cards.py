"""Block Kit for an alert that paused its pipeline: what it did, the **Resume** and **Keep
paused** buttons, and who chose what (pure; `bot.slack.alert_cards.alert_blocks` adds these to
the alert's message, `bot.slack.alert_pause_actions` answers the clicks)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.formatting import clock
from bot.slack.blocks import actions, button, context, section
from bot.slack.mrkdwn import escape, mention, truncate
from pipelines.operations.alert_pauses import alert_choice, alert_pause
from pipelines.operations.alerting import AlertView

RESUME_ACTION = "alert.resume_pipeline"
KEEP_PAUSED_ACTION = "alert.keep_paused"
PAUSE_BLOCK = "alert_pause"


def _when(text: Any, opened: datetime) -> str:
    try:
        return clock(datetime.fromisoformat(str(text)), same_day_as=opened)
    except ValueError:
        return "?"


def choice_text(alert: AlertView) -> str | None:
    """ "▶ Resumed by @ana at 14:02 UTC" (None before anyone chose)."""
    choice = alert_choice(alert)
    if choice is None:
        return None
    who, at = mention(choice.get("by")), _when(choice.get("at"), alert.opened_at)
    name = escape(truncate(alert.pipeline, 100))
    if choice.get("choice") == "resumed":
        return f":arrow_forward: Resumed by {who} at {at}."
    if choice.get("choice") == "kept_paused":
        return f":double_vertical_bar: Kept paused by {who} at {at}."
    return f"{who} chose at {at}, but {name} was no longer paused; nothing changed."


def pause_blocks(alert: AlertView) -> list[dict[str, Any]]:
    """The pause section, its buttons while the choice is open, and the choice made."""
    pause = alert_pause(alert)
    if pause is None:
        return []
    name = escape(truncate(alert.pipeline, 100))
    if pause.get("paused"):
        what = (
            f":double_vertical_bar: *Paused {name}* (it pauses on this alert): no new runs from "
            "any trigger; its running runs wait before their next tool or model call."
        )
    else:
        what = f":double_vertical_bar: {name} was already paused when this alert opened."
    return [section(what), *choice_blocks(alert)]


def choice_blocks(alert: AlertView) -> list[dict[str, Any]]:
    """**Resume** and **Keep paused** while the choice is open, and the choice made (for any
    alert that paused its pipeline: the error rate's, a budget's)."""
    if alert_pause(alert) is None:
        return []
    blocks: list[dict[str, Any]] = []
    choice = alert_choice(alert)
    chosen = choice.get("choice") if choice else None
    if chosen in (None, "kept_paused"):
        buttons = [button("Resume", RESUME_ACTION, str(alert.id), style="primary")]
        if chosen is None:
            buttons.append(button("Keep paused", KEEP_PAUSED_ACTION, str(alert.id)))
        blocks.append(actions(PAUSE_BLOCK, *buttons))
    if (text := choice_text(alert)) is not None:
        blocks.append(context(text))
    return blocks
