"""Parsing of the durations and rates users write in decorators and flags: "24h", "20/hour"."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")


def parse_duration(text: str | timedelta) -> timedelta:
    """`"90s"`, `"15m"`, `"24h"`, `"7d"`, `"2w"` (or a timedelta) → timedelta."""
    if isinstance(text, timedelta):
        return text
    match = _DURATION.match(text.lower())
    if not match or match.group(2) not in _UNITS:
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit, e.g. 90s, 15m, 24h, 7d"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_rate(text: str) -> tuple[int, timedelta]:
    """`"20/hour"`, `"5/10m"`, `"100/day"` → (max calls, window)."""
    count, sep, period = text.partition("/")
    if not sep or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"{text!r} is not a rate limit; write calls/period, e.g. 20/hour or 5/10m")
    period = period.strip()
    if period and period[0].isalpha():
        period = "1" + period
    return int(count), parse_duration(period)
