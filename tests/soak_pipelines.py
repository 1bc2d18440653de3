"""The soak test's pipeline (tests/test_soak.py), loaded by its worker and server processes.

`soak_payout` is three calls: a step, a gated non-idempotent tool, a step. The tool's effect is
a POST to the test's effect service (`SOAK_EFFECTS_URL`), which counts every attempt by
idempotency key on its own, apart from the engine's tables: a tool effect that happened twice
shows up there as two attempts, whatever the engine recorded. Payouts over 100 need an approval
from @finance-leads that expires after `SOAK_APPROVAL_EXPIRES` (default 6s).
"""

from __future__ import annotations

import http.client
import json
import os
import time
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from pipelines import Context, pipeline, tool, when

EFFECTS_ENV = "SOAK_EFFECTS_URL"
EXPIRES_ENV = "SOAK_APPROVAL_EXPIRES"
PAUSE_ENV = "SOAK_TOOL_PAUSE"  # seconds the tool dwells after its effect, before it returns


class Payout(BaseModel):
    tag: str
    amount: int


class PayArgs(BaseModel):
    tag: str
    amount: int


class Paid(BaseModel):
    receipt: str


def record_effect(idempotency_key: str, amount: int) -> None:
    """One attempt of the effect, counted by the effect service (refused loudly if absent)."""
    url = urlsplit(os.environ[EFFECTS_ENV])
    body = json.dumps({"key": idempotency_key, "amount": amount, "pid": os.getpid()})
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("POST", "/effect", body=body, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        reply.read()
        if reply.status != 200:
            raise RuntimeError(f"effect service answered {reply.status}")
    finally:
        conn.close()


@tool(
    kind="spend",
    approval=when(lambda a: a.amount > 100),
    approvers=["@finance-leads"],
    expires=os.environ.get(EXPIRES_ENV, "6s"),
)
def soak_pay(args: PayArgs, *, idempotency_key: str) -> Paid:
    """Pay out (not idempotent: a repeat would pay twice)."""
    record_effect(idempotency_key, args.amount)
    time.sleep(float(os.environ.get(PAUSE_ENV, "0.01")))  # a window for SIGKILL after the effect
    return Paid(receipt=f"paid-{args.tag}-{args.amount}")


def _prepare(tag: str) -> str:
    return f"prepared-{tag}"


def _summarize(receipt: str) -> str:
    return f"done: {receipt}"


@pipeline("soak_payout", input=Payout)
def soak_payout(ctx: Context, inp: Payout) -> dict[str, Any]:
    prepared = ctx.step("prepare", _prepare, inp.tag)
    paid = ctx.tool(soak_pay, PayArgs(tag=inp.tag, amount=inp.amount))
    return {"prepared": prepared, "summary": ctx.step("summarize", _summarize, paid.receipt)}
