"""Section fields for values as people read them (`bot.formatting.shown_values`): money, shares
and dates as plain text (`180.00 EUR`), ids as code, links as links, anything else as code, as
the cards always showed it. Everything escaped; within the toolkit's limits."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bot.formatting import Shown, editable_labels, shown_values
from bot.slack.blocks import (
    FIELD_KEY_LIMIT,
    FIELD_LIMIT,
    FIELD_VALUE_LIMIT,
    FIELDS_SHOWN,
    mrkdwn_text,
    sections_of_fields,
)
from bot.slack.mrkdwn import code, escape, slack_len, truncate
from pipelines.display import display_marks, field_titles
from pipelines.tools import lookup_tool
from pipelines.views import ApprovalView

# A link we build only for a plain http(s) URL: nothing in it can end the `<…>` token or label it.
_SAFE_URL = re.compile(r"^https?://[^\s<>|]+$")
LINK_LIMIT = 500


def shown_text(item: Shown, limit: int = FIELD_VALUE_LIMIT) -> str:
    """One value as mrkdwn: escaped, within `limit`."""
    if item.kind in ("money", "percent", "date"):
        return truncate(escape(item.text), limit)
    if item.kind == "link" and _SAFE_URL.match(item.text) and len(item.text) <= LINK_LIMIT:
        return f"<{escape(item.text)}>"
    return code(item.value if item.kind == "value" else item.text, limit)


def shown_line(shown: list[Shown], limit: int) -> str:
    """`*amount* 180.00 EUR · *order_id* `ord_1002``: the values on one mrkdwn line."""
    parts = [f"*{escape(truncate(s.label, FIELD_KEY_LIMIT))}* {shown_text(s, 200)}" for s in shown]
    return truncate(" · ".join(parts), limit)


def shown_sections(
    shown: list[Shown], *, title: str | None = None, max_fields: int = FIELDS_SHOWN
) -> tuple[list[dict[str, Any]], bool]:
    """Labelled values as section fields, ten to a section, the first one under `title`
    (mrkdwn); True when something was cut short or left out."""
    shortened = len(shown) > max_fields
    fields = []
    for item in shown[:max_fields]:
        shortened = shortened or slack_len(escape(item.text)) > FIELD_VALUE_LIMIT - 2
        name = truncate(escape(item.label), FIELD_KEY_LIMIT)
        fields.append(mrkdwn_text(f"*{name}*\n{shown_text(item)}", FIELD_LIMIT))
    return sections_of_fields(fields, title), shortened


def call_args_line(tool_name: str, args: Any, limit: int) -> str:
    """A tool call's arguments on one mrkdwn line by the tool's display types (`amount 180.00
    EUR`), or as compact code when the tool is not registered here or marks nothing."""
    tool = lookup_tool(tool_name)
    if tool is None or not isinstance(args, Mapping) or not display_marks(tool.args_model):
        return code(args, limit)
    marks, titles = display_marks(tool.args_model), field_titles(tool.args_model)
    return shown_line(shown_values(args, marks, titles), limit)


def editable_note(approval: ApprovalView) -> str:
    """ "approvers may change amount, recipient (Edit & approve)" for a pending approval of an
    `@tool(editable=...)` call, "" otherwise (mrkdwn)."""
    tool = lookup_tool(approval.tool)
    if not approval.editable or tool is None:
        return ""
    marks, titles = display_marks(tool.args_model), field_titles(tool.args_model)
    labels = editable_labels(approval.args, approval.editable, marks, titles)
    return f"approvers may change {escape(truncate(', '.join(labels), 300))} (Edit & approve)"
