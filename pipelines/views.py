"""Read-only snapshots of runs, calls, approvals and tasks, and their stable JSON shapes.

These are what the engine hands to notifiers and callers, and what `--json` prints; users script
against the JSON, so fields are only ever added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipelines.authorization import Authorization
from pipelines.sensitive import mask
from pipelines.tools import lookup_tool
from storage.calls import CallRecord
from storage.rows import (
    ApprovalRow,
    CallRow,
    HumanTaskRow,
    OpenTaskRow,
    PendingApprovalRow,
    RunRow,
)

if TYPE_CHECKING:
    from pipelines.call_outcomes import CallOutcome


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _mask_fields(view: Any, *names: str) -> None:
    """Sealed sensitive values (`pipelines.sensitive`) show as •••• in every view: cards, App
    Home, `--json`. The engine reads the records themselves, never a view, to resume."""
    for name in names:
        value = getattr(view, name)
        masked = mask(value)
        if masked is not value:
            object.__setattr__(view, name, masked)


@dataclass(frozen=True)
class CallView:
    id: str
    key: str
    kind: str
    name: str
    status: str
    input: Any
    output: Any
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    idempotency_key: str | None = None
    reversed_by: str | None = None
    run_id: str | None = None
    meta: Any = None

    def __post_init__(self) -> None:
        _mask_fields(self, "input", "output")

    @classmethod
    def of(cls, row: CallRow | CallRecord) -> CallView:
        return cls(
            run_id=row.run_id,
            meta=row.meta,
            id=row.id,
            key=row.key,
            kind=row.kind,
            name=row.name,
            status=row.status,
            input=row.input,
            output=row.output,
            error=row.error,
            started_at=row.started_at,
            finished_at=row.finished_at,
            idempotency_key=row.idempotency_key,
            reversed_by=row.reversed_by,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "idempotency_key": self.idempotency_key,
            "reversed_by": self.reversed_by,
            "run_id": self.run_id,
            "meta": self.meta,
        }


@dataclass(frozen=True)
class Nudges:
    """An approval's reminder and escalation: when each is due, and when it happened
    (pipelines/approval_nudges.py)."""

    remind_at: datetime | None = None
    reminded_at: datetime | None = None
    escalate_at: datetime | None = None
    escalated_at: datetime | None = None
    escalate_to: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "remind_at": iso(self.remind_at),
            "reminded_at": iso(self.reminded_at),
            "escalate_at": iso(self.escalate_at),
            "escalated_at": iso(self.escalated_at),
            "escalate_to": list(self.escalate_to),
        }


@dataclass(frozen=True)
class Vote:
    """One person's approval of a quorum approval."""

    voter: str
    at: datetime


@dataclass(frozen=True)
class Quorum:
    """An approval that needs `required` distinct people (`@tool(approvals_required=N)`), and
    who approved so far, in order (pipelines/quorum.py)."""

    required: int
    votes: tuple[Vote, ...] = ()

    @property
    def approved(self) -> int:
        return len(self.votes)

    @property
    def remaining(self) -> int:
        return max(self.required - len(self.votes), 0)

    @property
    def voters(self) -> list[str]:
        return [v.voter for v in self.votes]

    def to_json(self) -> dict[str, Any]:
        return {
            "required": self.required,
            "approved": self.approved,
            "remaining": self.remaining,
            "votes": [{"voter": v.voter, "at": iso(v.at)} for v in self.votes],
        }


@dataclass(frozen=True)
class ApprovalView:
    id: str
    run_id: str
    call_id: str
    call_key: str
    tool: str
    tool_kind: str
    args: Any
    approvers: list[str]
    four_eyes: bool
    trigger_user: str | None
    status: str
    requested_at: datetime
    expires_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    pipeline: str | None = None
    # The validation model's verdict, when `approval=validator(...)` handed the call to a person.
    validator: Any = None
    # Its reminder and escalation, when its tool declares them (read with the view).
    nudges: Nudges | None = None
    # How the approved call ended (and its undo), when the card is rendered for the outbox
    # (`pipelines.call_outcomes.with_outcome`); None otherwise.
    outcome: CallOutcome | None = None
    # Approved with edits: {"by", "at", "original", "changes": [{"field", "old", "new"}]}
    # (pipelines/approval_edits.py); `args` are then the edited arguments the call ran with.
    edited: Any = None
    # N distinct approvers and who approved so far, when its tool needs more than one person.
    quorum: Quorum | None = None
    # While pending: the arguments an approver may change before approving (the tool's
    # `editable`, as registered in this process; pipelines/approval_edits.py). Every place an
    # approval is shown offers Edit & approve (or `approve --args`) from this one field.
    editable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _mask_fields(self, "args", "edited")

    @classmethod
    def of(
        cls, row: ApprovalRow | PendingApprovalRow, *, pipeline: str | None = None
    ) -> ApprovalView:
        return cls(
            id=row.id,
            run_id=row.run_id,
            call_id=row.call_id,
            call_key=row.call_key,
            tool=row.tool,
            tool_kind=row.tool_kind,
            args=row.args,
            approvers=list(row.approvers or []),
            four_eyes=bool(row.four_eyes),
            trigger_user=row.trigger_user,
            status=row.status,
            requested_at=row.requested_at,
            expires_at=row.expires_at,
            decided_by=row.decided_by,
            decided_at=row.decided_at,
            reason=row.reason,
            pipeline=pipeline,
            validator=getattr(row, "validator", None),
            edited=getattr(row, "edited", None),
            editable=_editable_now(row.tool, row.status),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "approval",
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "call_id": self.call_id,
            "call_key": self.call_key,
            "tool": self.tool,
            "tool_kind": self.tool_kind,
            "args": self.args,
            "approvers": self.approvers,
            "four_eyes": self.four_eyes,
            "trigger_user": self.trigger_user,
            "status": self.status,
            "requested_at": iso(self.requested_at),
            "expires_at": iso(self.expires_at),
            "decided_by": self.decided_by,
            "decided_at": iso(self.decided_at),
            "reason": self.reason,
            "validator": self.validator,
            "edited": self.edited,
            **(Nudges() if self.nudges is None else self.nudges).to_json(),
            "approvals_required": self.quorum.required if self.quorum else 1,
            "votes": self.quorum.to_json()["votes"] if self.quorum else [],
            "editable": list(self.editable),
        }


def _editable_now(tool_name: str, status: str) -> tuple[str, ...]:
    """The fields an approver may still edit: the registered tool's `editable`, while pending."""
    tool = lookup_tool(tool_name) if status == "pending" else None
    return tool.editable if tool is not None else ()


@dataclass(frozen=True)
class TaskAfter:
    """What a run did after a person answered its task (`pipelines.task_outcomes`): `status` is
    the run's (`waiting` on `approval_id`/`tool` or on task `task_id`/`task_name`; or how it
    ended, with the output's own `message` or the `error`)."""

    status: str
    approval_id: str | None = None
    tool: str | None = None
    task_id: str | None = None
    task_name: str | None = None
    message: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class TaskView:
    id: str
    run_id: str
    call_id: str
    call_key: str
    name: str
    question: str
    output_schema: Any
    context: Any
    assignees: list[str]
    status: str
    opened_at: datetime
    answered_by: str | None
    answered_at: datetime | None
    answer: Any
    pipeline: str | None = None
    # Who may answer as the engine's policy resolved it (`Authorization.answerers`), when the
    # view was read through a runtime; `answerers` is what to show.
    may_answer: list[str] | None = None
    # What the run did after the answer, when the card is rendered for the outbox
    # (`pipelines.task_outcomes.with_after`); None otherwise.
    after: TaskAfter | None = None

    def __post_init__(self) -> None:
        _mask_fields(self, "context", "answer")

    @property
    def answerers(self) -> list[str]:
        """Who may answer, as the answer check reads it: the assignees, or for a task naming
        none whoever the policy lets ("*": anyone, the open policy's reading)."""
        if self.may_answer is not None:
            return self.may_answer
        return Authorization().answerers(self.assignees, self.pipeline)

    @classmethod
    def of(
        cls,
        row: HumanTaskRow | OpenTaskRow,
        *,
        pipeline: str | None = None,
        authorization: Authorization | None = None,
    ) -> TaskView:
        assignees = list(row.assignees or [])
        return cls(
            id=row.id,
            run_id=row.run_id,
            call_id=row.call_id,
            call_key=row.call_key,
            name=row.name,
            question=row.question,
            output_schema=row.output_schema,
            context=row.context,
            assignees=assignees,
            status=row.status,
            opened_at=row.opened_at,
            answered_by=row.answered_by,
            answered_at=row.answered_at,
            answer=row.answer,
            pipeline=pipeline,
            may_answer=(
                None if authorization is None else authorization.answerers(assignees, pipeline)
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "human_task",
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "call_id": self.call_id,
            "call_key": self.call_key,
            "name": self.name,
            "question": self.question,
            "output_schema": self.output_schema,
            "context": self.context,
            "assignees": self.assignees,
            "may_answer": self.answerers,
            "status": self.status,
            "opened_at": iso(self.opened_at),
            "answered_by": self.answered_by,
            "answered_at": iso(self.answered_at),
            "answer": self.answer,
        }


@dataclass(frozen=True)
class Run:
    """A run as it stands: what `trigger()` returns and `gatehouse run --json` prints."""

    id: str
    pipeline: str
    status: str
    input: Any
    output: Any
    error: str | None
    trigger_user: str | None
    created_at: datetime
    finished_at: datetime | None
    waiting_for: list[str] = field(default_factory=list)
    trigger: str | None = None  # how the run started: api, cli, slack, schedule…
    calls: list[CallView] = field(default_factory=list)
    approvals: list[ApprovalView] = field(default_factory=list)
    tasks: list[TaskView] = field(default_factory=list)
    # A waiting run's latest transition's detail: "pipeline paused by …", "rate limit of …".
    waiting_reason: str | None = None

    def __post_init__(self) -> None:
        _mask_fields(self, "input", "output")

    @classmethod
    def of(cls, row: RunRow, **extra: Any) -> Run:
        return cls(
            id=row.id,
            pipeline=row.pipeline,
            status=row.status,
            input=row.input,
            output=row.output,
            error=row.error,
            trigger_user=row.trigger_user,
            created_at=row.created_at,
            finished_at=row.finished_at,
            trigger=getattr(row, "trigger", None),
            **extra,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "trigger_user": self.trigger_user,
            "created_at": iso(self.created_at),
            "finished_at": iso(self.finished_at),
            "waiting_for": self.waiting_for,
            "waiting_reason": self.waiting_reason,
            "trigger": self.trigger,
            "calls": [c.to_json() for c in self.calls],
            "approvals": [a.to_json() for a in self.approvals],
            "tasks": [t.to_json() for t in self.tasks],
        }
