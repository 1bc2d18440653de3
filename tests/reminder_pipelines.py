"""Pipelines and tools whose approvals remind and escalate (tests/test_reminders.py).

Names start with `t_nudge` (registration is global to the test process). The approvers are
`@finance-leads` and the escalation goes to `@ops`: in the engine tests' directory those are
alice, bob and olga; in the Slack sandbox U_ALICE, U_BOB and U_OLGA.
"""

from __future__ import annotations

from pydantic import BaseModel

from pipelines import Context, pipeline, tool


class NudgeOrder(BaseModel):
    amount: int = 10


class NudgeArgs(BaseModel):
    amount: int


class NudgePaid(BaseModel):
    amount: int


@tool(
    kind="spend",
    approvers=["@finance-leads"],
    remind_after="2h",
    escalate_after="6h",
    escalate_to=["@ops"],
    expires="24h",
)
def t_nudge_pay(args: NudgeArgs, *, idempotency_key: str) -> NudgePaid:
    """Pay, after a finance lead (or, after 6 h of silence, ops) approves."""
    return NudgePaid(amount=args.amount)


@tool(kind="spend", approvers=["@finance-leads"], remind_after="30m", expires="1h")
def t_nudge_short(args: NudgeArgs, *, idempotency_key: str) -> NudgePaid:
    """Pay; the approval expires an hour after it is asked, a reminder at 30 min."""
    return NudgePaid(amount=args.amount)


@pipeline("t_nudge", input=NudgeOrder)
def t_nudge(ctx: Context, order: NudgeOrder) -> NudgePaid:
    result: NudgePaid = ctx.tool(t_nudge_pay, NudgeArgs(amount=order.amount))
    return result


@pipeline("t_nudge_short", input=NudgeOrder)
def t_nudge_short_pipeline(ctx: Context, order: NudgeOrder) -> NudgePaid:
    result: NudgePaid = ctx.tool(t_nudge_short, NudgeArgs(amount=order.amount))
    return result
