"""A payout whose approver may change the amount and the recipient before approving
(`@tool(editable=...)`), shared by the editable-approval tests (engine, CLI, Slack)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from pipelines import Context, pipeline, tool, when
from pipelines.display import Money

PAID: list[tuple[str, int]] = []


class EaRequest(BaseModel):
    recipient: str
    amount_cents: int


class EaPayoutArgs(BaseModel):
    recipient: str = Field(min_length=3)
    amount_cents: Annotated[int, Money(currency="EUR")] = Field(gt=0, le=500_000)
    memo: str = "payout"

    @field_validator("recipient")
    @classmethod
    def _a_supplier_id(cls, value: str) -> str:
        # A rule the form cannot state (no schema keyword): only the model catches it.
        if not value.replace("-", "").isalnum():
            raise ValueError("a supplier id is letters, digits and dashes")
        return value


class EaPayoutResult(BaseModel):
    paid_cents: int
    to: str


@tool(
    kind="spend",
    approval=when(lambda a: a.amount_cents > 10_000, "the amount is over 100.00"),
    approvers=["@finance-leads"],
    rate_limit="100/hour",
    editable=["amount_cents", "recipient"],
)
def ea_payout(args: EaPayoutArgs, *, idempotency_key: str) -> EaPayoutResult:
    """Pay a supplier."""
    PAID.append((args.recipient, args.amount_cents))
    return EaPayoutResult(paid_cents=args.amount_cents, to=args.recipient)


@pipeline("ea_payout", input=EaRequest)
def ea_payout_pipeline(ctx: Context, request: EaRequest) -> dict[str, Any]:
    paid = ctx.tool(
        ea_payout, EaPayoutArgs(recipient=request.recipient, amount_cents=request.amount_cents)
    )
    return {"paid_cents": paid.paid_cents, "to": paid.to}
