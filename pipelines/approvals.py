"""Approvals: who may decide, the compare-and-set decision, and expiry at the deadline.

Every refusal (not an approver, four-eyes) is written to the audit log before it is raised
(`pipelines.authorization.refuse`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection

from pipelines.authorization import may_act, refuse
from pipelines.errors import (
    AlreadyDecided,
    FourEyesViolation,
    NotAnApprover,
    NotAuthorized,
    ReasonRequired,
    UnknownApproval,
)
from pipelines.runtime import Runtime
from pipelines.views import ApprovalView
from storage import approvals as approval_rows
from storage import runs as run_rows
from storage.audit import append_audit
from storage.models import ApprovalStatus, RunStatus

log = structlog.get_logger()


def check_approver(rt: Runtime, approval: Any, user: str) -> None:
    approvers = list(approval.approvers or [])
    if not may_act(rt, user, approvers):
        raise NotAnApprover(
            f"{user} may not approve {approval.tool} (approval {approval.id}); "
            f"approvers: {', '.join(approvers)}"
        )
    if approval.four_eyes and approval.trigger_user is not None and user == approval.trigger_user:
        raise FourEyesViolation(
            f"{user} triggered run {approval.run_id} and may not approve its own {approval.tool} "
            f"(four-eyes); ask another approver"
            + (f" from {', '.join(approvers)}" if approvers else "")
        )


def _already_decided_message(approval: Any) -> str:
    if approval.status == ApprovalStatus.EXPIRED:
        return f"approval {approval.id} expired at {approval.decided_at:%Y-%m-%d %H:%M} UTC; nothing to decide"
    when = f" at {approval.decided_at:%Y-%m-%d %H:%M} UTC" if approval.decided_at else ""
    return f"approval {approval.id} was already {approval.status} by {approval.decided_by}{when}"


def decide(
    rt: Runtime, approval_id: str, *, user: str, approve: bool, reason: str | None = None
) -> ApprovalView:
    """Approve or reject once. Two concurrent decisions: one wins, the other gets AlreadyDecided."""
    if not approve and not (reason and reason.strip()):
        raise ReasonRequired(f'rejecting {approval_id} needs a reason (--reason "...")')
    with rt.db.transaction() as conn:
        approval = approval_rows.fetch_approval(conn, approval_id)
    if approval is None:
        raise UnknownApproval(f"no approval {approval_id}; `gatehouse pending` lists the open ones")
    if approval.status != ApprovalStatus.PENDING:
        raise AlreadyDecided(_already_decided_message(approval))
    if approval.expires_at is not None and approval.expires_at <= rt.clock.now():
        # Past its deadline but not swept yet (no worker running): expire it now, as the
        # worker would have, instead of letting a late click approve it.
        expire_due(rt)
        with rt.db.transaction() as conn:
            approval = approval_rows.fetch_approval(conn, approval_id)
        raise AlreadyDecided(_already_decided_message(approval))
    try:
        check_approver(rt, approval, user)
    except NotAuthorized as refusal:
        refuse(
            rt,
            refusal,
            actor=user,
            action="approve" if approve else "reject",
            target=approval.id,
            run_id=approval.run_id,
            call_id=approval.call_id,
            tool=approval.tool,
            approval_id=approval.id,
        )
    status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
    now = rt.clock.now()
    with rt.db.transaction() as conn:
        won = approval_rows.decide_approval(
            conn,
            approval_id,
            status=status,
            by=user,
            at=now,
            reason=reason if not approve else reason or None,
        )
        if won:
            _record_decision(conn, approval, status, actor=user, now=now, detail={"reason": reason})
            rt.enqueue(conn, "approval_decided", approval_id, now)
        decided = approval_rows.fetch_approval(conn, approval_id)
        run = run_rows.fetch_run(conn, approval.run_id)
    assert decided is not None
    if not won:
        if decided.status == ApprovalStatus.PENDING:  # the deadline passed under our feet
            expire_due(rt)
            with rt.db.transaction() as conn:
                decided = approval_rows.fetch_approval(conn, approval_id)
        raise AlreadyDecided(_already_decided_message(decided))
    view = ApprovalView.of(decided, pipeline=run.pipeline if run else None)
    log.info("approval.decided", approval_id=approval_id, status=str(status), user=user)
    rt.notify("approval_decided", view)
    return view


def expire_due(rt: Runtime) -> list[ApprovalView]:
    """Expire every pending approval past its deadline; their runs are queued to see it."""
    now = rt.clock.now()
    expired: list[ApprovalView] = []
    with rt.db.transaction() as conn:
        due = approval_rows.due_expiries(conn, now)
    for approval_id in due:
        with rt.db.transaction() as conn:
            if not approval_rows.decide_approval(
                conn,
                approval_id,
                status=ApprovalStatus.EXPIRED,
                by=None,
                at=now,
                reason="expired without a decision",
            ):
                continue
            approval = approval_rows.fetch_approval(conn, approval_id)
            assert approval is not None
            run = run_rows.fetch_run(conn, approval.run_id)
            _record_decision(
                conn, approval, ApprovalStatus.EXPIRED, actor=None, now=now, detail=None
            )
            rt.enqueue(conn, "approval_decided", approval_id, now)
        view = ApprovalView.of(approval, pipeline=run.pipeline if run else None)
        log.info("approval.expired", approval_id=approval_id)
        rt.notify("approval_decided", view)
        expired.append(view)
    return expired


def _record_decision(
    conn: Connection,
    approval: Any,
    status: ApprovalStatus,
    *,
    actor: str | None,
    now: datetime,
    detail: Any,
) -> None:
    """In the deciding transaction: audit the decision and queue the run to act on it."""
    append_audit(
        conn,
        event=f"approval.{status}",
        at=now,
        actor=actor,
        run_id=approval.run_id,
        call_id=approval.call_id,
        tool=approval.tool,
        approval_id=approval.id,
        detail=detail,
    )
    run_rows.transition(
        conn,
        approval.run_id,
        from_statuses=[RunStatus.WAITING],
        to_status=RunStatus.QUEUED,
        now=now,
        detail=f"approval {approval.id} {status}",
        wake_at=None,
    )
