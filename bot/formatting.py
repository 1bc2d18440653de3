"""Numbers, money, percentages, durations and times as people read them, for Slack and the CLI.

Plain text, no markup: `bot.slack` (cards, App Home, `/gatehouse`) and `bot.cli` (the terminal)
show the same figure the same way because both take it from here. A missing figure is `-`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from pipelines.display import Date, Id, Link, Mark, Money, Percent

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


def remaining(until: datetime, now: datetime) -> str:
    """`in 23 h`, `in 40 min`, `in 3 d`, `in less than a minute`, or `overdue`: how long from `now`
    to `until`, rounded down to a whole unit, as a card says when something expires."""
    seconds = (until - now).total_seconds()
    if seconds <= 0:
        return "overdue"
    if seconds < 60:
        return "in less than a minute"
    if seconds < 2 * 3600:
        return f"in {int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"in {int(seconds // 3600)} h"
    return f"in {int(seconds // 86400)} d"


def when(value: datetime | None) -> str:
    """`2026-11-02 09:30:00 UTC`: a moment in full, as the CLI lists it."""
    return DASH if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


# -- display types: arguments as people read them ---------------------------------------------

# ISO 4217 currencies whose minor unit is not a hundredth (the rest have two decimals).
_CURRENCY_DECIMALS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"), 0),
    **dict.fromkeys(("RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}
# The suffixes that say "minor units" in a field name: `amount_cents` reads as "amount".
_MINOR_SUFFIXES = ("_in_cents", "_cents", "_minor_units", "_minor")


def currency_decimals(currency: str) -> int:
    return _CURRENCY_DECIMALS.get(currency.upper(), 2)


def amount(value: Decimal | int | float | str, currency: str | None, *, minor_units: bool) -> str:
    """`180.00 EUR` from `18000` in minor units (or from `180` in whole units), with the
    currency's own decimals (`1,500 JPY`, `1.250 KWD`); no currency known: the number alone."""
    places = currency_decimals(currency) if currency else 2
    number = Decimal(str(value))
    if minor_units:
        number = number.scaleb(-places)
    text = f"{number:,.{places}f}"
    return f"{text} {currency.upper()}" if currency else text


def percent(value: float | int | Decimal, *, scale: float = 1.0) -> str:
    """`12.5%` from `0.125` (`scale=1`, a fraction) or from `12.5` (`scale=100`)."""
    number = float(value) * 100 / scale
    text = f"{number:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


def date_text(value: object) -> str:
    """`2026-12-04`, or `2026-12-04 14:02 UTC` for a moment; text that is not ISO as it is."""
    moment: object = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if len(value) <= 10:
            return value  # a date alone
    if isinstance(moment, datetime):
        utc = moment.astimezone(UTC) if moment.tzinfo else moment
        return f"{utc:%Y-%m-%d %H:%M} UTC"
    if isinstance(moment, date):
        return moment.isoformat()
    return str(value)


@dataclass(frozen=True)
class Shown:
    """One field as a person reads it: its label, its text (plain, not escaped), what kind of
    value it is (`money`, `percent`, `date`, `id`, `link`, or `value` for an unmarked one), and
    the value as recorded (an unmarked value is shown from it, as JSON where it is not text)."""

    label: str
    text: str
    kind: str
    value: object = None


def _one_line(value: object) -> str:
    if isinstance(value, str):
        return " ".join(value.split()) if "\n" in value else value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def _shown(name: str, value: object, mark: Mark | None, values: Mapping[str, object]) -> Shown:
    if value is None or isinstance(value, bool) or mark is None:
        return Shown(name, _one_line(value), "value", value)
    try:
        if isinstance(mark, Money) and isinstance(value, int | float | Decimal | str):
            currency = mark.currency
            if mark.currency_field is not None:
                named = values.get(mark.currency_field)
                currency = named if isinstance(named, str) and named else currency
            text = amount(value, currency, minor_units=mark.minor_units)
            if mark.minor_units:
                label = next((name[: -len(s)] for s in _MINOR_SUFFIXES if name.endswith(s)), name)
                name = label or name
            return Shown(name, text, "money", value)
        if isinstance(mark, Percent) and isinstance(value, int | float | Decimal | str):
            number = Decimal(value) if isinstance(value, str) else value  # a Decimal as JSON text
            return Shown(name, percent(number, scale=mark.scale), "percent", value)
    except (ArithmeticError, ValueError):  # "••••" (sealed), or digits that are not a number
        return Shown(name, _one_line(value), "value", value)
    if isinstance(mark, Date):
        return Shown(name, date_text(value), "date", value)
    if isinstance(mark, Id):
        return Shown(name, _one_line(value), "id", value)
    if isinstance(mark, Link):
        return Shown(name, _one_line(value), "link", value)
    return Shown(name, _one_line(value), "value", value)


def shown_values(
    values: Mapping[str, object],
    marks: Mapping[str, Mark],
    titles: Mapping[str, str] | None = None,
) -> list[Shown]:
    """A tool's arguments (or a context model's fields) as people read them, in order: marked
    fields formatted (`amount_cents` 18000 with `currency` EUR is `amount` `180.00 EUR`), the
    currency field a money field names folded into it, the rest as they are. The one function
    cards, confirm dialogs, the CLI and the review thread show arguments with."""
    folded = {
        m.currency_field
        for n, m in marks.items()
        if isinstance(m, Money)
        and m.currency_field
        and isinstance(values.get(n), int | float | str)
    }
    shown = []
    for name, value in values.items():
        if name in folded and isinstance(values.get(name), str):
            continue
        item = _shown(name, value, marks.get(name), values)
        if titles and name in titles:
            item = Shown(titles[name], item.text, item.kind, item.value)
        shown.append(item)
    return shown


def editable_labels(
    args: object,
    editable: Sequence[str],
    marks: Mapping[str, Mark],
    titles: Mapping[str, str] | None = None,
) -> list[str]:
    """The fields an approver may edit, named as the card names them (`amount`, not
    `amount_cents`), in the tool's order."""
    values = args if isinstance(args, Mapping) else {}
    kept = {name: values.get(name) for name in editable}
    return [s.label for s in shown_values(kept, marks, titles)]


def shown_line(shown: list[Shown], *, separator: str = " · ") -> str:
    """`order_id ord_1002 · amount 180.00 EUR · reason never arrived`: one line, plain text."""
    return separator.join(f"{s.label} {s.text}" for s in shown)


def shown_changes(
    before: Mapping[str, object],
    after: Mapping[str, object],
    marks: Mapping[str, Mark],
    titles: Mapping[str, str] | None = None,
) -> list[tuple[str, str, str]]:
    """What an edit changed, as people read it: `(label, old, new)` per shown field that differs
    (`amount`, `200.00 EUR`, `150.00 EUR`), through `shown_values` on both sides."""
    old, new = shown_values(before, marks, titles), shown_values(after, marks, titles)
    if [s.label for s in old] != [s.label for s in new]:  # a currency field came or went
        old = shown_values(before, {}, titles)
        new = shown_values(after, {}, titles)
    return [(o.label, o.text, n.text) for o, n in zip(old, new, strict=True) if o.value != n.value]


def changes_line(changes: list[tuple[str, str, str]], *, arrow: str = "->") -> str:
    """`amount 200.00 EUR -> 150.00 EUR; recipient acme -> acme-gmbh` (plain text)."""
    return "; ".join(f"{label} {old} {arrow} {new}" for label, old, new in changes)
