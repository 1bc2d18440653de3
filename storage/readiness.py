"""Which runs have a complete record: the data `gatehouse ready` reads for its third question.

A run created in the window has a complete record when nothing in it is left unexplained:

- every call is finished (succeeded, failed, rejected) or says what it waits for: an
  `awaiting_approval` call has its approval row, an `awaiting_human` call its task row, a
  `rate_limited` call its wake-up time, an `outcome_unknown` call its explanation;
- no call is `started` in a run nobody is executing (a crash the engine never looked at again);
- a failed, rejected or outcome-unknown call, and a failed, rejected, invalid or needs-attention
  run, carries its error text;
- a `running` run is held by a live lease, and a `waiting` run waits for something (a pending
  approval, an open task or a wake-up time).

One query counts, with an EXISTS per rule, so it reads the window through the indexes instead of
loading every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Table, and_, case, exists, func, or_, select

from storage.models import (
    Approval,
    ApprovalStatus,
    Call,
    CallStatus,
    HumanTask,
    Run,
    RunStatus,
    TaskStatus,
)

runs: Table = Run.__table__  # type: ignore[assignment]
calls: Table = Call.__table__  # type: ignore[assignment]
approvals: Table = Approval.__table__  # type: ignore[assignment]
tasks: Table = HumanTask.__table__  # type: ignore[assignment]

EXAMPLES_SHOWN = 5
_ERROR_CALLS = (CallStatus.FAILED, CallStatus.REJECTED, CallStatus.OUTCOME_UNKNOWN)
_ERROR_RUNS = (
    RunStatus.FAILED,
    RunStatus.REJECTED,
    RunStatus.INVALID_INPUT,
    RunStatus.NEEDS_ATTENTION,
)


@dataclass(frozen=True)
class RecordCounts:
    runs: int
    complete: int
    incomplete_examples: list[str] = field(default_factory=list)

    @property
    def share(self) -> float | None:
        return self.complete / self.runs if self.runs else None


def _incomplete(now: datetime) -> ColumnElement[bool]:
    """True for a run (of `runs`) whose record leaves something unexplained."""
    call = calls.alias("c")
    in_run = and_(call.c.run_id == runs.c.id, call.c.seq.is_not(None))
    has_approval = exists().where(approvals.c.call_id == call.c.id)
    has_task = exists().where(tasks.c.call_id == call.c.id)
    bad_call = exists().where(
        in_run,
        or_(
            and_(call.c.status == CallStatus.AWAITING_APPROVAL, ~has_approval),
            and_(call.c.status == CallStatus.AWAITING_HUMAN, ~has_task),
            and_(call.c.status == CallStatus.RATE_LIMITED, call.c.wake_at.is_(None)),
            and_(call.c.status == CallStatus.STARTED, runs.c.status != RunStatus.RUNNING),
            and_(call.c.status.in_(_ERROR_CALLS), func.coalesce(call.c.error, "") == ""),
            call.c.status.not_in([s.value for s in CallStatus]),
        ),
    )
    pending_approval = exists().where(
        approvals.c.run_id == runs.c.id, approvals.c.status == ApprovalStatus.PENDING
    )
    open_task = exists().where(tasks.c.run_id == runs.c.id, tasks.c.status == TaskStatus.OPEN)
    return or_(
        bad_call,
        and_(runs.c.status.in_(_ERROR_RUNS), func.coalesce(runs.c.error, "") == ""),
        and_(
            runs.c.status == RunStatus.RUNNING,
            or_(runs.c.lease_until.is_(None), runs.c.lease_until < now),
        ),
        and_(
            runs.c.status == RunStatus.WAITING,
            runs.c.wake_at.is_(None),
            ~pending_approval,
            ~open_task,
        ),
    )


def record_counts(
    conn: Connection, pipeline: str, *, since: datetime, now: datetime
) -> RecordCounts:
    """The pipeline's runs created in [since, now], how many have a complete record, and a few
    of the others' ids (newest first)."""
    window = and_(runs.c.pipeline == pipeline, runs.c.created_at >= since, runs.c.created_at <= now)
    bad = _incomplete(now)
    total, incomplete = conn.execute(
        select(func.count(), func.coalesce(func.sum(case((bad, 1), else_=0)), 0)).where(window)
    ).one()
    examples: list[str] = []
    if incomplete:
        examples = [
            str(r)
            for r in conn.execute(
                select(runs.c.id)
                .where(window, bad)
                .order_by(runs.c.created_at.desc())
                .limit(EXAMPLES_SHOWN)
            ).scalars()
        ]
    return RecordCounts(int(total), int(total) - int(incomplete), examples)
