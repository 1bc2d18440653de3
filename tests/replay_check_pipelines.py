"""Pipelines the replay check and `ctx.version` tests drive (tests/test_replay_check.py,
tests/test_ctx_version.py). Names start with `rc_`; `flags["variant"]` stands for a deploy that
changes the code between a run's record and its replay or resume; `reset()` restores it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from pipelines import Context, pipeline, tool

flags: dict[str, Any] = {}
effects: list[str] = []


def reset() -> None:
    flags.clear()
    flags["variant"] = "normal"
    effects.clear()


reset()


class Order(BaseModel):
    item: str = "widget"
    amount: int = 5


class ShipArgs(BaseModel):
    item: str
    amount: int


class Shipped(BaseModel):
    ref: str


def price(amount: int) -> int:
    return amount * 100


def extra_check() -> str:
    return "checked"


def done(ref: str) -> str:
    return f"done {ref}"


@tool(kind="send", approvers=["olga"], four_eyes=True)
def rc_ship(args: ShipArgs, *, idempotency_key: str) -> Shipped:
    """Always waits for olga's approval."""
    effects.append(f"ship {args.item}")
    return Shipped(ref=f"ship-{args.item}")


@tool(kind="send", approval="never")
def rc_notify(args: ShipArgs, *, idempotency_key: str) -> Shipped:
    effects.append(f"notify {args.item}")
    return Shipped(ref=f"note-{args.item}")


@pipeline("rc_order", input=Order)
def rc_order(ctx: Context, order: Order) -> dict[str, Any]:
    """step → approved send tool (the wait point) → step. The variants stand for deploys:
    `extra_step` adds a step before the wait point; `versioned` adds it under
    `ctx.version("rc-extra")`; `notify_after` adds a tool at the end, `versioned_notify` adds it
    under `ctx.version("rc-notify")`; `raise` fails before the tool; `shout` changes the output."""
    variant = flags["variant"]
    quote = ctx.step("rc_quote", price, order.amount)
    if variant == "extra_step":
        ctx.step("rc_extra", extra_check)
    if variant == "versioned" and ctx.version("rc-extra"):
        ctx.step("rc_extra", extra_check)
    if variant == "raise":
        raise ValueError("the price feed is gone")
    shipped = ctx.tool(rc_ship, ShipArgs(item=order.item, amount=quote))
    finished = ctx.step("rc_done", done, shipped.ref)
    if variant == "notify_after":
        ctx.tool(rc_notify, ShipArgs(item=order.item, amount=quote))
    if variant == "versioned_notify" and ctx.version("rc-notify"):
        ctx.tool(rc_notify, ShipArgs(item=order.item, amount=quote))
    if variant == "shout":
        finished = finished.upper()
    return {"ref": shipped.ref, "done": finished}


@pipeline("rc_quick", input=Order)
def rc_quick(ctx: Context, order: Order) -> dict[str, Any]:
    """Three steps and no wait: a run finishes when triggered."""
    a = ctx.step("rc_a", price, order.amount)
    b = ctx.step("rc_b", price, a)
    c = ctx.step("rc_c", price, b)
    if flags["variant"] == "quick_fails" and order.amount > 1:
        raise ValueError(f"amount {order.amount} refused")
    return {"c": c}
