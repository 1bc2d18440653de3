"""A pipeline's budget as declared (`@pipeline(max_cost_per_run=…, max_cost_per_day=…,
max_runs_per_hour=…, on_budget=…)`) or configured (GATEHOUSE_BUDGETS), checked when it is
written; the gate that keeps it is `pipelines.budgets`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from pipelines.errors import GatehouseError

OnBudget = Literal["human", "fail"]


class InvalidBudget(GatehouseError, ValueError):
    """A budget that cannot be kept as written (a negative limit, an unknown `on_budget`)."""


@dataclass(frozen=True)
class Budget:
    """A pipeline's limits, in USD and runs; None: no limit of that kind."""

    max_cost_per_run: float | None = None
    max_cost_per_day: float | None = None
    max_runs_per_hour: int | None = None
    on_budget: OnBudget = "human"

    @property
    def limits_money(self) -> bool:
        return self.max_cost_per_run is not None or self.max_cost_per_day is not None

    @property
    def limits_anything(self) -> bool:
        return self.limits_money or self.max_runs_per_hour is not None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


BUDGET_KEYS = tuple(f.name for f in fields(Budget))


def checked_budget(where: str, values: Mapping[str, Any], base: Budget | None = None) -> Budget:
    """`values` as a budget (over `base`), or InvalidBudget naming `where` and what to write."""
    unknown = sorted(set(values) - set(BUDGET_KEYS))
    if unknown:
        raise InvalidBudget(
            f"{where}: unknown key {', '.join(map(repr, unknown))}; use {', '.join(BUDGET_KEYS)}"
        )
    chosen: dict[str, Any] = {}
    for key in ("max_cost_per_run", "max_cost_per_day"):
        if key in values and values[key] is not None:
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidBudget(f"{where}: {key} must be a number of USD, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise InvalidBudget(f"{where}: {key} must be above 0 USD, got {value!r}")
            chosen[key] = float(value)
    if values.get("max_runs_per_hour") is not None:
        value = values["max_runs_per_hour"]
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise InvalidBudget(f"{where}: max_runs_per_hour must be a whole number, got {value!r}")
        if value < 1:
            raise InvalidBudget(f"{where}: max_runs_per_hour must be at least 1, got {value!r}")
        chosen["max_runs_per_hour"] = int(value)
    if "on_budget" in values:
        if values["on_budget"] not in ("human", "fail"):
            raise InvalidBudget(
                f"{where}: on_budget={values['on_budget']!r}: use 'human' (the call goes to a "
                "person) or 'fail' (the run fails)"
            )
        chosen["on_budget"] = values["on_budget"]
    return replace(base or Budget(), **chosen)
