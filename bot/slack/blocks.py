"""The Block Kit toolkit every card, modal and dashboard in `bot.slack` is built from.

Small pure functions, one per Block Kit object (text objects, section, context, header, divider,
button, actions, key/value fields), each keeping to Slack's limits whatever it is given: texts are
cut (`bot.slack.mrkdwn.truncate`), never rejected by Slack. Mrkdwn passed in must already be
escaped; the builders decide what to show, these only how a block is spelled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.formatting import visible_controls
from bot.slack.mrkdwn import code, escape, fmt_value, slack_len, truncate

# Slack's limits (https://docs.slack.dev/reference/block-kit/).
TEXT_LIMIT = 3000
FIELD_LIMIT = 2000
FIELDS_PER_SECTION = 10
HEADER_LIMIT = 150
BUTTON_LABEL_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
CONTEXT_ELEMENTS = 10
MODAL_TITLE_LIMIT = 24
MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100  # a modal or the App Home tab

# Key/value fields, tighter than Slack's limits so that a card reads well on a phone.
FIELDS_SHOWN = 20
FIELD_KEY_LIMIT = 100
FIELD_VALUE_LIMIT = 300

DIVIDER: dict[str, Any] = {"type": "divider"}


def mrkdwn_text(text: str, limit: int = TEXT_LIMIT) -> dict[str, Any]:
    """A mrkdwn text object; `text` must already be escaped. `verbatim` stops Slack from turning
    plain words into links or mentions on its own."""
    return {"type": "mrkdwn", "text": truncate(text, limit) or " ", "verbatim": True}


def plain_text(text: str, limit: int = TEXT_LIMIT) -> dict[str, Any]:
    """A plain_text object (Slack does not parse mentions or links in it, but it does honour
    bidi overrides: those are shown as escapes)."""
    text = visible_controls(text.strip()) or "-"
    return {"type": "plain_text", "text": truncate(text, limit), "emoji": True}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": mrkdwn_text(text)}


def context(*texts: str) -> dict[str, Any]:
    """A context block of mrkdwn lines; empty ones are left out, at most Slack's ten shown."""
    return {
        "type": "context",
        "elements": [mrkdwn_text(t) for t in texts if t][:CONTEXT_ELEMENTS],
    }


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": plain_text(text, HEADER_LIMIT)}


def button(
    label: str, action_id: str, value: str, *, style: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A button; `extra` adds Block Kit keys as they are (e.g. `confirm`)."""
    element: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": plain_text(label, BUTTON_LABEL_LIMIT),
        "value": value[:BUTTON_VALUE_LIMIT],
    }
    if style:
        element["style"] = style
    element.update(extra)
    return element


def actions(block_id: str, *elements: dict[str, Any]) -> dict[str, Any]:
    """An actions block; `block_id` is how a listener finds the card a click came from."""
    return {"type": "actions", "block_id": block_id, "elements": list(elements)}


def field_sections(
    values: Mapping[str, Any], *, title: str | None = None, max_fields: int = FIELDS_SHOWN
) -> tuple[list[dict[str, Any]], bool]:
    """Key/value pairs as section fields, ten to a section, the first one under `title` (mrkdwn);
    True when something was cut short or left out."""
    shortened = len(values) > max_fields
    fields: list[dict[str, Any]] = []
    for key, value in list(values.items())[:max_fields]:
        rendered = escape(fmt_value(value))
        shortened = shortened or slack_len(rendered) > FIELD_VALUE_LIMIT - 2
        name = truncate(escape(str(key)), FIELD_KEY_LIMIT)
        fields.append(mrkdwn_text(f"*{name}*\n{code(value, FIELD_VALUE_LIMIT)}", FIELD_LIMIT))
    return sections_of_fields(fields, title), shortened


def sections_of_fields(
    fields: list[dict[str, Any]], title: str | None = None
) -> list[dict[str, Any]]:
    """Section fields (mrkdwn text objects) packed ten to a section, the first one under
    `title`; `title` alone when there are none."""
    blocks: list[dict[str, Any]] = []
    for start in range(0, len(fields), FIELDS_PER_SECTION):
        block: dict[str, Any] = {"type": "section"}
        if title and start == 0:
            block["text"] = mrkdwn_text(title)
        block["fields"] = fields[start : start + FIELDS_PER_SECTION]
        blocks.append(block)
    if title and not blocks:
        blocks.append(section(title))
    return blocks
