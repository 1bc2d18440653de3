"""Example pipeline: triage a support ticket with one model call and deterministic routing.

classify (ctx.llm, confidence bar 0.8: below it, or with no model, a person classifies) →
a refund that names its order and amount, from the order's own customer, with that much left
to refund, goes through the refunds pipeline's `issue_refund` tool (its gate: a finance lead
approves above 100.00, four-eyes) → everything else goes to a team's queue (step).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from pipelines import ActionRejected, Context, pipeline, webhook
from pipelines.catalog.refunds import (
    Order,
    OrderLookup,
    RefundArgs,
    find_order,
    issue_refund,
    refusal,
    to_cents,
)

CLASSIFY_MIN_CONFIDENCE = 0.8
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

TicketKind = Literal["refund", "bug", "question", "other"]

# Which team's queue gets a ticket the pipeline does not settle itself.
QUEUES: dict[str, str] = {
    "refund": "billing",
    "bug": "engineering",
    "question": "support",
    "other": "support",
}


class SupportTicket(BaseModel):
    ticket_id: str = Field(min_length=1, max_length=100)
    customer_email: str = Field(pattern=EMAIL_PATTERN, max_length=320)
    subject: str = Field(default="", max_length=300)
    body: str = Field(min_length=1, max_length=10_000)


class TicketLabel(BaseModel):
    kind: TicketKind = Field(
        description=(
            "refund: asks for money back; bug: something does not work as it should; "
            "question: how to do something, or about the product or an account; other: anything else"
        )
    )
    confidence: float = Field(ge=0, le=1, description="How sure the classification is, 0..1")
    order_id: str | None = Field(
        default=None,
        pattern=r"^ord_\d+$",
        description="For a refund: the order id the ticket states, e.g. ord_1002; else null",
    )
    amount: Decimal | None = Field(
        default=None,
        gt=0,
        max_digits=10,
        decimal_places=2,
        description="For a refund: the amount asked for, if the ticket states one; else null",
    )


class TriageOutcome(BaseModel):
    ticket_id: str
    kind: TicketKind
    route: Literal["refunded", "queued"]
    queue: str | None = None
    message: str
    refund_id: int | None = None


CLASSIFY_SYSTEM = """You triage customer support tickets for an online shop. Classify the \
ticket as refund, bug, question or other. For a refund, give the order id and the amount only \
when the ticket states them; never infer them."""


def ticket_prompt(ticket: SupportTicket) -> str:
    return f"From: {ticket.customer_email}\nSubject: {ticket.subject}\n\n{ticket.body}"


def queue_for(kind: str) -> str:
    return QUEUES[kind]


def refund_blocker(customer_email: str, order: Order | None, amount_cents: int) -> str | None:
    """Why this ticket's refund must not be issued automatically, or None when it may be."""
    if order is None:
        return "the order does not exist"
    if order.customer.casefold() != customer_email.casefold():
        return f"the ticket is not from {order.id}'s customer"
    return refusal(order.model_dump(), amount_cents)


@pipeline("ticket_triage", input=SupportTicket, triggers=[webhook()])
def ticket_triage(ctx: Context, ticket: SupportTicket) -> TriageOutcome:
    """Classify a support ticket; refunds through the gated refund tool, the rest to a queue."""
    label = ctx.llm(
        "classify_ticket",
        task="classify",
        system=CLASSIFY_SYSTEM,
        prompt=ticket_prompt(ticket),
        output=TicketLabel,
        min_confidence=CLASSIFY_MIN_CONFIDENCE,
    )
    if label.kind == "refund" and label.order_id is not None and label.amount is not None:
        amount_cents = ctx.step("to_cents", to_cents, str(label.amount))
        order = ctx.tool(find_order, OrderLookup(order_id=label.order_id))
        why_not = ctx.step(
            "check_refundable", refund_blocker, ticket.customer_email, order, amount_cents
        )
        if why_not is None:
            try:
                refund = ctx.tool(
                    issue_refund,
                    RefundArgs(
                        order_id=order.id,
                        amount_cents=amount_cents,
                        currency=order.currency,
                        reason=f"support ticket {ticket.ticket_id}",
                    ),
                )
            except ActionRejected as rejected:
                why_not = f"the refund was rejected ({rejected.reason})"
            else:
                return TriageOutcome(
                    ticket_id=ticket.ticket_id,
                    kind="refund",
                    route="refunded",
                    message=f"refunded {amount_cents / 100:.2f} {order.currency} on {order.id}",
                    refund_id=refund.refund_id,
                )
        queue = ctx.step("route_to_queue", queue_for, label.kind)
        return TriageOutcome(
            ticket_id=ticket.ticket_id,
            kind="refund",
            route="queued",
            queue=queue,
            message=f"refund not issued automatically: {why_not}",
        )
    queue = ctx.step("route_to_queue", queue_for, label.kind)
    detail = " (no order id or amount stated)" if label.kind == "refund" else ""
    return TriageOutcome(
        ticket_id=ticket.ticket_id,
        kind=label.kind,
        route="queued",
        queue=queue,
        message=f"{label.kind} ticket queued for {queue}{detail}",
    )
