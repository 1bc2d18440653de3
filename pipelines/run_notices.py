"""Telling the person who triggered a run how it went: once it waits on a person, and once it
ends (succeeded, failed, rejected, needs attention, cancelled), through the outbox.

Both ends are here. The owing end, `owe_notice`, writes an outbox row (subject `run:RUN_ID`) in
the transaction that moves the run, only for runs a Slack user triggered (`/gatehouse trigger`,
a button): a schedule or a webhook has nobody to tell. The showing end, `notice_for`, reads the
run when the outbox delivers: what it says is the run's state then (a "waiting" row delivered
after the run finished tells the end, once). Each state has a `key`; the notifier records the
keys it told, so a retried delivery tells nobody twice, and one subject is delivered by one
sender across replicas (the outbox's claim).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from pipelines.quorum import quorums_of
from pipelines.runtime import Runtime
from pipelines.views import Quorum
from storage import queries
from storage.models import ApprovalStatus, RunStatus, TaskStatus
from storage.runs import fetch_run

RUN_NOTICE = "run_notice"
SUBJECT_PREFIX = "run:"
# How a run started when a Slack user started it (`Run.trigger`); nobody else is told.
SLACK_SOURCES = ("slack",)
ENDED = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.REJECTED,
    RunStatus.NEEDS_ATTENTION,
    RunStatus.CANCELLED,
)


def subject_of(run_id: str) -> str:
    return f"{SUBJECT_PREFIX}{run_id}"


def run_id_of(subject_id: str) -> str | None:
    """The run a notice's subject names, or None for another subject."""
    if not subject_id.startswith(SUBJECT_PREFIX):
        return None
    return subject_id[len(SUBJECT_PREFIX) :] or None


def tells_triggerer(rt: Runtime, source: str | None, user: str | None) -> bool:
    """Is there a Slack user to tell (a run triggered from Slack by someone), and are they
    told (`GATEHOUSE_TELL_TRIGGERER`)?"""
    return rt.tell_triggerers and user is not None and source in SLACK_SOURCES


def owe_notice(rt: Runtime, conn: Connection, run_id: str, now: datetime) -> None:
    """In the transaction that moves a Slack-triggered run to waiting-on-a-person or to its end."""
    rt.enqueue(conn, RUN_NOTICE, subject_of(run_id), now)


def nudge(rt: Runtime, run_id: str) -> None:
    """After the commit: let the outbox sender tell the person now (a local notifier has the
    run in front of it already)."""
    if rt.sender is not None:
        rt.sender.nudge(subject_of(run_id))


@dataclass(frozen=True)
class WaitingOn:
    """What the run waits for: an approval (`what` is the tool) or a human task (its name), and
    who may act on it."""

    kind: str  # approval | task
    id: str
    what: str
    who: list[str] = field(default_factory=list)
    # An approval that needs several people: how many, and who approved so far.
    quorum: Quorum | None = None


@dataclass(frozen=True)
class RunNotice:
    """What to tell `user` about their run now. `key` names the state told (a person told of it
    once); `card` is the approval or task whose card this is about, for a link."""

    id: str  # the outbox subject
    run_id: str
    pipeline: str
    status: str
    user: str
    error: str | None
    finished_at: datetime | None
    waiting: list[WaitingOn]
    card: tuple[str, str] | None  # (approval | task, id)

    @property
    def key(self) -> str:
        if self.waiting:
            return "waiting:" + ",".join(w.id for w in self.waiting)
        at = self.finished_at.isoformat() if self.finished_at else ""
        return f"{self.status}:{at}"


def notice_for(rt: Runtime, subject_id: str) -> RunNotice | None:
    """The notice owed for this subject now, or None: no such run, nobody to tell, or nothing
    to tell at this moment (queued or running again: its end is owed by its own row)."""
    run_id = run_id_of(subject_id)
    if run_id is None:
        return None
    with rt.db.transaction() as conn:
        run = fetch_run(conn, run_id)
        if run is None or not tells_triggerer(rt, run.trigger, run.trigger_user):
            return None
        approvals = queries.approvals_of_run(conn, run_id)
        tasks = queries.tasks_of_run(conn, run_id)
        pending = [a for a in approvals if a.status == ApprovalStatus.PENDING]
        quorums = quorums_of(conn, [a.id for a in pending])
    waiting = [
        WaitingOn("approval", a.id, a.tool, list(a.approvers or []), quorums.get(a.id))
        for a in pending
    ]
    waiting += [
        WaitingOn(
            "task",
            t.id,
            t.name,
            rt.authorization.answerers(list(t.assignees or []), run.pipeline),
        )
        for t in tasks
        if t.status == TaskStatus.OPEN
    ]
    if run.status == RunStatus.WAITING and not waiting:
        return None  # a timer (a rate-limit window), not a person
    if run.status not in ENDED and run.status != RunStatus.WAITING:
        return None
    if waiting:
        card: tuple[str, str] | None = (waiting[0].kind, waiting[0].id)
    elif approvals:
        card = ("approval", max(approvals, key=lambda a: a.requested_at).id)
    else:
        card = None
    assert run.trigger_user is not None  # tells_triggerer
    return RunNotice(
        id=subject_id,
        run_id=run.id,
        pipeline=run.pipeline,
        status=str(run.status),
        user=run.trigger_user,
        error=run.error,
        finished_at=run.finished_at,
        waiting=waiting,
        card=card,
    )
