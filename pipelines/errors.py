"""Every error the engine raises on purpose, each saying what went wrong and what to do.

`GatehouseError` subclasses are user-facing: the CLI prints their message as one line and exits
non-zero. `Suspend` and `NeedsAttention` are control flow; they derive from BaseException so that
a pipeline's `except Exception` cannot swallow them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
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


class BadQuorum(GatehouseError):
    """A tool's `approvals_required` cannot be met: not a whole number of at least 1, more than
    one person on a gate no person approves, or more people than its approver list names."""


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


class AlreadyVoted(GatehouseError):
    """This person's approval of a quorum approval is already counted; it needs someone else."""


class AlreadyAnswered(GatehouseError):
    pass


class NotAuthorized(GatehouseError):
    """Base of the refusals that are written to the audit log.

    A refusal names people: `people` maps a `{key}` in the message to a user id, so each surface
    names them its own way (`render`): Slack as a mention (`<@U_CAROL>`), the CLI as the name and
    the id, the audit log as the id (`str()`)."""

    def __init__(self, message: str, *, people: Mapping[str, str] | None = None) -> None:
        self.template = message
        self.people = dict(people or {})
        super().__init__(self.render(str))

    def render(self, person: Callable[[str], str], text: Callable[[str], str] = str) -> str:
        """The message with each `{key}` of `people` as `person(user)` and the rest as
        `text(part)` (Slack escapes it before the mentions go in)."""
        parts = re.split(r"\{(\w+)\}", self.template)
        out: list[str] = []
        for index, part in enumerate(parts):
            if index % 2 == 0:
                out.append(text(part))
            elif part in self.people:
                out.append(person(self.people[part]))
            else:
                out.append(text("{" + part + "}"))
        return "".join(out)


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


# -- run operations (pipelines/run_operations.py) ---------------------------------------------


class NotARunOperator(NotAuthorized):
    """Cancel, retry or resolve by someone who is neither an operator nor an approver of the
    run's tools."""


class RunNotCancellable(GatehouseError):
    """The run has finished (or is gone): there is nothing to cancel."""


class RunNotRetryable(GatehouseError):
    """Only a failed, needs_attention or cancelled run starts a new attempt."""


class OutcomeUnresolved(GatehouseError):
    """A retry would have to guess whether a non-idempotent tool's effect happened."""


class NotUnknown(GatehouseError):
    """`resolve` on a call whose outcome is not `outcome_unknown`."""


class ResultRequired(GatehouseError):
    """`resolve --happened` without the result the tool's result model needs."""


class InvalidResult(GatehouseError):
    """`resolve --happened --result` that does not fit the tool's result model."""


# -- editable approvals (pipelines/approval_edits.py) -----------------------------------------


class BadEditable(GatehouseError, ValueError):
    """`@tool(editable=[...])` names a field its argument model lacks, a sensitive field, or a
    tool no person approves."""


class InvalidEdit(GatehouseError):
    """Edited arguments the tool's argument model (or its `editable` list) refuses; nothing was
    decided. `field_errors`: one message per field, for a form to show beside each."""

    def __init__(self, message: str, field_errors: Mapping[str, str]) -> None:
        super().__init__(message)
        self.field_errors = dict(field_errors)


class RunPruned(UnknownRun):
    """A run id retention deleted (`gatehouse prune`): the message says when. An UnknownRun, so
    every place that answers "no run" answers this instead."""


class RetentionTooShort(GatehouseError):
    """`gatehouse prune --older-than` (or GATEHOUSE_RETENTION_DAYS) shorter than what the
    drift check, the weekly review and the daily chart read from the runs themselves."""
