"""The 3-step pipeline's input and steps that bench/engine.py and bench/replay.py time (each
registers it under its own name): no model, no approval, three recorded steps."""

from __future__ import annotations

from pydantic import BaseModel

from pipelines import Context


class BenchInput(BaseModel):
    n: int


def double(n: int) -> int:
    return n * 2


def add_one(n: int) -> int:
    return n + 1


def describe(n: int) -> str:
    return f"n={n}"


def three_steps(ctx: Context, data: BenchInput) -> dict[str, object]:
    a = ctx.step("double", double, data.n)
    b = ctx.step("add_one", add_one, a)
    text = ctx.step("describe", describe, b)
    return {"value": b, "text": text}
