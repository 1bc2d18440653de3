"""Pipelines and tools the engine behaviour tests drive (tests/test_engine_*.py).

Every name starts with `t_`: registration is global and other test modules register their own.
Executions are counted in `executions` and effects kept in `effects`; `reset()` clears both and
the `flags` that switch a pipeline's behaviour (a changed pipeline, a crashing tool).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field

from pipelines import ActionRejected, Context, Gatehouse, StaticDirectory, pipeline, tool, when
from pipelines.errors import StepFailed
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier

GROUPS = {"finance-leads": ["alice", "bob"], "ops": ["olga"]}

executions: Counter[str] = Counter()
effects: dict[str, list[Any]] = {}
flags: dict[str, Any] = {}
DEFAULT_FLAGS: dict[str, Any] = {
    "variant": "normal",  # t_checkout: "normal" | "extra_step" | "stop_early" | "shout"
    "crash": False,  # t_charge / t_charge_once raise Crash after their effect
    "reverse_fails": False,  # t_credit's reverse raises
    "crash_in_step": None,  # the `count` step of this name raises Crash before returning
}


def reset() -> None:
    executions.clear()
    effects.clear()
    flags.clear()
    flags.update(DEFAULT_FLAGS)


reset()


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the engine records it."""


@contextmanager
def engines(url: str, clock: FakeClock) -> Iterator[Any]:
    """A factory of Gatehouse objects on one database (separate engines, like separate
    processes), all disposed at the end."""
    made: list[Gatehouse] = []

    def make(
        worker_id: str,
        *,
        notifier: RecordingNotifier | None = None,
        lease: timedelta = timedelta(minutes=5),
    ) -> Gatehouse:
        gh = Gatehouse(
            url,
            clock=clock,
            notifier=notifier or RecordingNotifier(),
            directory=StaticDirectory(GROUPS),
            worker_id=worker_id,
            lease=lease,
        )
        made.append(gh)
        return gh

    try:
        yield make
    finally:
        for gh in made:
            gh.db.dispose()


# -- models -------------------------------------------------------------------------------


class Order(BaseModel):
    item: str = Field(default="widget", min_length=1)
    amount: int = Field(default=10, ge=0)


class Quote(BaseModel):
    item: str
    price_cents: int


class PayArgs(BaseModel):
    item: str
    amount: int


class Receipt(BaseModel):
    receipt_id: str
    amount: int


class Lookup(BaseModel):
    item: str


class Stock(BaseModel):
    item: str
    in_stock: int


class PriceAnswer(BaseModel):
    price_cents: int = Field(gt=0)
    note: str = ""


# -- tools --------------------------------------------------------------------------------


def _receipt(name: str, args: PayArgs, idempotency_key: str) -> Receipt:
    executions[name] += 1
    effects.setdefault(name, []).append((args.item, args.amount, idempotency_key))
    return Receipt(receipt_id=f"r-{idempotency_key}", amount=args.amount)


@tool(kind="read")
def t_lookup(args: Lookup, *, idempotency_key: str) -> Stock:
    executions["t_lookup"] += 1
    return Stock(item=args.item, in_stock=3)


@tool(kind="spend", approvers=["@finance-leads", "dave"])
def t_pay(args: PayArgs, *, idempotency_key: str) -> Receipt:
    """Always needs approval by a finance lead or dave."""
    return _receipt("t_pay", args, idempotency_key)


@tool(
    kind="spend",
    approval=when(lambda a: a.amount > 100, "the amount is over 100"),
    approvers=["@finance-leads"],
    four_eyes=True,
)
def t_pay_big(args: PayArgs, *, idempotency_key: str) -> Receipt:
    """Approval above 100 only; the trigger user may not approve (four-eyes)."""
    return _receipt("t_pay_big", args, idempotency_key)


@tool(kind="send", approvers=["@ops"], expires="1h")
def t_page_ops(args: PayArgs, *, idempotency_key: str) -> Receipt:
    return _receipt("t_page_ops", args, idempotency_key)


@tool(kind="send", approvers=["@ops"], expires="1h", on_expiry="cancel")
def t_page_ops_or_cancel(args: PayArgs, *, idempotency_key: str) -> Receipt:
    return _receipt("t_page_ops_or_cancel", args, idempotency_key)


@tool(kind="send", approval="never", rate_limit="2/hour")
def t_limited(args: PayArgs, *, idempotency_key: str) -> Receipt:
    return _receipt("t_limited", args, idempotency_key)


@tool(kind="send", approval="never", rate_limit="2/hour", on_rate_limit="reject")
def t_limited_or_reject(args: PayArgs, *, idempotency_key: str) -> Receipt:
    return _receipt("t_limited_or_reject", args, idempotency_key)


@tool(kind="spend", approval="never")
def t_charge(args: PayArgs, *, idempotency_key: str) -> Receipt:
    """Not idempotent: a crash in the middle leaves its outcome unknown."""
    receipt = _receipt("t_charge", args, idempotency_key)
    if flags["crash"]:
        flags["crash"] = False
        raise Crash("the process died right after charging")
    return receipt


@tool(kind="spend", approval="never", idempotent=True)
def t_charge_once(args: PayArgs, *, idempotency_key: str) -> Receipt:
    """Idempotent: the same key charges once, however often it is called."""
    executions["t_charge_once"] += 1
    ledger: list[Any] = effects.setdefault("t_charge_once", [])
    if not any(key == idempotency_key for _, _, key in ledger):
        ledger.append((args.item, args.amount, idempotency_key))
    if flags["crash"]:
        flags["crash"] = False
        raise Crash("the process died right after charging")
    return Receipt(receipt_id=f"r-{idempotency_key}", amount=args.amount)


def reverse_credit(args: PayArgs, result: Receipt, *, idempotency_key: str) -> None:
    executions["reverse_credit"] += 1
    if flags["reverse_fails"]:
        raise ConnectionError("the ledger is down")
    effects.setdefault("reversed", []).append((result.receipt_id, idempotency_key))


@tool(kind="write", approval="never", approvers=["@finance-leads"], reverse=reverse_credit)
def t_credit(args: PayArgs, *, idempotency_key: str) -> Receipt:
    return _receipt("t_credit", args, idempotency_key)


@tool(kind="write", approval="never")
def t_stamp(args: PayArgs, *, idempotency_key: str) -> Receipt:
    """No reverse: cannot be undone."""
    return _receipt("t_stamp", args, idempotency_key)


# -- step functions -----------------------------------------------------------------------


def make_quote(item: str, amount: int) -> Quote:
    executions["make_quote"] += 1
    return Quote(item=item, price_cents=amount * 100)


def confirm(receipt_id: str) -> str:
    executions["confirm"] += 1
    return f"confirmed {receipt_id}"


def extra() -> int:
    executions["extra"] += 1
    return 1


def explode(item: str) -> int:
    executions["explode"] += 1
    raise ValueError(f"no price list for {item}")


def escalate(reason: str) -> str:
    executions["escalate"] += 1
    return f"escalated: {reason}"


def count(name: str) -> str:
    executions[name] += 1
    if flags["crash_in_step"] == name:
        flags["crash_in_step"] = None
        raise Crash(f"the process died inside step {name}")
    return name


# -- pipelines ----------------------------------------------------------------------------


@pipeline("t_checkout", input=Order)
def t_checkout(ctx: Context, order: Order) -> dict[str, Any]:
    """step (returns a model) → read tool → approved spend tool → step; `flags["variant"]`
    changes the call sequence or the output between suspension and resume."""
    quote = ctx.step("t_quote", make_quote, order.item, order.amount)
    if flags["variant"] == "stop_early":
        return {"stopped": True}
    stock = ctx.tool(t_lookup, Lookup(item=quote.item))
    if flags["variant"] == "extra_step":
        ctx.step("t_extra", extra)
    receipt = ctx.tool(t_pay, PayArgs(item=quote.item, amount=quote.price_cents))
    confirmation = ctx.step("t_confirm", confirm, receipt.receipt_id)
    result = {
        "quote_type": type(quote).__name__,
        "stock_type": type(stock).__name__,
        "receipt_type": type(receipt).__name__,
        "price_cents": quote.price_cents,
        "confirmation": confirmation,
    }
    if flags["variant"] == "shout":
        result["confirmation"] = confirmation.upper()
    return result


@pipeline("t_failing_step", input=Order)
def t_failing_step(ctx: Context, order: Order) -> int:
    """A step that raises, uncaught: the run fails."""
    return ctx.step("t_explode", explode, order.item)


@pipeline("t_recovering_step", input=Order)
def t_recovering_step(ctx: Context, order: Order) -> dict[str, Any]:
    """Catches a failed step and carries on to an approval: the same route on every replay."""
    try:
        ctx.step("t_explode", explode, order.item)
        route = "priced"
    except StepFailed as failed:
        route = f"fallback after {failed.error}"
    receipt = ctx.tool(t_pay, PayArgs(item=order.item, amount=order.amount))
    return {"route": route, "receipt": receipt.receipt_id}


@pipeline("t_pay_or_escalate", input=Order)
def t_pay_or_escalate(ctx: Context, order: Order) -> dict[str, Any]:
    """A rejected payment is routed to an escalation step instead of failing the run."""
    try:
        receipt = ctx.tool(t_pay, PayArgs(item=order.item, amount=order.amount))
    except ActionRejected as rejected:
        note = ctx.step("t_escalate", escalate, rejected.reason)
        return {"status": "escalated", "note": note}
    return {"status": "paid", "receipt": receipt.receipt_id}


@pipeline("t_pay_only", input=Order)
def t_pay_only(ctx: Context, order: Order) -> str:
    receipt = ctx.tool(t_pay, PayArgs(item=order.item, amount=order.amount))
    return str(receipt.receipt_id)


@pipeline("t_big_payment", input=Order)
def t_big_payment(ctx: Context, order: Order) -> str:
    receipt = ctx.tool(t_pay_big, PayArgs(item=order.item, amount=order.amount))
    return str(receipt.receipt_id)


@pipeline("t_page", input=Order)
def t_page(ctx: Context, order: Order) -> str:
    return str(ctx.tool(t_page_ops, PayArgs(item=order.item, amount=order.amount)).receipt_id)


@pipeline("t_page_or_cancel", input=Order)
def t_page_or_cancel(ctx: Context, order: Order) -> str:
    args = PayArgs(item=order.item, amount=order.amount)
    return str(ctx.tool(t_page_ops_or_cancel, args).receipt_id)


@pipeline("t_limited_send", input=Order)
def t_limited_send(ctx: Context, order: Order) -> str:
    return str(ctx.tool(t_limited, PayArgs(item=order.item, amount=order.amount)).receipt_id)


@pipeline("t_limited_send_or_reject", input=Order)
def t_limited_send_or_reject(ctx: Context, order: Order) -> str:
    args = PayArgs(item=order.item, amount=order.amount)
    return str(ctx.tool(t_limited_or_reject, args).receipt_id)


@pipeline("t_crashing_charge", input=Order)
def t_crashing_charge(ctx: Context, order: Order) -> str:
    ctx.step("t_before", count, "before_charge")
    receipt = ctx.tool(t_charge, PayArgs(item=order.item, amount=order.amount))
    ctx.step("t_after", count, "after_charge")
    return str(receipt.receipt_id)


@pipeline("t_crashing_idempotent_charge", input=Order)
def t_crashing_idempotent_charge(ctx: Context, order: Order) -> str:
    ctx.step("t_before", count, "before_charge")
    receipt = ctx.tool(t_charge_once, PayArgs(item=order.item, amount=order.amount))
    ctx.step("t_after", count, "after_charge")
    return str(receipt.receipt_id)


@pipeline("t_ask_price", input=Order)
def t_ask_price(ctx: Context, order: Order) -> dict[str, Any]:
    ctx.step("t_before", count, "before_question")
    answer = ctx.ask_human(
        "t_price",
        f"What should {order.item} cost?",
        output=PriceAnswer,
        context={"item": order.item},
        assignees=["@ops", "dave"],
    )
    ctx.step("t_after", count, "after_answer")
    return {"answer_type": type(answer).__name__, "price_cents": answer.price_cents}


@pipeline("t_credit_and_stamp", input=Order)
def t_credit_and_stamp(ctx: Context, order: Order) -> dict[str, str]:
    args = PayArgs(item=order.item, amount=order.amount)
    credit = ctx.tool(t_credit, args)
    stamp = ctx.tool(t_stamp, args)
    return {"credit": credit.receipt_id, "stamp": stamp.receipt_id}
