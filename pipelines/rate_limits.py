"""Rate limits, both ends: the gate a tool call passes to start (counted from the audit table in
the transaction that records the start, so every replica shares the limit), the wait or the
rejection when the window is full, and the headroom an approval card shows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import Connection

from pipelines import approvals, tracing
from pipelines.errors import ActionRejected, Suspend
from pipelines.journal import CallRecord, Journal, NextCall
from pipelines.runtime import Runtime
from pipelines.tools import Tool
from pipelines.validator import Judgement
from storage import calls as call_rows
from storage.models import CallStatus

log = structlog.get_logger()


def start(
    journal: Journal,
    tool: Tool,
    call: NextCall,
    args_json: Any,
    *,
    call_id: str | None = None,
    validated: Judgement | None = None,
    boundary: Callable[[Connection], None] | None = None,
) -> CallRecord:
    """Record the call `started` if its tool's window has room, in one transaction with the
    count; otherwise record it rate-limited and suspend the run until the window frees (or
    reject it, if the tool says so). `call_id`: the call is recorded already (it waited for an
    approval or a window) and is updated; `validated`: the validator let it through;
    `boundary`: the call boundary's check, made first in the transaction (it raises to stop the
    call, and nothing is committed)."""
    now = journal.rt.clock.now()
    rejected: str | None = None
    wake_at = None
    # Without a rate limit every statement here is a `storage.fastsql` one (the call's row and
    # its audit entry), so the driver's own transaction does; a limit's count needs SQLAlchemy's.
    opened = journal.transaction() if tool.rate_limit is not None else journal.fast_transaction()
    with opened as conn:
        if boundary is not None:
            boundary(conn)
        decision = call_rows.check_rate_limit(conn, tool=tool.name, now=now, limit=tool.rate_limit)
        tracing.annotate(
            {
                "gatehouse.idempotency_key": call.idempotency_key,
                "gatehouse.rate_limit": tool.rate_limit_text,
                "gatehouse.rate_limit.used": decision.used if tool.rate_limit else None,
            }
        )
        if decision.started:
            status = CallStatus.STARTED
        elif tool.on_rate_limit == "reject":
            status = CallStatus.REJECTED
            rejected = (
                f"rate limit {tool.rate_limit_text} reached ({decision.used} calls in the window)"
            )
        else:
            status = CallStatus.RATE_LIMITED
            wake_at = decision.retry_at
        finished_at = now if rejected else None
        record = call.record(
            status,
            input=args_json,
            idempotency_key=call.idempotency_key,
            started_at=now,
            call_id=call_id,
            wake_at=wake_at,
            error=rejected,
            finished_at=finished_at,
        )
        if call_id is None:
            if validated is not None:
                approvals.audit_validator_approval(journal, conn, record, validated, now)
            call_rows.insert_call(conn, record)
        else:
            call_rows.update_call(
                conn,
                call_id,
                status=status,
                wake_at=wake_at,
                error=rejected,
                finished_at=finished_at,
            )
        if decision.started:
            event, detail = "tool.started", {"args": args_json, "kind": tool.kind}
        elif rejected is not None:
            event, detail = "tool.rate_limited", {"rejected": True, "used": decision.used}
        else:
            event = "tool.rate_limited"
            detail = {"retry_at": wake_at.isoformat() if wake_at else None, "used": decision.used}
        journal.audit(conn, record, event, at=now, actor=journal.trigger_user, detail=detail)
        if not decision.started and rejected is None:
            journal.suspend(conn, now, f"rate limit of {tool.name}", wake_at=wake_at)
    if rejected is not None:
        raise ActionRejected(tool.name, rejected)
    if not decision.started:
        log.info("tool.rate_limited", run_id=journal.run_id, tool=tool.name, retry_at=str(wake_at))
        raise Suspend(f"rate limit of {tool.name} until {wake_at}", wake_at=wake_at)
    return record


def rate_limit_headroom(rt: Runtime, tool: Tool) -> str | None:
    """ "20/hour, 3 used" for an approval card; None for a tool without a rate limit."""
    if tool.rate_limit is None:
        return None
    since = rt.clock.now() - tool.rate_limit.period
    with rt.db.transaction() as conn:
        used = call_rows.count_tool_starts(conn, tool.name, since)
    return f"{tool.rate_limit_text}, {used} used in the window"
