"""Every error the engine raises on purpose, each saying what went wrong and what to do.

`GatehouseError` subclasses are user-facing: the CLI prints their message as one line and exits
non-zero. `Suspend` and `NeedsAttention` are control flow; they derive from BaseException so that
a pipeline's `except Exception` cannot swallow them.
"""

from __future__ import annotations

from datetime import datetime


class GatehouseError(Exception):
    """Base of the errors a user can act on."""


class UnknownPipeline(GatehouseError):
    pass


class DuplicateName(GatehouseError):
    pass


class ApproversRequired(GatehouseError):
    """A tool whose approval a person may have to give was declared without `approvers=`."""


class BadEscalation(GatehouseError):
    """A tool's `remind_after` / `escalate_after` / `escalate_to` do not fit together (an
    escalation before the reminder, or to nobody)."""


class UnknownRun(GatehouseError):
    pass


class UnknownApproval(GatehouseError):
    pass


class UnknownTask(GatehouseError):
    pass


class UnknownCall(GatehouseError):
    pass


class AlreadyDecided(GatehouseError):
    pass


class AlreadyAnswered(GatehouseError):
    pass


class NotAuthorized(GatehouseError):
    """Base of the refusals that are written to the audit log."""


class NotAnApprover(NotAuthorized):
    pass


class FourEyesViolation(NotAuthorized):
    pass


class NotAnAssignee(NotAuthorized):
    pass


class NotATriggerer(NotAuthorized):
    pass


class ForeignWorkspace(NotAuthorized):
    """A Slack request from a workspace this Gatehouse does not serve (GATEHOUSE_SLACK_TEAM_IDS)."""


class NotAnOperator(NotAuthorized):
    """Undo, replay or export by someone who is not an operator (GATEHOUSE_OPERATORS)."""


class ReasonRequired(GatehouseError):
    pass


class InvalidAnswer(GatehouseError):
    pass


class NotReversible(GatehouseError):
    pass


class AlreadyReversed(GatehouseError):
    pass


class ReversalFailed(GatehouseError):
    pass


class RunNotRunnable(GatehouseError):
    pass


class PipelineChanged(GatehouseError):
    """Today's code makes a different call sequence than the run's record."""


class JournalWriteRefused(GatehouseError):
    """Something tried to write through a journal that does not write (a replay's, an eval's)."""


class StepFailed(GatehouseError):
    """A `ctx.step` function raised; raised the same way on the first run and on every replay."""

    def __init__(self, name: str, error: str) -> None:
        super().__init__(f"step {name!r} failed: {error}")
        self.step = name
        self.error = error


class ToolFailed(GatehouseError):
    """A tool raised; the failure is recorded and raised the same way on every replay."""

    def __init__(self, name: str, error: str) -> None:
        super().__init__(f"tool {name!r} failed: {error}")
        self.tool = name
        self.error = error


class ActionRejected(GatehouseError):
    """A gated action was rejected (by a person, by its expiry, or by its rate limit).

    Uncaught, it ends the run as `rejected`; a pipeline may catch it and route elsewhere.
    """

    def __init__(self, tool: str, reason: str, *, by: str | None = None) -> None:
        super().__init__(f"{tool} was rejected: {reason}")
        self.tool = tool
        self.reason = reason
        self.by = by


class CannotAnswer(GatehouseError):
    """An LLM call found no usable answer (raised to the pipeline with `on_fail="raise"`)."""


class Suspend(BaseException):
    """The run waits (approval, human, timer); its state was already written as `waiting`."""

    def __init__(
        self, reason: str, *, waiting_for: str | None = None, wake_at: datetime | None = None
    ):
        super().__init__(reason)
        self.reason = reason
        self.waiting_for = waiting_for
        self.wake_at = wake_at


class NeedsAttention(BaseException):
    """A human must look at the run before it can go on (e.g. a tool's outcome is unknown)."""


class LostClaim(BaseException):
    """Another worker owns this run now (our lease expired); stop without writing."""


class CancelRun(BaseException):
    """End the run as `cancelled` (an approval expired on a tool declared `on_expiry="cancel"`)."""
