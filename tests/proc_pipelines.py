"""Pipelines and tools for the multi-process tests (every name starts with `p_`).

Every execution of a step or a tool, and every effect a tool has, appends one JSON line to the
ledger file named by `P_LEDGER`, so counts add up across processes (an `O_APPEND` write of a
short line lands whole). `P_CRASH_AT` (`before` | `inside` | `after` | `between`) makes the process die at
that point: with `P_CRASH_HOW=self` it SIGKILLs itself; otherwise it drops a marker file
(`crash-<point>-<pid>` beside the ledger) and blocks until the test SIGKILLs it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipelines import Context, pipeline, tool

LEDGER_ENV = "P_LEDGER"
CRASH_AT_ENV = "P_CRASH_AT"
CRASH_HOW_ENV = "P_CRASH_HOW"
BLOCK_LIMIT_SECONDS = 60.0  # a blocked child nobody killed gives up on its own


def ledger_path() -> Path:
    path = os.environ.get(LEDGER_ENV)
    if not path:
        raise RuntimeError(f"{LEDGER_ENV} must name the ledger file the process tests count with")
    return Path(path)


def note(what: str, name: str, run: str, key: str | None = None) -> None:
    """Append one ledger line: what happened (step/attempt/effect), to which run, in which pid."""
    line = json.dumps({"what": what, "name": name, "run": run, "key": key, "pid": os.getpid()})
    fd = os.open(ledger_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def crash_marker(ledger: Path, point: str, pid: int) -> Path:
    return ledger.parent / f"crash-{point}-{pid}"


def maybe_crash(point: str) -> None:
    """Die here if the test asked for a crash at `point`."""
    if os.environ.get(CRASH_AT_ENV) != point:
        return
    if os.environ.get(CRASH_HOW_ENV) == "self":
        os.kill(os.getpid(), signal.SIGKILL)
    marker = crash_marker(ledger_path(), point, os.getpid())
    marker.with_suffix(".tmp").write_text(str(os.getpid()))
    marker.with_suffix(".tmp").rename(marker)
    deadline = time.monotonic() + BLOCK_LIMIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.05)
    os._exit(99)


def _effect_slot(idempotency_key: str) -> Path:
    safe = "".join(c if c.isalnum() else "_" for c in idempotency_key)
    return ledger_path().parent / f"effect-{safe}"


# -- models ------------------------------------------------------------------------------


class PInput(BaseModel):
    tag: str = "t"
    amount: int = 10


class PCrashInput(BaseModel):
    tag: str = "t"
    idempotent: bool = False


class PArgs(BaseModel):
    tag: str
    amount: int = 1


class PReceipt(BaseModel):
    receipt: str
    pid: int


def _run_of(idempotency_key: str) -> str:
    return idempotency_key.split(":", 1)[0]


# -- tools -------------------------------------------------------------------------------


@tool(kind="read")
def p_lookup(args: PArgs, *, idempotency_key: str) -> PReceipt:
    note("effect", "p_lookup", _run_of(idempotency_key), idempotency_key)
    return PReceipt(receipt=f"balance-{args.tag}", pid=os.getpid())


@tool(kind="spend", approvers=["@finance-leads"], four_eyes=True)
def p_pay(args: PArgs, *, idempotency_key: str) -> PReceipt:
    note("effect", "p_pay", _run_of(idempotency_key), idempotency_key)
    return PReceipt(receipt=f"paid-{args.tag}-{args.amount}", pid=os.getpid())


@tool(kind="send", approval="never")
def p_send(args: PArgs, *, idempotency_key: str) -> PReceipt:
    """Not idempotent: a second call would send a second message."""
    note("effect", "p_send", _run_of(idempotency_key), idempotency_key)
    maybe_crash("inside")
    return PReceipt(receipt=f"sent-{args.tag}", pid=os.getpid())


@tool(kind="write", approval="never", idempotent=True)
def p_upsert(args: PArgs, *, idempotency_key: str) -> PReceipt:
    """Idempotent: the effect is keyed by the idempotency key, so a retry changes nothing."""
    note("attempt", "p_upsert", _run_of(idempotency_key), idempotency_key)
    try:
        fd = os.open(_effect_slot(idempotency_key), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        pass
    else:
        os.close(fd)
        note("effect", "p_upsert", _run_of(idempotency_key), idempotency_key)
    maybe_crash("inside")
    return PReceipt(receipt=f"upserted-{args.tag}", pid=os.getpid())


@tool(kind="send", approval="never", rate_limit="3/hour")
def p_limited(args: PArgs, *, idempotency_key: str) -> PReceipt:
    note("effect", "p_limited", _run_of(idempotency_key), idempotency_key)
    return PReceipt(receipt=f"limited-{args.tag}", pid=os.getpid())


@tool(kind="write", approval="never")
def p_record(args: PArgs, *, idempotency_key: str) -> PReceipt:
    note("effect", "p_record", _run_of(idempotency_key), idempotency_key)
    return PReceipt(receipt=f"recorded-{args.tag}", pid=os.getpid())


# -- steps -------------------------------------------------------------------------------


def p_prepare(run_id: str, tag: str) -> str:
    note("step", "p_prepare", run_id)
    return f"prepared-{tag}"


def p_checkpoint(run_id: str) -> int:
    maybe_crash("before")
    note("step", "p_checkpoint", run_id)
    return os.getpid()


def p_after(run_id: str, receipt: str) -> str:
    maybe_crash("after")
    note("step", "p_after", run_id)
    return f"after-{receipt}"


def p_summarize(run_id: str, receipt: str) -> str:
    note("step", "p_summarize", run_id)
    return f"summary-{receipt}"


def p_middle(run_id: str, receipt: str) -> str:
    note("step", "p_middle", run_id)
    return f"middle-{receipt}"


def p_between(run_id: str, middle: str) -> str:
    maybe_crash("between")
    note("step", "p_between", run_id)
    return f"between-{middle}"


# -- pipelines ---------------------------------------------------------------------------


@pipeline("p_approval_flow", input=PInput)
def p_approval_flow(ctx: Context, inp: PInput) -> dict[str, Any]:
    """step → read tool → gated spend (approval by @finance-leads, four-eyes) → step."""
    prepared = ctx.step("p_prepare", p_prepare, ctx.run_id, inp.tag)
    balance = ctx.tool(p_lookup, PArgs(tag=inp.tag))
    paid = ctx.tool(p_pay, PArgs(tag=inp.tag, amount=inp.amount))
    summary = ctx.step("p_summarize", p_summarize, ctx.run_id, paid.receipt)
    return {
        "prepared": prepared,
        "balance": balance.receipt,
        "paid": paid.receipt,
        "summary": summary,
    }


@pipeline("p_crashable", input=PCrashInput)
def p_crashable(ctx: Context, inp: PCrashInput) -> dict[str, Any]:
    """step → step (crash point `before`) → tool (`inside`) → step (`after`)."""
    prepared = ctx.step("p_prepare", p_prepare, ctx.run_id, inp.tag)
    ctx.step("p_checkpoint", p_checkpoint, ctx.run_id)
    effect = p_upsert if inp.idempotent else p_send
    receipt = ctx.tool(effect, PArgs(tag=inp.tag))
    after = ctx.step("p_after", p_after, ctx.run_id, receipt.receipt)
    return {"prepared": prepared, "receipt": receipt.receipt, "after": after}


@pipeline("p_rate_limited", input=PInput)
def p_rate_limited(ctx: Context, inp: PInput) -> dict[str, Any]:
    receipt = ctx.tool(p_limited, PArgs(tag=inp.tag))
    return {"receipt": receipt.receipt}


@pipeline("p_counted", input=PInput)
def p_counted(ctx: Context, inp: PInput) -> dict[str, Any]:
    """One step and one write per run: the ledger shows each run executed exactly once."""
    prepared = ctx.step("p_prepare", p_prepare, ctx.run_id, inp.tag)
    receipt = ctx.tool(p_record, PArgs(tag=inp.tag))
    return {"prepared": prepared, "receipt": receipt.receipt}


@pipeline("p_steps_after_a_tool", input=PInput)
def p_steps_after_a_tool(ctx: Context, inp: PInput) -> dict[str, Any]:
    """step → write (a durable boundary) → step → step (crash point `between`) → the end."""
    prepared = ctx.step("p_prepare", p_prepare, ctx.run_id, inp.tag)
    receipt = ctx.tool(p_record, PArgs(tag=prepared))
    middle = ctx.step("p_middle", p_middle, ctx.run_id, receipt.receipt)
    between = ctx.step("p_between", p_between, ctx.run_id, middle)
    return {"prepared": prepared, "receipt": receipt.receipt, "between": between}
