"""Reminders and escalation of an approval nobody decides, both ends: scheduled when the approval
is requested (`@tool(remind_after=…, escalate_after=…, escalate_to=…)`), taken by the worker's
sweep when due, and read back onto the approval's view.

Like expiry, each is a compare-and-set in the database (`storage.approval_nudges`): a reminder
or an escalation happens once however many workers sweep, and never for an approval that was
decided, expired, or is past its deadline (the worker expires before it nudges, and the
compare-and-set checks the deadline too). An escalation adds its group to the approval's stored
approvers, so the usual approver check (`pipelines.approvals.check_approver`, four-eyes
included) applies to the people it adds. Each is audited (`approval.reminded`,
`approval.escalated`) and owes the approval's card a delivery: the card shows it, and the
notifier posts the reminder or the escalation in the card's thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Literal

import structlog
from sqlalchemy import Connection

from pipelines.runtime import Runtime
from pipelines.tools import Tool
from pipelines.views import ApprovalView, Nudges
from storage import approval_nudges as nudge_rows
from storage import approvals as approval_rows
from storage import runs as run_rows
from storage.audit import append_audit

log = structlog.get_logger()

NudgeKind = Literal["reminded", "escalated"]


def schedule(conn: Connection, tool: Tool, approval_id: str, requested_at: datetime) -> None:
    """In the request's transaction: when this approval reminds and escalates (nothing for a
    tool that declares neither)."""
    if tool.remind_after is None and tool.escalate_after is None:
        return
    nudge_rows.insert_nudge(
        conn,
        approval_id=approval_id,
        remind_at=requested_at + tool.remind_after if tool.remind_after else None,
        reminded_at=None,
        escalate_at=requested_at + tool.escalate_after if tool.escalate_after else None,
        escalated_at=None,
        escalate_to=list(tool.escalate_to) or None,
    )


def nudge_due(rt: Runtime) -> list[tuple[NudgeKind, ApprovalView]]:
    """Send every reminder and escalation that is due (the worker's tick, after expiry)."""
    now = rt.clock.now()
    done: list[tuple[NudgeKind, ApprovalView]] = []
    with rt.db.transaction() as conn:
        due = nudge_rows.due_nudges(conn, now)
    reminders = [n.approval_id for n in due if n.reminded_at is None and _due(n.remind_at, now)]
    escalations = [
        n.approval_id for n in due if n.escalated_at is None and _due(n.escalate_at, now)
    ]
    for approval_id in reminders:
        view = _take(rt, approval_id, "reminded", now)
        if view is not None:
            done.append(("reminded", view))
    for approval_id in escalations:
        view = _take(rt, approval_id, "escalated", now)
        if view is not None:
            done.append(("escalated", view))
    return done


def _due(at: datetime | None, now: datetime) -> bool:
    return at is not None and at <= now


def _take(rt: Runtime, approval_id: str, kind: NudgeKind, now: datetime) -> ApprovalView | None:
    with rt.db.transaction() as conn:
        take = nudge_rows.take_reminder if kind == "reminded" else nudge_rows.take_escalation
        if not take(conn, approval_id, now):
            return None  # another sweeper took it, or it was decided or expired meanwhile
        approval = approval_rows.fetch_approval(conn, approval_id)
        nudge = nudge_rows.nudges_of(conn, [approval_id])[approval_id]
        assert approval is not None
        before = [str(a) for a in approval.approvers or []]
        detail: dict[str, object] = {"approvers": before}
        if kind == "escalated":
            added = [str(t) for t in nudge.escalate_to or [] if t not in before]
            after = before + added
            nudge_rows.set_approvers(conn, approval_id, after)
            approval = approval._replace(approvers=after)
            detail = {"added": added, "approvers": after}
        append_audit(
            conn,
            event="approval.reminded" if kind == "reminded" else "approval.escalated",
            at=now,
            actor=None,
            run_id=approval.run_id,
            call_id=approval.call_id,
            tool=approval.tool,
            approval_id=approval.id,
            detail=detail,
        )
        rt.enqueue(conn, "approval_requested", approval_id, now)
        run = run_rows.fetch_run(conn, approval.run_id)
    view = ApprovalView.of(approval, pipeline=run.pipeline if run else None)
    taken = (
        nudge._replace(reminded_at=now) if kind == "reminded" else nudge._replace(escalated_at=now)
    )
    view = replace(view, nudges=_nudges(taken))
    event = "approval.reminded" if kind == "reminded" else "approval.escalated"
    log.info(event, approval_id=approval_id, tool=approval.tool)
    rt.notify("approval_requested", view)
    return view


def _nudges(row: nudge_rows.NudgeRow) -> Nudges:
    return Nudges(
        remind_at=row.remind_at,
        reminded_at=row.reminded_at,
        escalate_at=row.escalate_at,
        escalated_at=row.escalated_at,
        escalate_to=tuple(str(t) for t in row.escalate_to or ()),
    )


def with_nudges(conn: Connection, views: Sequence[ApprovalView]) -> list[ApprovalView]:
    """The views with their reminder and escalation read in (those that have one)."""
    found = nudge_rows.nudges_of(conn, [v.id for v in views])
    return [replace(v, nudges=_nudges(found[v.id])) if v.id in found else v for v in views]
