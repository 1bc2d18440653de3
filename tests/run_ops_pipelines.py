"""Pipelines and tools the run-operation tests drive (tests/test_run_ops*.py): cancel, retry and
resolve. Names start with `ro_` (registration is global). Effects are counted in `effects`;
`flags` switch a failure on; `reset()` clears both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from pipelines import Context, pipeline, tool
from pipelines.errors import NeedsAttention

effects: dict[str, list[str]] = {}
flags: dict[str, Any] = {}
# Runs inside `ro_slow_lookup`, standing for a cancel that lands while the tool executes.
during_lookup: list[Callable[[], None]] = []


def reset() -> None:
    effects.clear()
    flags.clear()
    flags.update({"crash": False, "step_fails": False})
    during_lookup.clear()


reset()


class Crash(BaseException):
    """Stands for the process dying mid-call (nothing in the engine records it)."""


class Job(BaseModel):
    item: str = Field(default="widget", min_length=1)
    amount: int = Field(default=10, ge=0)


class ChargeArgs(BaseModel):
    item: str
    amount: int


class Receipt(BaseModel):
    receipt_id: str
    amount: int


class Price(BaseModel):
    cents: int = Field(gt=0)


def _effect(name: str, idempotency_key: str) -> None:
    effects.setdefault(name, []).append(idempotency_key)


@tool(kind="read")
def ro_lookup(args: ChargeArgs, *, idempotency_key: str) -> Receipt:
    _effect("ro_lookup", idempotency_key)
    for hook in list(during_lookup):
        hook()
    return Receipt(receipt_id="lookup", amount=args.amount)


@tool(kind="spend", approval="never", approvers=["@finance-leads"], four_eyes=False)
def ro_charge(args: ChargeArgs, *, idempotency_key: str) -> Receipt:
    """Not idempotent: a crash after the effect leaves its outcome unknown."""
    _effect("ro_charge", idempotency_key)
    if flags["crash"]:
        flags["crash"] = False
        raise Crash("the process died right after charging")
    return Receipt(receipt_id=f"r-{idempotency_key}", amount=args.amount)


@tool(kind="spend", approvers=["@finance-leads"], four_eyes=False)
def ro_pay(args: ChargeArgs, *, idempotency_key: str) -> Receipt:
    """Always needs a finance lead's approval."""
    _effect("ro_pay", idempotency_key)
    return Receipt(receipt_id=f"p-{idempotency_key}", amount=args.amount)


def _check(item: str) -> str:
    effects.setdefault("ro_check", []).append(item)
    if flags["step_fails"]:
        raise ValueError(f"the price list for {item} is down")
    return item


def _note(text: str) -> str:
    effects.setdefault("ro_note", []).append(text)
    return text


@pipeline("ro_charge_job", input=Job)
def ro_charge_job(ctx: Context, job: Job) -> str:
    """A step, a non-idempotent charge, a step."""
    ctx.step("ro_before", _note, "before")
    receipt = ctx.tool(ro_charge, ChargeArgs(item=job.item, amount=job.amount))
    ctx.step("ro_after", _note, "after")
    return receipt.receipt_id


@pipeline("ro_flaky_job", input=Job)
def ro_flaky_job(ctx: Context, job: Job) -> dict[str, Any]:
    """A read tool, a step that fails while `flags["step_fails"]`, then a charge."""
    looked = ctx.tool(ro_lookup, ChargeArgs(item=job.item, amount=job.amount))
    checked = ctx.step("ro_check", _check, job.item)
    receipt = ctx.tool(ro_charge, ChargeArgs(item=checked, amount=looked.amount))
    return {"receipt": receipt.receipt_id}


@pipeline("ro_gated_job", input=Job)
def ro_gated_job(ctx: Context, job: Job) -> str:
    """A payment that waits for approval."""
    ctx.step("ro_before", _note, "before")
    return ctx.tool(ro_pay, ChargeArgs(item=job.item, amount=job.amount)).receipt_id


@pipeline("ro_ask_job", input=Job)
def ro_ask_job(ctx: Context, job: Job) -> int:
    """A question for a person."""
    answer = ctx.ask_human("ro_price", f"What should {job.item} cost?", output=Price)
    return answer.cents


@pipeline("ro_two_calls_job", input=Job)
def ro_two_calls_job(ctx: Context, job: Job) -> str:
    """A read tool (during which a cancel may land), then a charge."""
    ctx.tool(ro_lookup, ChargeArgs(item=job.item, amount=job.amount))
    return ctx.tool(ro_charge, ChargeArgs(item=job.item, amount=job.amount)).receipt_id


@pipeline("ro_stuck_job", input=Job)
def ro_stuck_job(ctx: Context, job: Job) -> str:
    """Needs attention (no unknown call) while `flags["stuck"]`: a case for Retry."""
    ctx.step("ro_before", _note, "before")
    if flags.get("stuck"):
        raise NeedsAttention("the upstream ledger answered with a state nobody expected")
    return "done"


class Verdict(BaseModel):
    kind: str
    confidence: float = Field(ge=0, le=1)


@pipeline("ro_lookup_then_ask_model", input=Job)
def ro_lookup_then_ask_model(ctx: Context, job: Job) -> str:
    """A read tool (during which a cancel may land), then a model call."""
    ctx.tool(ro_lookup, ChargeArgs(item=job.item, amount=job.amount))
    verdict = ctx.llm("ro_classify", task="classify", prompt=job.item, output=Verdict)
    return verdict.kind
