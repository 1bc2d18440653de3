"""Pipelines and tools for the quorum tests (names start with `q_`): a payout two distinct
people of @finance-leads or @ops must approve. Every payout is noted in the ledger named by
`P_LEDGER` when it is set (the multi-process tests count effects across processes), and in
`PAID` of this process either way."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from pipelines import Context, pipeline, tool
from tests.proc_pipelines import LEDGER_ENV, note

PAID: list[float] = []


class QInput(BaseModel):
    amount: float = 5000


class QPayArgs(BaseModel):
    amount: float


class QReceipt(BaseModel):
    paid: float


@tool(
    kind="spend",
    approvers=["@finance-leads", "@ops"],
    approvals_required=2,
    expires="24h",
)
def q_pay(args: QPayArgs, *, idempotency_key: str) -> QReceipt:
    """Pays a large amount out."""
    PAID.append(args.amount)
    if os.environ.get(LEDGER_ENV):
        note("effect", "q_pay", idempotency_key.split(":")[0], idempotency_key)
    return QReceipt(paid=args.amount)


@pipeline("q_payout", input=QInput)
def q_payout(ctx: Context, inp: QInput) -> dict[str, Any]:
    """A payout that needs two approvers."""
    receipt = ctx.tool(q_pay, QPayArgs(amount=inp.amount))
    return {"paid": receipt.paid}


@tool(
    kind="spend",
    approvers=["@finance-leads", "@ops"],
    approvals_required=2,
    remind_after="2h",
    expires="24h",
)
def q_pay_reminded(args: QPayArgs, *, idempotency_key: str) -> QReceipt:
    """Pays out once two people approve; they are reminded after 2 h."""
    return QReceipt(paid=args.amount)


@pipeline("q_payout_reminded", input=QInput)
def q_payout_reminded(ctx: Context, inp: QInput) -> dict[str, Any]:
    """A payout that needs two approvers, who are reminded."""
    receipt = ctx.tool(q_pay_reminded, QPayArgs(amount=inp.amount))
    return {"paid": receipt.paid}
