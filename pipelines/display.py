"""Display types: how a field of a tool's arguments (or of a context model) reads to a person.

A field is marked with `Annotated`, as `Categorical` marks drift fields; the validation is the
field's own type, the mark only says how cards, confirm dialogs, the CLI and the review thread
show it (`bot.formatting.shown_values` does the showing, for every surface):

    class RefundArgs(BaseModel):
        order_id: Annotated[str, Id()]
        amount_cents: Annotated[int, Money(currency_field="currency")]  # 18000 → 180.00 EUR
        currency: str                                                  # folded into the amount
        discount: Annotated[float, Percent()]                          # 0.125 → 12.5%
        ship_by: Annotated[date, Date()]
        invoice: Annotated[str, Link()]

The engine never reads a mark: a record keeps the value as validated (`18000`), what people read
is computed from it when a card or a line is drawn.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True)
class Money:
    """An amount of money. `currency_field` names the sibling field holding the ISO 4217 code
    (it is then shown with the amount, not on its own); or `currency` fixes it. `minor_units`:
    the value counts the currency's smallest unit (cents: 18000 is 180.00 EUR); False for an
    amount in whole units (a Decimal such as 180.00)."""

    currency_field: str | None = None
    currency: str | None = None
    minor_units: bool = True


@dataclass(frozen=True)
class Percent:
    """A share. `scale=1`: the value is a fraction (0.125 is 12.5%); `scale=100`: it is already
    a percentage (12.5 is 12.5%)."""

    scale: float = 1.0


@dataclass(frozen=True)
class Date:
    """A date or a moment (ISO text, `date` or `datetime`): shown as `2026-12-04` or
    `2026-12-04 14:02 UTC`."""


@dataclass(frozen=True)
class Id:
    """An identifier (an order, a customer, a ticket): shown as code, never as a number."""


@dataclass(frozen=True)
class Link:
    """A URL: shown as a link."""


Mark = Money | Percent | Date | Id | Link
MARK_TYPES = (Money, Percent, Date, Id, Link)


@functools.lru_cache(maxsize=512)
def display_marks(model: type[BaseModel]) -> dict[str, Mark]:
    """Field name → its display mark, for the fields of `model` that have one (cached: read on
    every card)."""
    found: dict[str, Mark] = {}
    for name, info in model.model_fields.items():
        mark = next((m for m in info.metadata if isinstance(m, MARK_TYPES)), None)
        if mark is not None:
            found[name] = mark
    return found


def field_titles(model: type[BaseModel]) -> dict[str, str]:
    """Field name → the title its `Field(title=...)` gives, where one is given."""
    return {name: info.title for name, info in model.model_fields.items() if info.title}
