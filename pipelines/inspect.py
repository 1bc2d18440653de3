"""Looking at runs: one run with everything recorded about it, lists, what waits for people."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipelines.approval_nudges import with_nudges
from pipelines.errors import UnknownApproval, UnknownTask
from pipelines.pruned import missing_run
from pipelines.quorum import with_quorum
from pipelines.runtime import Runtime
from pipelines.sensitive import mask
from pipelines.views import ApprovalView, CallView, Run, TaskView, iso
from storage import queries
from storage.approvals import fetch_approval, fetch_task
from storage.models import ApprovalStatus, RunStatus, TaskStatus
from storage.runs import fetch_run


def get_run(rt: Runtime, run_id: str) -> Run:
    with rt.db.transaction() as conn:
        row = fetch_run(conn, run_id)
        if row is None:
            raise missing_run(conn, run_id)
        calls = [CallView.of(c) for c in queries.all_calls(conn, run_id)]
        approvals = with_nudges(
            conn,
            [
                ApprovalView.of(a, pipeline=row.pipeline)
                for a in queries.approvals_of_run(conn, run_id)
            ],
        )
        approvals = with_quorum(conn, approvals)
        tasks = [
            TaskView.of(t, pipeline=row.pipeline, authorization=rt.authorization)
            for t in queries.tasks_of_run(conn, run_id)
        ]
        reason = None
        if row.status == RunStatus.WAITING:
            events = queries.events_of_run(conn, run_id)
            reason = events[-1].detail if events else None
    waiting = [a.id for a in approvals if a.status == ApprovalStatus.PENDING]
    waiting += [t.id for t in tasks if t.status == TaskStatus.OPEN]
    return Run.of(
        row,
        calls=calls,
        approvals=approvals,
        tasks=tasks,
        waiting_for=waiting,
        waiting_reason=reason,
    )


def get_task(rt: Runtime, task_id: str) -> TaskView:
    with rt.db.transaction() as conn:
        row = fetch_task(conn, task_id)
        run = fetch_run(conn, row.run_id) if row is not None else None
    if row is None:
        raise UnknownTask(f"no human task {task_id}; `gatehouse pending` lists the open ones")
    return TaskView.of(row, pipeline=run.pipeline if run else None, authorization=rt.authorization)


def get_approval(rt: Runtime, approval_id: str) -> ApprovalView:
    with rt.db.transaction() as conn:
        row = fetch_approval(conn, approval_id)
        run = fetch_run(conn, row.run_id) if row is not None else None
        if row is None:
            raise UnknownApproval(
                f"no approval {approval_id}; `gatehouse pending` lists the open ones"
            )
        [view] = with_nudges(conn, [ApprovalView.of(row, pipeline=run.pipeline if run else None)])
        [view] = with_quorum(conn, [view])
    return view


def list_runs(
    rt: Runtime,
    *,
    pipeline: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 20,
) -> list[Run]:
    with rt.db.transaction() as conn:
        rows = queries.list_runs(conn, pipeline=pipeline, status=status, since=since, limit=limit)
    return [Run.of(r) for r in rows]


def pending(rt: Runtime) -> list[ApprovalView | TaskView]:
    """Approvals and human tasks waiting for somebody, oldest first."""
    with rt.db.transaction() as conn:
        approvals: list[ApprovalView | TaskView] = list(
            with_quorum(
                conn,
                with_nudges(
                    conn,
                    [
                        ApprovalView.of(r, pipeline=r.pipeline)
                        for r in queries.pending_approvals(conn)
                    ],
                ),
            )
        )
        tasks = [
            TaskView.of(r, pipeline=r.pipeline, authorization=rt.authorization)
            for r in queries.open_tasks(conn)
        ]
    items = approvals + tasks
    return sorted(
        items,
        key=lambda item: item.requested_at if isinstance(item, ApprovalView) else item.opened_at,
    )


def run_history(rt: Runtime, run_id: str) -> dict[str, Any]:
    """State transitions and audit entries of a run (for `gatehouse run` and the demo)."""
    with rt.db.transaction() as conn:
        events = queries.events_of_run(conn, run_id)
        audit = queries.audit_of_run(conn, run_id)
    return {
        "transitions": [
            {"from": e.from_status, "to": e.to_status, "at": iso(e.at), "detail": e.detail}
            for e in events
        ],
        "audit": [
            {
                "id": a.id,
                "at": iso(a.at),
                "event": a.event,
                "actor": a.actor,
                "tool": a.tool,
                "call_id": a.call_id,
                "approval_id": a.approval_id,
                "idempotency_key": a.idempotency_key,
                "detail": mask(a.detail),
            }
            for a in audit
        ],
    }
