"""Test-only pipelines for the pause tests (tests/test_pauses.py, tests/test_pause_slack.py).

Names start with `pz_` because the pipeline registry is global to the test process. No cron
triggers: those would join every test's schedules (the pause tests use `s_hourly`).
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from pipelines import Context, pipeline, tool


class Item(BaseModel):
    n: int = 1


class Done(BaseModel):
    n: int


class Label(BaseModel):
    kind: str
    confidence: float


CALLS: list[str] = []
"""Every tool execution, by name, in order."""

DURING_FIRST: list[Callable[[], None]] = []
"""Run inside `pz_first` (a test pauses the pipeline there, as if mid-run)."""


def reset() -> None:
    CALLS.clear()
    DURING_FIRST.clear()


@tool(kind="read")
def pz_first(args: Item, *, idempotency_key: str) -> Done:
    CALLS.append("pz_first")
    for hook in DURING_FIRST:
        hook()
    return Done(n=args.n)


@tool(kind="write", approval="never")
def pz_second(args: Item, *, idempotency_key: str) -> Done:
    CALLS.append("pz_second")
    return Done(n=args.n + 1)


@pipeline("pz_flow", input=Item)
def pz_flow(ctx: Context, item: Item) -> dict[str, int]:
    """A read, then a write."""
    first = ctx.tool(pz_first, item)
    second = ctx.tool(pz_second, Item(n=first.n))
    return {"n": second.n}


@pipeline("pz_asks", input=Item)
def pz_asks(ctx: Context, item: Item) -> dict[str, str]:
    """One model call (with no model configured it goes to a person)."""
    label = ctx.llm(
        "classify", task="classify", prompt=f"item {item.n}", output=Label, min_confidence=0.5
    )
    return {"kind": label.kind}


@pipeline("pz_flaky", input=Item, pause_on=["error_rate"])
def pz_flaky(ctx: Context, item: Item) -> dict[str, int]:
    """Paused by its error-rate alert."""
    return {"n": item.n}


@pipeline("pz_steady", input=Item)
def pz_steady(ctx: Context, item: Item) -> dict[str, int]:
    """Alerted on, never paused by it."""
    return {"n": item.n}
