"""`@pipeline`: register a typed function `(ctx, input) -> output`, and import the modules that
define pipelines (only those named: `discover`)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from pipelines.budget_limits import Budget, OnBudget, checked_budget
from pipelines.errors import DuplicateName, UnknownPipeline
from pipelines.triggers import Trigger

PipelineFn = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Pipeline:
    name: str
    fn: PipelineFn
    input_model: type[BaseModel]
    triggers: tuple[Trigger, ...]
    description: str
    approvals_channel: str | None = None
    eval_min_pass: float | None = None  # the pass rate `gatehouse ready` asks of its last eval
    pause_on: tuple[str, ...] = ()  # the alert rules that pause it (PAUSE_RULES)
    budget: Budget | None = None  # what it may spend (pipelines.budgets)


_PIPELINES: dict[str, Pipeline] = {}

PAUSE_RULES = ("error_rate", "budget")
"""What `@pipeline(pause_on=[...])` may name: the error-rate alert, a budget (day or rate)."""


def pipeline(
    name: str,
    *,
    input: type[BaseModel],
    triggers: Iterable[Trigger] = (),
    approvals_channel: str | None = None,
    eval_min_pass: float | None = None,
    pause_on: Iterable[str] = (),
    max_cost_per_run: float | None = None,
    max_cost_per_day: float | None = None,
    max_runs_per_hour: int | None = None,
    on_budget: OnBudget = "human",
) -> Callable[[PipelineFn], PipelineFn]:
    """Register a pipeline. The budget (USD per run and per UTC day, runs per hour, and what a
    call over it does: `on_budget="human"` or `"fail"`) is checked here; see pipelines.budgets."""
    if not (isinstance(input, type) and issubclass(input, BaseModel)):
        raise TypeError(f"pipeline {name!r}: input= must be a pydantic model class")
    if isinstance(pause_on, str):
        pause_on = [pause_on]
    pause_rules = tuple(dict.fromkeys(pause_on))
    if unknown := [rule for rule in pause_rules if rule not in PAUSE_RULES]:
        raise ValueError(
            f"pipeline {name!r}: pause_on names {', '.join(map(repr, unknown))}; "
            f"the rules that can pause a pipeline: {', '.join(PAUSE_RULES)}"
        )
    if eval_min_pass is not None and not 0 <= eval_min_pass <= 1:
        raise ValueError(f"pipeline {name!r}: eval_min_pass={eval_min_pass!r} is not in 0..1")
    budget = checked_budget(
        f"pipeline {name!r}",
        {
            "max_cost_per_run": max_cost_per_run,
            "max_cost_per_day": max_cost_per_day,
            "max_runs_per_hour": max_runs_per_hour,
            "on_budget": on_budget,
        },
    )

    def register(fn: PipelineFn) -> PipelineFn:
        existing = _PIPELINES.get(name)
        if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
            raise DuplicateName(
                f"pipeline {name!r} is registered twice ({existing.fn.__module__}."
                f"{existing.fn.__qualname__} and {fn.__module__}.{fn.__qualname__})"
            )
        _PIPELINES[name] = Pipeline(
            name=name,
            fn=fn,
            input_model=input,
            triggers=tuple(triggers),
            description=(inspect.getdoc(fn) or "").split("\n")[0],
            approvals_channel=approvals_channel,
            eval_min_pass=eval_min_pass,
            pause_on=pause_rules,
            budget=budget if budget.limits_anything else None,
        )
        return fn

    return register


def registered_pipelines() -> dict[str, Pipeline]:
    return dict(sorted(_PIPELINES.items()))


# The example pipelines (and their connectors): registered only where named.
CATALOG = "pipelines.catalog"


def get_pipeline(name: str) -> Pipeline:
    try:
        return _PIPELINES[name]
    except KeyError:
        known = ", ".join(sorted(_PIPELINES))
        if not known:
            raise UnknownPipeline(
                f"no pipeline named {name!r}: no pipelines are registered; GATEHOUSE_PIPELINES "
                f"names the modules that define them ({CATALOG} for the examples)"
            ) from None
        raise UnknownPipeline(
            f"no pipeline named {name!r}; registered pipelines: {known} (`gatehouse pipelines`)"
        ) from None


def discover(modules: Iterable[str] = ()) -> dict[str, Pipeline]:
    """Import each named module (GATEHOUSE_PIPELINES) and, for a package, its modules too.

    Nothing is registered unless named: a production process runs the team's pipelines only.
    The example pipelines are one name away (`CATALOG`, "pipelines.catalog"), which the demo and
    the tests name.
    """
    for module in modules:
        try:
            imported = importlib.import_module(module)
        except ImportError as exc:
            raise UnknownPipeline(
                f"GATEHOUSE_PIPELINES names {module!r}, which cannot be imported: {exc}"
            ) from exc
        package_path = getattr(imported, "__path__", None)
        if package_path is not None:
            for info in pkgutil.iter_modules(package_path, imported.__name__ + "."):
                importlib.import_module(info.name)
    return registered_pipelines()
