"""Example pipeline: refund requests, with a threshold approval and an undo.

validate (step) → look the order up (read tool) → check it is refundable (step) →
issue the refund (spend tool: rate-limited, approval by @finance-leads above 100.00, four-eyes,
24 h expiry, reversible with `gatehouse undo`). The order book is the DEMO CONNECTOR.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from pipelines import Context, pipeline, tool, webhook, when
from pipelines.catalog.connectors import demo_orders
from pipelines.display import Id, Money
from pipelines.runtime import current_clock
from pipelines.tool_context import RecordedReads

APPROVAL_THRESHOLD_CENTS = 100_00


class RefundRequest(BaseModel):
    order_id: str = Field(pattern=r"^ord_\d+$", description="The order to refund, e.g. ord_1002")
    amount: Decimal = Field(
        gt=0, max_digits=10, decimal_places=2, description="In the order's currency"
    )
    reason: str = Field(min_length=3, max_length=500)


class OrderLookup(BaseModel):
    order_id: str


Cents = Annotated[int, Money(currency_field="currency")]  # 18000 with EUR reads 180.00 EUR


class Order(BaseModel):
    id: Annotated[str, Id()]
    customer: str
    amount_cents: Cents
    currency: str
    refunded_cents: Cents


class RefundArgs(BaseModel):
    order_id: Annotated[str, Id()]
    amount_cents: Annotated[int, Field(gt=0), Money(currency_field="currency")]
    currency: str
    reason: str


class Refund(BaseModel):
    refund_id: Annotated[int, Id()]
    order_id: Annotated[str, Id()]
    amount_cents: int  # no currency of its own: the order's
    status: str


class OrderFacts(BaseModel):
    """What the refund card shows beside the amount: the order as `find_order` read it."""

    order_id: Annotated[str, Id(), Field(title="order")]
    customer: str
    total_cents: Annotated[int, Money(currency_field="currency"), Field(title="order total")]
    refunded_cents: Annotated[int, Money(currency_field="currency"), Field(title="refunded so far")]
    left_cents: Annotated[int, Money(currency_field="currency"), Field(title="left to refund")]
    currency: str


class RefundOutcome(BaseModel):
    status: Literal["refunded", "declined"]
    message: str
    refund_id: int | None = None


@tool(kind="read")
def find_order(args: OrderLookup, *, idempotency_key: str) -> Order | None:
    """Look an order up in the demo order book."""
    record = demo_orders.find_order(args.order_id)
    return None if record is None else Order(**record.__dict__)


def reverse_refund(args: RefundArgs, result: Refund, *, idempotency_key: str) -> None:
    demo_orders.reverse_refund(result.refund_id, now=current_clock().now())


def refund_summary(args: RefundArgs, result: Refund) -> str:
    """The refund's card line once it is made: "refunded 180.00 EUR on ord_1002, refund 45"."""
    return (
        f"refunded {result.amount_cents / 100:.2f} {args.currency} on {result.order_id}, "
        f"refund {result.refund_id}"
    )


def simulated_refund(args: RefundArgs) -> Refund:
    """What an eval goes on with instead of refunding (`gatehouse eval`): nothing is issued."""
    return Refund(
        refund_id=0, order_id=args.order_id, amount_cents=args.amount_cents, status="simulated"
    )


def order_facts(args: RefundArgs, reads: RecordedReads) -> OrderFacts | None:
    """The refunded order as the run read it (`find_order`): whose it is, its total, what was
    refunded already and what is left, so the approver sees whether this refund fits."""
    order = next(
        (o for o in reversed(reads.results(find_order)) if o and o.id == args.order_id), None
    )
    if order is None:
        return None
    return OrderFacts(
        order_id=order.id,
        customer=order.customer,
        total_cents=order.amount_cents,
        refunded_cents=order.refunded_cents,
        left_cents=order.amount_cents - order.refunded_cents,
        currency=order.currency,
    )


@tool(
    kind="spend",
    rate_limit="20/hour",
    approval=when(lambda a: a.amount_cents > APPROVAL_THRESHOLD_CENTS, "the amount is over 100.00"),
    approvers=["@finance-leads"],
    four_eyes=True,
    expires="24h",
    reverse=reverse_refund,
    simulate=simulated_refund,
    context=order_facts,
    summary=refund_summary,
)
def issue_refund(args: RefundArgs, *, idempotency_key: str) -> Refund:
    """Refund part or all of an order (demo connector)."""
    record = demo_orders.issue_refund(
        args.order_id, args.amount_cents, idempotency_key=idempotency_key, now=current_clock().now()
    )
    return Refund(
        refund_id=record.id,
        order_id=record.order_id,
        amount_cents=record.amount_cents,
        status=record.status,
    )


def to_cents(amount: str) -> int:
    return int(Decimal(amount) * 100)


def refusal(order: dict[str, int | str], amount_cents: int) -> str | None:
    """Why this refund cannot be made, or None when it can."""
    left = int(order["amount_cents"]) - int(order["refunded_cents"])
    if amount_cents > left:
        return f"only {left / 100:.2f} {order['currency']} of order {order['id']} is left to refund"
    return None


@pipeline("refund_request", input=RefundRequest, triggers=[webhook()])
def refund_request(ctx: Context, request: RefundRequest) -> RefundOutcome:
    """Refund an order: automatic up to 100.00, a finance lead approves above."""
    amount_cents = ctx.step("to_cents", to_cents, str(request.amount))
    order = ctx.tool(find_order, OrderLookup(order_id=request.order_id))
    if order is None:
        return RefundOutcome(status="declined", message=f"no order {request.order_id}")
    why_not = ctx.step("check_refundable", refusal, order.model_dump(), amount_cents)
    if why_not:
        return RefundOutcome(status="declined", message=why_not)
    refund = ctx.tool(
        issue_refund,
        RefundArgs(
            order_id=order.id,
            amount_cents=amount_cents,
            currency=order.currency,
            reason=request.reason,
        ),
    )
    return RefundOutcome(
        status="refunded",
        message=f"refunded {amount_cents / 100:.2f} {order.currency} on {order.id}",
        refund_id=refund.refund_id,
    )
