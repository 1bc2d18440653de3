"""Pipelines with cron, every and webhook triggers for the schedule and webhook tests (every name
starts with `s_`). They only return their input: the tests look at runs, not at work done."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pipelines import Context, cron, every, pipeline, webhook


class Nothing(BaseModel):
    pass


class Report(BaseModel):
    team: str


class Order(BaseModel):
    order: str = Field(min_length=1)
    amount: float = Field(gt=0)


@pipeline("s_hourly", input=Nothing, triggers=[cron("0 * * * *")])
def s_hourly(ctx: Context, _: Nothing) -> dict[str, str]:
    return {"ok": "hourly"}


@pipeline(
    "s_report",
    input=Report,
    triggers=[
        cron("0 9 * * MON", tz="Europe/Paris", input={"team": "ops"}),
        every("10m", input={"team": "sre"}, misfire="skip"),
        webhook(),
    ],
)
def s_report(ctx: Context, report: Report) -> dict[str, str]:
    return {"team": report.team}


@pipeline("s_needs_input", input=Report, triggers=[every("1h")])
def s_needs_input(ctx: Context, report: Report) -> dict[str, str]:
    """Its schedule declares no input, which the model refuses."""
    return {"team": report.team}


@pipeline("s_hook", input=Order, triggers=[webhook()])
def s_hook(ctx: Context, order: Order) -> dict[str, float]:
    return {"amount": order.amount}


@pipeline("s_tokened", input=Order, triggers=[webhook()])
def s_tokened(ctx: Context, order: Order) -> dict[str, float]:
    return {"amount": order.amount}


@pipeline("s_unsecured", input=Order, triggers=[webhook()])
def s_unsecured(ctx: Context, order: Order) -> dict[str, float]:
    """A webhook pipeline nobody configured a secret or token for."""
    return {"amount": order.amount}


@pipeline("s_no_hook", input=Order)
def s_no_hook(ctx: Context, order: Order) -> dict[str, float]:
    return {"amount": order.amount}
