"""Numbers, money, percentages, durations and times as people read them, for Slack and the CLI.

Plain text, no markup: `bot.slack` (cards, App Home, `/gatehouse`) and `bot.cli` (the terminal)
show the same figure the same way because both take it from here. A missing figure is `-`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

DASH = "-"

# Bidi controls (marks, embeddings, overrides, isolates) and invisible characters (zero-width
# space, word joiner, invisible operators, BOM, Mongolian vowel separator). Slack and terminals
# honour them, so "\u202egnp.exe" reads as "exe.png" and a zero-width space hides a difference
# between two names. Left alone: ZWJ and ZWNJ (U+200D, U+200C), which emoji and several scripts
# need, and which cannot reorder text.
_INVISIBLE = re.compile(
    "[\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


def visible_controls(text: str) -> str:
    """`text` with each bidi control and invisible character shown as its escape (`\\u202e`),
    so what a reader sees is what the text holds."""
    if text.isascii():
        return text
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# -- numbers, money, percentages -------------------------------------------------------------


def count(n: int) -> str:
    """`950`, `12.3k`, `4.5M`: a count in a few characters."""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def rate(value: float | None) -> str:
    """A fraction as a percentage with one decimal: `0.125` → `12.5%`."""
    return DASH if value is None else f"{value * 100:.1f}%"


def share(part: int, whole: int) -> str:
    """`part` of `whole` as a whole percentage: `3, 8` → `38%` (`-` of nothing)."""
    return f"{round(100 * part / whole)}%" if whole else DASH


def money(value: float | None, *, partial: bool = False) -> str:
    """Dollars at the precision that shows a small amount: `$0`, `$0.0042`, `$1.25`; `≥` in front
    when `partial` (some of it had no price)."""
    if value is None:
        return DASH
    text = "$0" if value == 0 else f"${value:.4f}" if value < 0.01 else f"${value:.2f}"
    return ("≥" if partial else "") + text


def usd(value: float | None) -> str:
    """Dollars to four places, always (`$0.0420`): eval costs, compared line by line."""
    return DASH if value is None else f"${value:.4f}"


# -- durations ---------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """`850 ms`, `12.5 s`, `3.0 min`, `5.2 h`, `3.0 d`: the unit that keeps the number short."""
    if seconds is None:
        return DASH
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def milliseconds(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f} ms"


def took(start: datetime | None, end: datetime | None) -> str:
    """How long from `start` to `end`, finer than `duration` (`12.3 ms`, `1.25 s`): a run's or a
    call's time in the CLI's detail views."""
    if start is None or end is None:
        return DASH
    seconds = (end - start).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def window_label(length: timedelta) -> str:
    """`24 h`, `7 d`, `90 min`: the unit people say for such a window."""
    seconds = int(length.total_seconds())
    if seconds >= 2 * 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


# -- times -------------------------------------------------------------------------------------


def ago(moment: datetime, now: datetime) -> str:
    """`5 min`, `3.0 h`: how long before `now` (never negative)."""
    return duration(max((now - moment).total_seconds(), 0.0))


def clock(value: datetime, *, same_day_as: datetime | None = None) -> str:
    """`14:02 UTC`, with the date when it is not the same day as `same_day_as`."""
    text = f"{value:%H:%M} UTC"
    if same_day_as is None or value.date() != same_day_as.date():
        text += f" on {value:%Y-%m-%d}"
    return text


def time_of_day(value: datetime | None) -> str:
    """`14:02:03.123`: a moment to the millisecond, for the steps of one run."""
    return DASH if value is None else value.strftime("%H:%M:%S.%f")[:-3]


def when(value: datetime | None) -> str:
    """`2026-11-02 09:30:00 UTC`: a moment in full, as the CLI lists it."""
    return DASH if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")
