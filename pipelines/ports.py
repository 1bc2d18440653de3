"""The ports the engine needs from the outside world, and their simplest adapters.

`bot` implements `Notifier` for Slack and `ApproverDirectory` with Slack user groups; the CLI
implements `Notifier` for the terminal. Tests move a `FakeClock`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from pipelines.operations.alerting import AlertView
    from pipelines.operations.review import ReviewItemView, ReviewWeekView
    from pipelines.views import ApprovalView, Run, TaskView


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class Notifier(Protocol):
    """How the engine tells people that something waits for them, was decided, or went wrong.

    The outbox sender (`pipelines.outbox`) calls one method per subject with its state at
    delivery time, and retries on `DeliveryFailed`: each method makes the person's view show
    that state, idempotently (what is shown already is updated or left, never shown twice).
    An optional `run_notice(notice)` (`pipelines.run_notices.RunNotice`) tells a run's Slack
    triggerer how it went; a notifier without it is not asked."""

    def approval_requested(self, approval: ApprovalView) -> None: ...

    def approval_decided(self, approval: ApprovalView) -> None:
        """Approved, rejected or expired: `approval.status` says which."""
        ...

    def task_opened(self, task: TaskView) -> None: ...

    def task_answered(self, task: TaskView) -> None: ...

    def alert_opened(self, alert: AlertView) -> None:
        """An alert that is open: its message in the alerts channel."""
        ...

    def alert_recovered(self, alert: AlertView) -> None:
        """A recovered alert: its message (saying so) and a "recovered" reply in its thread."""
        ...

    def review_thread(self, week: ReviewWeekView) -> None:
        """The weekly review's thread: its parent and one reply per picked run."""
        ...

    def review_summary(self, week: ReviewWeekView) -> None:
        """The weekly review's summary, in its thread."""
        ...

    def review_verdict(self, item: ReviewItemView) -> None:
        """A verdict on a reviewed run: its reply, and the review's progress."""
        ...

    def run_needs_attention(self, run: Run) -> None:
        """A run that ended `needs_attention`: its notice (what is stuck, and the way out), or,
        once someone cancelled, retried or resolved it, the notice saying so."""
        ...


Hold = Literal["delivery", "subject"]
"""What a failure an operator must fix holds up: `delivery`, every delivery alike (the token was
revoked, the account deactivated: the sender pauses, nothing burns its attempts); `subject`, the
deliveries that need what is missing (a scope the method needs: retried on the pause's backoff,
never given up)."""


class DeliveryFailed(Exception):
    """A notifier could not deliver (Slack down, rate-limited, a bad channel, a revoked token).

    `retryable`: trying later may work (a 429, a 5xx, a connection error); `retry_after`: the
    seconds the service asked us to wait (`Retry-After`). A permanent failure (a channel that
    does not exist) is tried a few times, then given up loudly. `hold`: nothing will work until
    an operator acts (`action` says what): the sender pauses instead of giving up. The outbox
    sender retries.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        code: str | None = None,
        hold: Hold | None = None,
        action: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.code = code  # the service's own word for it (Slack's `error`), when it gave one
        self.hold = hold
        self.action = action  # what an operator must do, for a failure that holds delivery

    @property
    def reason(self) -> str:
        return self.code or str(self)


def retry_after_seconds(headers: Mapping[str, Any] | None) -> float | None:
    """Seconds from an HTTP `Retry-After` header (any case; a list of values takes the first),
    never below 0; None when it is missing or unreadable. The one parser: the outbox's retries
    and the Slack adapters read it here."""
    for name, value in (headers or {}).items():
        if str(name).lower() == "retry-after":
            text = value[0] if isinstance(value, list) and value else value
            try:
                return max(float(text), 0.0)
            except (TypeError, ValueError):
                return None
    return None


class SilentNotifier:
    """For processes nobody watches (workers started without a bot); the log still records all."""

    def approval_requested(self, approval: ApprovalView) -> None:
        return None

    def approval_decided(self, approval: ApprovalView) -> None:
        return None

    def task_opened(self, task: TaskView) -> None:
        return None

    def task_answered(self, task: TaskView) -> None:
        return None

    def alert_opened(self, alert: AlertView) -> None:
        return None

    def alert_recovered(self, alert: AlertView) -> None:
        return None

    def review_thread(self, week: ReviewWeekView) -> None:
        return None

    def review_summary(self, week: ReviewWeekView) -> None:
        return None

    def review_verdict(self, item: ReviewItemView) -> None:
        return None

    def run_needs_attention(self, run: Run) -> None:
        return None


class ApproverDirectory(Protocol):
    def members(self, group: str) -> set[str]:
        """User ids in `group` (its name without the leading `@`); empty if unknown."""
        ...


class StaticDirectory:
    """Groups from configuration (`GATEHOUSE_GROUPS='{"finance-leads": ["alice", "bob"]}'`)."""

    def __init__(self, groups: Mapping[str, Sequence[str]] | None = None) -> None:
        self._groups = {name.lstrip("@"): set(users) for name, users in (groups or {}).items()}

    def members(self, group: str) -> set[str]:
        return set(self._groups.get(group.lstrip("@"), set()))
