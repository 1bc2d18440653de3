"""The outcome part of an approval card: how the approved call ended, its undo, and the Undo
button; pure functions from `CallOutcome` to blocks, nothing sent.

The Undo button: `action_id` `call.undo`, `value` = the call id, in an actions block whose
`block_id` is `undo.<call id>`; it carries a confirm dialog (Slack shows it before the click is
sent). Everything that came from a tool (its result, its error, its summary) is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bot.formatting import clock
from bot.slack.blocks import actions, button, context, plain_text, section
from bot.slack.mrkdwn import escape, fmt_value, mention, truncate
from pipelines.call_outcomes import CallOutcome

UNDO_ACTION = "call.undo"
UNDO_BLOCK_PREFIX = "undo."
RESULT_FIELDS_SHOWN = 6
ERROR_LIMIT = 600


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _at(value: datetime | None, day: datetime | None) -> str:
    if value is None:
        return ""
    return f" at {clock(_utc(value), same_day_as=_utc(day) if day else None)}"


def result_line(outcome: CallOutcome) -> str:
    """What the call returned, short (mrkdwn): the tool's own summary, else its fields
    compactly (`refund_id 45 · status issued`), else that it returned nothing."""
    if outcome.summary:
        return escape(outcome.summary)
    result = outcome.result
    if isinstance(result, Mapping) and result:
        parts = [
            f"{escape(truncate(str(key), 40))} `{escape(truncate(fmt_value(value), 80))}`"
            for key, value in list(result.items())[:RESULT_FIELDS_SHOWN]
        ]
        more = len(result) - RESULT_FIELDS_SHOWN
        return " · ".join(parts) + (f" · and {more} more" if more > 0 else "")
    if result is None:
        return "it returned nothing"
    return f"`{escape(truncate(fmt_value(result), 300))}`"


def outcome_line(outcome: CallOutcome, *, day: datetime | None = None) -> str:
    """How the call ended (mrkdwn), saying exactly what Gatehouse knows happened."""
    tool = f"*{escape(truncate(outcome.tool, 100))}*"
    at = _at(outcome.finished_at, day)
    if outcome.status == "succeeded":
        return f"✅ *Done*{at}: {result_line(outcome)}"
    error = escape(truncate(outcome.error or "no error recorded", ERROR_LIMIT))
    if outcome.status == "failed":
        return (
            f"❌ *Failed*{at}: {tool} raised an error and returned no result, so by its own "
            f"account nothing was done: {error}"
        )
    if outcome.status == "outcome_unknown":
        return (
            f"⚠️ *Outcome unknown*: {tool} was started, and Gatehouse does not know whether it "
            f"happened; it was not called again, and the run needs a person: {error}"
        )
    if outcome.status == "started":
        return f"⏳ {tool} is being called now; this card shows how it ends"
    if outcome.status == "rejected":
        return f"{tool} was not called: {error}"
    return f"{tool}: {escape(outcome.status)}"


def undo_line(outcome: CallOutcome, *, day: datetime | None = None) -> str | None:
    """The undo as it stands (mrkdwn), or None when nobody asked for one."""
    undo = outcome.undo
    if undo is None:
        return None
    who = mention(truncate(undo.by, 100) if undo.by else None)
    at = _at(undo.at, day)
    if undo.status == "succeeded":
        reversed_what = outcome.summary or f"{outcome.tool} call"
        return f"↩️ *Undone* by {who}{at}: reversed ({escape(truncate(reversed_what, 300))})"
    if undo.status == "failed":
        error = escape(truncate(undo.error or "no error recorded", ERROR_LIMIT))
        return (
            f"⚠️ Undo by {who}{at} failed: its reverse raised an error, so by its own account "
            f"nothing was reversed; it can be tried again: {error}"
        )
    return f"↩️ Undo by {who} under way (started{at})"


def undo_confirm(outcome: CallOutcome) -> dict[str, Any]:
    what = outcome.summary or f"the {outcome.tool} call {outcome.call_id}"
    return {
        "title": plain_text("Undo this call?", 100),
        "text": plain_text(
            f"Gatehouse will run {outcome.tool}'s reverse to undo: {what}. "
            "It is recorded in the audit log under your name.",
            300,
        ),
        "confirm": plain_text("Undo", 30),
        "deny": plain_text("Cancel", 30),
        "style": "danger",
    }


def undo_block_id(call_id: str) -> str:
    return f"{UNDO_BLOCK_PREFIX}{call_id}"


def outcome_blocks(outcome: CallOutcome, *, day: datetime | None = None) -> list[dict[str, Any]]:
    """The outcome section, the undo's line, and the Undo button while one is possible."""
    blocks = [section(outcome_line(outcome, day=day))]
    undone = undo_line(outcome, day=day)
    if undone:
        blocks.append(context(undone))
    if outcome.can_undo:
        blocks.append(
            actions(
                undo_block_id(outcome.call_id),
                button(
                    "Undo",
                    UNDO_ACTION,
                    outcome.call_id,
                    style="danger",
                    confirm=undo_confirm(outcome),
                ),
            )
        )
    return blocks


def outcome_fallback(outcome: CallOutcome) -> str:
    """A few words for the message's `text` (notifications, screen readers)."""
    if outcome.undone:
        return "undone"
    return {
        "succeeded": "done",
        "failed": "failed",
        "outcome_unknown": "outcome unknown",
        "started": "running",
    }.get(outcome.status, outcome.status)
