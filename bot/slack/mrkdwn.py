"""Safe mrkdwn: escaping what others wrote, mentions we mean, and text cut to Slack's limits.

Everything a model, a pipeline input or a person wrote goes through `escape` before it reaches a
mrkdwn text object, so `<!channel>`, `<@U…>` or `<https://evil|click>` show as text and can't
ping anyone or forge a link. The toolkit (`bot.slack.blocks`) also sets `verbatim: true` on
mrkdwn, so Slack does not auto-link or auto-mention plain text either; the only `<…>` left are
the ones built here. Bidi overrides and zero-width characters are shown as escapes (`\\u202e`),
here and in plain_text (`bot.slack.blocks`), so a card reads as its text is.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from bot.formatting import visible_controls

ELLIPSIS = "…"
SLASH_COMMAND = "/gatehouse"
# Stands in for a backtick inside code, so a value can't end the code span and style the card.
_GRAVE = "\u02cb"

# Slack user ids (U…, or W… on Enterprise Grid). Anything else (a CLI name such as "alice",
# a "@group" handle) is shown as text: a mention is only built for what is certainly a user id.
_USER_ID = re.compile(r"^[UW][A-Z0-9_]{2,}$")  # `_`: the sandbox's readable ids (U_ALICE)


def escape(text: str) -> str:
    """Slack's three control characters as entities, and bidi and invisible characters as
    their escapes (`\\u202e`, `bot.formatting.visible_controls`); nothing else changes."""
    text = visible_controls(text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_len(text: str) -> int:
    """Length as Slack may count it (UTF-16 code units); never less than `len(text)`."""
    return len(text.encode("utf-16-le")) // 2


def _cut(text: str, units: int) -> str:
    """The longest prefix of `text` within `units` UTF-16 code units, not splitting a surrogate
    pair or an `&amp;`-style entity."""
    if units <= 0:
        return ""
    cut = text.encode("utf-16-le")[: units * 2].decode("utf-16-le", errors="ignore")
    amp = cut.rfind("&", max(0, len(cut) - 5))
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    # Never leave half of a token we built (`<@U…>`, `<!date…>`): Slack would show it raw.
    opening = cut.rfind("<")
    if opening > cut.rfind(">"):
        cut = cut[:opening]
    return cut


def full_value_hint(run_id: str, command: str = SLASH_COMMAND) -> str:
    """Where the untruncated value lives, as mrkdwn."""
    return f"full value: `{escape(command)} run {escape(run_id)}`"


def truncate(text: str, limit: int, more_hint: str | None = None) -> str:
    """`text` if it fits in `limit`, else a prefix, an ellipsis and (on its own line) `more_hint`,
    all within `limit`. Safe on escaped text: entities are never cut in half. When even the hint
    does not fit, it is dropped."""
    if slack_len(text) <= limit:
        return text
    suffix = ELLIPSIS
    if more_hint and slack_len(more_hint) + 2 <= limit // 2:
        suffix = f"{ELLIPSIS}\n{more_hint}"
    return _cut(text, limit - slack_len(suffix)) + suffix


def fmt_value(value: Any) -> str:
    """A JSON value on one line: strings bare, numbers and booleans as JSON, containers as compact
    JSON. Not escaped: escape it before it goes into mrkdwn."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | int | float):
        text = json.dumps(value)
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


def code(value: Any, limit: int) -> str:
    """`value` as inline code, escaped, within `limit` (backticks in the value can't close it)."""
    text = escape(fmt_value(value).replace("`", _GRAVE))
    return f"`{truncate(text, max(1, limit - 2))}`"


def code_block(value: Any, limit: int, more_hint: str | None = None) -> str:
    """`value` as a preformatted block (strings keep their lines, other values are indented JSON),
    escaped, within `limit` including the fences and `more_hint` when it had to be cut."""
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, indent=2, default=str)
    body = escape(text.replace("```", _GRAVE * 3)) or " "
    inner = limit - 6
    if slack_len(body) <= inner:
        return f"```{body}```"
    suffix = f"\n{more_hint}" if more_hint and slack_len(more_hint) + 1 <= inner // 2 else ""
    return f"```{truncate(body, inner - slack_len(suffix))}```{suffix}"


def mention(user: str | None) -> str:
    """`<@U…>` for a Slack user id; anything else (a name, a `@group` handle) as escaped text."""
    if not user:
        return "nobody"
    if _USER_ID.match(user):
        return f"<@{user}>"
    return escape(user)


def mentions(users: list[str], limit: int, *, empty: str = "anyone in the workspace") -> str:
    """Comma-separated mentions within `limit`; what does not fit is counted, never cut. `"*"`
    is anyone; an empty list is `empty` (anyone for an approval recorded before approvers were
    required, under the open policy; nobody for a task's resolved `answerers`)."""
    if "*" in users:
        return "anyone in the workspace"
    if not users:
        return empty
    shown: list[str] = []
    length = 0
    reserve = len(", and 99999 more")
    for user in users:
        part = mention(user)
        extra = len(part) + (2 if shown else 0)
        if length + extra + reserve > limit:
            break
        shown.append(part)
        length += extra
    hidden = len(users) - len(shown)
    if not shown:
        return f"{hidden} people or groups"
    return ", ".join(shown) + (f", and {hidden} more" if hidden else "")


def local_time(value: datetime) -> str:
    """A `<!date>` token: Slack shows it in each reader's own time zone; the fallback is UTC."""
    return (
        f"<!date^{int(value.timestamp())}^{{date_short_pretty}} at {{time}}"
        f"|{value:%Y-%m-%d %H:%M} UTC>"
    )
