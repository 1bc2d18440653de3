"""Numbers, money, percentages, durations and times read the same in Slack and the terminal,
because both take them from `bot.formatting` and nothing else in `bot/` spells them out."""

from __future__ import annotations

import ast
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.formatting import (
    ago,
    clock,
    count,
    duration,
    milliseconds,
    money,
    rate,
    share,
    time_of_day,
    took,
    usd,
    when,
    window_label,
)
from pipelines.operations.stats import DAY, WEEK

BOT = Path(__file__).resolve().parent.parent / "bot"
AT = datetime.fromisoformat("2026-11-02T14:02:03.456789+00:00")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.0004, "0 ms"),
        (0.25, "250 ms"),
        (59.94, "59.9 s"),
        (150, "2.5 min"),
        (9000, "2.5 h"),
        (3 * 86400, "3.0 d"),
    ],
)
def test_durations_read_in_the_unit_people_use(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_rates_money_and_window_labels() -> None:
    assert (rate(None), rate(0.0), rate(1 / 3)) == ("-", "0.0%", "33.3%")
    assert (money(None), money(0.0), money(0.00123), money(1.5)) == ("-", "$0", "$0.0012", "$1.50")
    assert money(0.5, partial=True) == "≥$0.50"
    labels = [window_label(w) for w in (DAY, WEEK, timedelta(minutes=90), timedelta(seconds=45))]
    assert labels == ["24 h", "7 d", "90 min", "45 s"]


def test_counts_shares_and_exact_costs() -> None:
    assert [count(n) for n in (950, 12_345, 4_500_000)] == ["950", "12.3k", "4.5M"]
    assert (share(3, 8), share(0, 0)) == ("38%", "-")
    assert (usd(None), usd(0.042), usd(1.5)) == ("-", "$0.0420", "$1.5000")
    assert (milliseconds(None), milliseconds(12.34)) == ("-", "12.3 ms")


def test_times_and_how_long_things_took() -> None:
    assert when(AT) == "2026-11-02 14:02:03 UTC" and when(None) == "-"
    assert time_of_day(AT) == "14:02:03.456" and time_of_day(None) == "-"
    assert clock(AT, same_day_as=AT) == "14:02 UTC"
    assert clock(AT, same_day_as=AT - DAY) == "14:02 UTC on 2026-11-02"
    assert ago(AT - timedelta(minutes=5), AT) == "5.0 min"
    assert ago(AT + timedelta(minutes=5), AT) == "0 ms"  # never negative
    assert took(AT, AT + timedelta(milliseconds=12.3)) == "12.3 ms"
    assert took(AT, AT + timedelta(seconds=75)) == "75.00 s"
    assert took(AT, None) == "-"


FORMATTERS = {"count", "rate", "share", "money", "usd", "duration", "took", "window_label", "ago"}
FORMATTERS |= {"when", "clock", "time_of_day", "milliseconds", "_percent", "_money", "_ms"}


def test_no_module_in_bot_defines_its_own_formatter() -> None:
    """A second `duration` or `_percent` somewhere is how the two sets of formatters grew."""
    found = []
    for path in BOT.rglob("*.py"):
        if path.name == "formatting.py" and path.parent == BOT:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name in FORMATTERS:
                found.append(f"{path.relative_to(BOT.parent)}: {node.name}")
    assert found == []
