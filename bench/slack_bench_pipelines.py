"""A pipeline for bench/slack_ack.py: one gated write, approvable by anyone, no rate limit."""

from __future__ import annotations

from pydantic import BaseModel

from pipelines import Context, pipeline, tool


class Ping(BaseModel):
    n: int


class Stamp(BaseModel):
    n: int


@tool(kind="write", approval="always", approvers="*")
def bench_stamp(args: Ping, *, idempotency_key: str) -> Stamp:
    return Stamp(n=args.n)


@pipeline("bench_slack_gate", input=Ping)
def bench_slack_gate(ctx: Context, ping: Ping) -> int:
    stamp: Stamp = ctx.tool(bench_stamp, ping)
    return stamp.n
