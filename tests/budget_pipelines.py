"""Pipelines the budget tests drive (tests/test_budgets.py). Every name starts with `b_`:
registration is global and other test modules register their own. Each model call costs what
the fake OpenAI server's token usage says, at the test's price for "budget-model"."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from pipelines import CannotAnswer, Context, pipeline


class Asks(BaseModel):
    text: str = "refund please"
    calls: int = 1
    model: str | None = None


class Label(BaseModel):
    kind: Literal["refund", "question", "bug"]
    confidence: float = Field(ge=0, le=1)


def ask(ctx: Context, asks: Asks) -> list[str]:
    return [
        ctx.llm("classify", task="classify", prompt=asks.text, output=Label, model=asks.model).kind
        for _ in range(asks.calls)
    ]


@pipeline("b_run_budget", input=Asks, max_cost_per_run=0.50)
def b_run_budget(ctx: Context, asks: Asks) -> list[str]:
    """Up to 0.50 USD a run; over it, the next model call goes to a person."""
    return ask(ctx, asks)


@pipeline("b_run_budget_fail", input=Asks, max_cost_per_run=0.50, on_budget="fail")
def b_run_budget_fail(ctx: Context, asks: Asks) -> list[str]:
    """Up to 0.50 USD a run; over it, the run fails."""
    return ask(ctx, asks)


@pipeline("b_day_budget", input=Asks, max_cost_per_day=0.30)
def b_day_budget(ctx: Context, asks: Asks) -> list[str]:
    """Up to 0.30 USD a day across runs and replicas."""
    return ask(ctx, asks)


@pipeline("b_rate", input=Asks, max_runs_per_hour=2)
def b_rate(ctx: Context, asks: Asks) -> str:
    """Two runs an hour."""
    return ctx.step("echo", str, asks.text)


@pipeline("b_unbudgeted", input=Asks)
def b_unbudgeted(ctx: Context, asks: Asks) -> list[str]:
    """No budget: nothing is counted or refused."""
    return ask(ctx, asks)


@pipeline("b_run_budget_raise", input=Asks, max_cost_per_run=0.20)
def b_run_budget_raise(ctx: Context, asks: Asks) -> str:
    """Up to 0.20 USD a run; over it, the pipeline's own `except CannotAnswer` decides."""
    try:
        for _ in range(asks.calls):
            ctx.llm("classify", task="classify", prompt=asks.text, output=Label, on_fail="raise")
    except CannotAnswer as exc:
        return str(exc)
    return "all answered"
