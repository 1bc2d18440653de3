"""How a gated call ended, for its approval card: the outcome (the tool's result in its own words,
or the error, or that nobody knows), whether it can be undone, and its undo.

Both ends are here. The owing end, `owe_card_update`, writes the approval's outbox row in the
transaction that records the call's outcome or its undo, so a restart between the call and the
card's update still ends with the card showing it. The showing end, `with_outcome`, reads the
call (and its reversals) when the outbox delivers the card, so the card shows what is true then.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection

from pipelines import sensitive
from pipelines.runtime import Runtime
from pipelines.tools import Tool, lookup_tool
from pipelines.views import ApprovalView
from storage import approvals as approval_rows
from storage import calls as call_rows
from storage import queries
from storage.calls import CallRecord
from storage.models import CallKind, CallStatus

log = structlog.get_logger()

# What the outbox owes the approval's card when its call ends or is undone: the same event as a
# decision, since the card is re-rendered whole from the approval's state at delivery.
CARD_EVENT = "approval_decided"
SUMMARY_LIMIT = 300

_UNDO_EVENTS = {"tool.reverse_started", "tool.reversed", "tool.reverse_failed"}


@dataclass(frozen=True)
class UndoView:
    """The latest undo of a call: who asked, when, and how it went (`started`, `succeeded`,
    `failed` with its error)."""

    call_id: str
    status: str
    by: str | None
    at: datetime
    error: str | None = None


@dataclass(frozen=True)
class CallOutcome:
    """A gated call as it stands: `status` is the call's (`started`, `succeeded`, `failed`,
    `outcome_unknown`, …); `summary` the tool's own line (`@tool(summary=...)`), else None and
    `result` (masked) is shown; `reversible` when the tool declares `reverse=` and the call
    succeeded; `undo` the latest undo, if any."""

    call_id: str
    tool: str
    status: str
    summary: str | None
    result: Any
    error: str | None
    finished_at: datetime | None
    reversible: bool
    undo: UndoView | None = None

    @property
    def undone(self) -> bool:
        return self.undo is not None and self.undo.status == CallStatus.SUCCEEDED

    @property
    def can_undo(self) -> bool:
        """Offer Undo: reversible, and not undone or being undone (a failed undo may be retried)."""
        return self.reversible and (self.undo is None or self.undo.status == CallStatus.FAILED)


def owe_card_update(rt: Runtime, conn: Connection, call_id: str, now: datetime) -> str | None:
    """In the transaction that records a call's outcome or undo: owe its approval card an update
    (an outbox row). Returns the approval id, or None when no person approved this call."""
    approval = approval_rows.approval_for_call(conn, call_id)
    if approval is None:
        return None
    rt.enqueue(conn, CARD_EVENT, approval.id, now)
    return approval.id


def nudge_card(rt: Runtime, approval_id: str | None) -> None:
    """After the commit: let the outbox sender deliver the card now. Only a sender: a local
    notifier (the terminal) already reports the call's outcome itself."""
    if approval_id is not None and rt.sender is not None:
        rt.sender.nudge(approval_id)


def with_outcome(rt: Runtime, approval: ApprovalView) -> ApprovalView:
    """The approval's view carrying its call's outcome, when the call has one to show."""
    if approval.status != "approved":
        return approval
    outcome = outcome_of(rt, approval.call_id)
    return replace(approval, outcome=outcome) if outcome is not None else approval


def outcome_of(rt: Runtime, call_id: str) -> CallOutcome | None:
    """The call's outcome and undo, or None while it has not started."""
    with rt.db.transaction() as conn:
        call = call_rows.fetch_call(conn, call_id)
        if call is None or call.status in (
            CallStatus.AWAITING_APPROVAL,
            CallStatus.RATE_LIMITED,
        ):
            return None
        undo = _latest_undo(conn, call)
    tool = lookup_tool(call.name)
    succeeded = call.status == CallStatus.SUCCEEDED
    masked = sensitive.mask(call.output)
    return CallOutcome(
        call_id=call.id,
        tool=call.name,
        status=str(call.status),
        summary=_summary(tool, call) if succeeded else None,
        result=masked,
        error=call.error,
        finished_at=call.finished_at,
        reversible=succeeded and tool is not None and tool.reverse is not None,
        undo=undo,
    )


def _summary(tool: Tool | None, call: CallRecord) -> str | None:
    """The tool's own line for its result; None without `summary=` or when it cannot be had
    (the card then shows the result's fields)."""
    if tool is None or tool.summary is None:
        return None
    try:
        args = tool.args_model.model_validate(call.input)
        result = tool.result_adapter.validate_python(call.output)
        text = str(tool.summary(args, result))
    except Exception as exc:  # a summary that breaks must not keep the card from its outcome
        log.warning("tool.summary_failed", tool=tool.name, call_id=call.id, error=str(exc))
        return None
    text = " ".join(sensitive.scrub(text).split())
    return text[:SUMMARY_LIMIT] or None


def _latest_undo(conn: Connection, call: CallRecord) -> UndoView | None:
    """The newest reversal of `call` (`pipelines.reversal` records each as its own call), with
    who asked for it from the audit log."""
    reversals = [
        c
        for c in queries.all_calls(conn, call.run_id)
        if c.kind == CallKind.REVERSAL and isinstance(c.input, dict)
        if c.input.get("undoes") == call.id
    ]
    if not reversals:
        return None
    latest = max(reversals, key=lambda c: (c.started_at, c.id))
    actor = next(
        (
            entry.actor
            for entry in queries.audit_of_run(conn, call.run_id)
            if entry.call_id == latest.id and entry.event in _UNDO_EVENTS
        ),
        None,
    )
    return UndoView(
        call_id=latest.id,
        status=str(latest.status),
        by=actor,
        at=latest.finished_at or latest.started_at,
        error=latest.error,
    )
