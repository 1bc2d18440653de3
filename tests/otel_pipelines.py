"""Pipelines the tracing tests drive (tests/test_tracing.py); names start with `otel_`.

`otel_refund`: a step, a model call, a refund gated by an approval (with a rate limit), and a
`read` tool whose own httpx call goes to `CALLBACK_URL` (instrumented by the test, as an
application's own client would be). The input's card number is `Sensitive`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, Field

from pipelines import Context, Sensitive, pipeline, tool, webhook

CARD = "4111111111111111"
http_client: httpx.Client | None = None  # set by the test: instrumented, pointed at the receiver
CALLBACK_URL = ""


class RefundRequest(BaseModel):
    order: str
    amount: float
    card_number: Annotated[str, Sensitive]


class Label(BaseModel):
    kind: Literal["refund", "question"]
    confidence: float = Field(ge=0, le=1)


class RefundArgs(BaseModel):
    order: str
    amount: float
    card_number: Annotated[str, Sensitive]


class Refunded(BaseModel):
    refund_id: str


class Lookup(BaseModel):
    order: str


class Found(BaseModel):
    status: int


@tool(kind="spend", approvers=["@finance-leads"], rate_limit="20/hour")
def otel_issue_refund(args: RefundArgs, *, idempotency_key: str) -> Refunded:
    return Refunded(refund_id=f"re_{args.order}")


@tool(kind="read")
def otel_lookup_order(args: Lookup, *, idempotency_key: str) -> Found:
    assert http_client is not None, "the test sets tests.otel_pipelines.http_client"
    response = http_client.get(f"{CALLBACK_URL}/orders/{args.order}")
    return Found(status=response.status_code)


def normalize(order: str) -> str:
    return order.strip().upper()


@pipeline("otel_refund", input=RefundRequest, triggers=[webhook()])
def otel_refund(ctx: Context, r: RefundRequest) -> dict[str, Any]:
    order = ctx.step("normalize", normalize, r.order)
    label = ctx.llm(
        "classify",
        task="classify",
        prompt=f"Order {order}: customer asks for their money back",
        output=Label,
    )
    ctx.tool(otel_lookup_order, Lookup(order=order))
    refund = ctx.tool(
        otel_issue_refund, RefundArgs(order=order, amount=r.amount, card_number=r.card_number)
    )
    return {"label": label.kind, "refund": refund.refund_id}


@pipeline("otel_quote_card", input=RefundRequest)
def otel_quote_card(ctx: Context, r: RefundRequest) -> dict[str, Any]:
    """Quotes the sensitive card number in a prompt: captured content must not carry it."""
    label = ctx.llm("classify", task="classify", prompt=f"Card {r.card_number}", output=Label)
    ctx.tool(
        otel_issue_refund, RefundArgs(order=r.order, amount=r.amount, card_number=r.card_number)
    )
    return {"label": label.kind}


class Order(BaseModel):
    order: str


@pipeline("otel_steps_only", input=Order)
def otel_steps_only(ctx: Context, o: Order) -> str:
    return ctx.step("normalize", normalize, o.order)


class Confirmation(BaseModel):
    ok: bool


@pipeline("otel_confirm", input=Order)
def otel_confirm(ctx: Context, o: Order) -> bool:
    answer = ctx.ask_human("confirm", f"Ship {o.order}?", Confirmation, assignees=["olga"])
    return answer.ok
