"""The states of runs, calls, approvals and human tasks, and the kinds of calls: `StrEnum`s so
the engine, the CLI and the bot share one spelling. Here rather than beside the tables in
storage.models (which re-exports them) so that naming a status needs no ORM (`gatehouse runs
--status`)."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    INVALID_INPUT = "invalid_input"
    NEEDS_ATTENTION = "needs_attention"
    CANCELLED = "cancelled"


FINISHED_RUN_STATUSES = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.REJECTED,
        RunStatus.INVALID_INPUT,
        RunStatus.NEEDS_ATTENTION,
        RunStatus.CANCELLED,
    }
)


class CallKind(StrEnum):
    STEP = "step"
    TOOL = "tool"
    LLM = "llm"
    HUMAN = "human"
    REVERSAL = "reversal"
    VERSION = "version"  # a `ctx.version(change)` marker: this run took the changed path


class CallStatus(StrEnum):
    STARTED = "started"  # a tool is executing (or crashed while executing)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_HUMAN = "awaiting_human"
    RATE_LIMITED = "rate_limited"
    REJECTED = "rejected"
    OUTCOME_UNKNOWN = "outcome_unknown"
    # An `outcome_unknown` call a person settled as not done (`gatehouse resolve
    # --did-not-happen`): the replay starts the tool again, under the same key.
    DID_NOT_HAPPEN = "did_not_happen"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"  # its run was cancelled (`gatehouse cancel`) before a decision


class TaskStatus(StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    CANCELLED = "cancelled"
