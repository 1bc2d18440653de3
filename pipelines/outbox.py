"""The outbox sender: delivers what the engine owes people through the `Notifier` port.

The engine writes an outbox row in the transaction of every change a person must see (an
approval requested or decided, its call's outcome or undo, a task opened or answered, an alert
opened or recovered, a weekly review's thread, summary or a verdict, a Slack-triggered run
waiting on a person or ending). The sender claims a subject, loads
its state *now* and hands that to the notifier: a card delivered late shows what is true when
it is delivered (requested while Slack was down, approved from the CLI meanwhile: one card,
"approved"), and several rows of one subject collapse into one delivery. The notifier makes a
delivery idempotent (a card that exists is updated, never posted twice).

A failure raised as `DeliveryFailed(retryable=True)` (429, 5xx, connection) is retried with
capped exponential backoff and jitter, never sooner than the service's `Retry-After`; a
permanent one (a bad channel) after `max_attempts` marks the rows dead and logs an error.

A failure that only an operator can fix never kills a row. One that refuses every call (a
revoked token, a deactivated account: `hold="delivery"`) pauses delivery for every subject: the
sender claims nothing for `PAUSE_FIRST`, then one delivery probes; each failed probe doubles the
pause up to `PAUSE_CAP`, and the first answer that gets past Slack's authentication resumes it.
The pause is logged once at `error` (the error and what to do), its end once at `info`, and is
a `/metrics` gauge while it lasts; with nothing due to probe with, the notifier's optional
`check_delivery()` (Slack's `auth.test`) is the probe. Every sender of this process on the same database shares it;
each replica reaches it from Slack's answers on its own. One that holds only the deliveries
that need what is missing (a scope: `hold="subject"`) is retried on the same schedule, per row.
A database that goes away is waited out with bounded backoff; the rows stay in the table, and
the claims it interrupted are ended when it is back. A claim held by a process of this host
that no longer exists (a sender killed mid-delivery) is ended at once rather than at the end of
its lease, as the worker does with runs.

In one process the sender is nudged right after the commit (a `threading.Event`), so a card
goes out at once instead of at the next poll; without a running thread (`gatehouse approve` in
a terminal, the tests' bot harness) `nudge` delivers the subject inline on the caller's thread.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from weakref import WeakKeyDictionary

import structlog

from pipelines import call_outcomes, inspect, observations, run_notices, task_outcomes
from pipelines.attention import ATTENTION_EVENT
from pipelines.errors import UnknownApproval, UnknownRun, UnknownTask
from pipelines.operations import alerting, review
from pipelines.operations.alerting import ALERT_EVENTS, AlertView
from pipelines.operations.review import (
    REVIEW_EVENTS,
    REVIEW_VERDICT,
    ReviewItemView,
    ReviewWeekView,
    UnknownReviewItem,
    UnknownReviewWeek,
)
from pipelines.ports import DeliveryFailed, Notifier
from pipelines.run_notices import RunNotice
from pipelines.runtime import Runtime
from pipelines.views import ApprovalView, Run, TaskView
from pipelines.worker import owner_is_dead
from storage import messages
from storage import outbox as rows
from storage.db import Database, is_disconnect

log = structlog.get_logger()

APPROVAL_EVENTS = ("approval_requested", "approval_decided")
TASK_EVENTS = ("task_opened", "task_answered")

View = ApprovalView | TaskView | AlertView | ReviewWeekView | ReviewItemView | Run | RunNotice

# A failure only an operator can fix (a revoked token, a missing scope) waits this long before
# the first probe, doubling with each failed probe up to the cap: a fix is seen within 15 min,
# and a revoked token costs Slack four calls an hour.
PAUSE_FIRST = timedelta(minutes=1)
PAUSE_CAP = timedelta(minutes=15)
# A subject held for a scope is forgotten by the gauge if it was not retried for this long
# (another replica delivered it, or it was decided from the CLI and delivered elsewhere).
HELD_FORGOTTEN_AFTER = 2 * PAUSE_CAP


@dataclass(frozen=True)
class Pause:
    """Delivery paused: Slack refuses every call with `reason` (its error) until an operator
    acts (`action`); the next probe is at `until`."""

    reason: str
    error: str
    action: str | None
    since: datetime
    until: datetime
    probes: int = 0  # failed probes since the pause began

    def next(
        self, failure: DeliveryFailed, now: datetime, first: timedelta, cap: timedelta
    ) -> Pause:
        """The pause after a probe failed again: twice as long, up to `cap`."""
        probes = self.probes + 1
        wait = min(first * 2**probes, cap)
        return replace(
            self,
            reason=failure.reason,
            error=str(failure),
            action=failure.action,
            until=now + wait,
            probes=probes,
        )


class DeliveryPauses:
    """What holds delivery on one database in this process: the pause (every subject) and the
    subjects waiting for a scope. Shared by every sender built on that database (the bot's
    thread, the alert checks', the review job's), so one revoked token pauses them all; read by
    `/metrics`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pause: Pause | None = None
        self._held: dict[str, tuple[str, datetime]] = {}  # subject -> (reason, last failure)

    def begin(
        self, failure: DeliveryFailed, now: datetime, first: timedelta, cap: timedelta
    ) -> tuple[Pause | None, Pause]:
        """A delivery failed for every subject: (the pause before, the pause now). A new pause
        waits `first`; a failed probe (the pause ran out) doubles it up to `cap`; a failure
        while the pause runs (a delivery already under way) leaves it as it is."""
        with self._lock:
            before = self.pause
            if before is None:
                pause = Pause(failure.reason, str(failure), failure.action, now, now + first)
            elif now < before.until:
                pause = before
            else:
                pause = before.next(failure, now, first, cap)
            self.pause = pause
            return before, pause

    def probe_later(self, until: datetime) -> None:
        """A probe learnt nothing (no answer): the pause holds, unchanged, until `until`."""
        with self._lock:
            if self.pause is not None:
                self.pause = replace(self.pause, until=until)

    def end(self) -> Pause | None:
        """Slack answered past its authentication: the pause that was, if any."""
        with self._lock:
            pause, self.pause = self.pause, None
            return pause

    def hold_subject(self, subject_id: str, reason: str, now: datetime) -> None:
        with self._lock:
            self._held[subject_id] = (reason, now)

    def release_subject(self, subject_id: str) -> None:
        with self._lock:
            self._held.pop(subject_id, None)

    def held(self, now: datetime) -> dict[str, int]:
        """Subjects held per reason (`missing_scope`), those retried lately."""
        counts: dict[str, int] = {}
        with self._lock:
            for subject_id, (reason, seen) in list(self._held.items()):
                if now - seen > HELD_FORGOTTEN_AFTER:
                    del self._held[subject_id]
                    continue
                counts[reason] = counts.get(reason, 0) + 1
        return counts


_PAUSES: WeakKeyDictionary[Database, DeliveryPauses] = WeakKeyDictionary()
_PAUSES_LOCK = threading.Lock()


def delivery_pauses(db: Database) -> DeliveryPauses:
    """The pauses of every sender of this process on `db`."""
    with _PAUSES_LOCK:
        pauses = _PAUSES.get(db)
        if pauses is None:
            pauses = _PAUSES[db] = DeliveryPauses()
        return pauses


@dataclass(frozen=True)
class Outcome:
    """What delivering one subject came to: delivered, or the failure it will be retried after
    (or died of)."""

    subject_id: str
    delivered: bool
    failure: DeliveryFailed | None = None


class OutboxSender:
    """Claims due subjects, delivers each subject's current state, records the outcome."""

    def __init__(
        self,
        rt: Runtime,
        *,
        poll_seconds: float = 1.0,
        lease: timedelta = timedelta(seconds=60),
        max_attempts: int = 5,
        base_backoff: float = 1.0,
        max_backoff: float = 300.0,
        stale_after: timedelta = timedelta(hours=24),
        keep_delivered: timedelta = timedelta(days=7),
        batch: int = 20,
        jitter: Callable[[], float] = random.random,
        notifier: Notifier | None = None,
        pause_first: timedelta = PAUSE_FIRST,
        pause_cap: timedelta = PAUSE_CAP,
    ) -> None:
        self.rt = rt
        self._notifier = notifier  # None: the runtime's (set after the sender, in `serve`)
        self.poll_seconds = poll_seconds
        self.lease = lease
        self.max_attempts = max_attempts
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.stale_after = stale_after
        self.keep_delivered = keep_delivered
        self.batch = batch
        self._jitter = jitter
        self.pause_first = pause_first
        self.pause_cap = pause_cap
        self.pauses = delivery_pauses(rt.db)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._give_up_at: float | None = None
        self._lost_database = False  # claims of ours the database dropped mid-delivery
        self.delivered = 0
        self.taken_over = 0

    @property
    def notifier(self) -> Notifier:
        return self._notifier if self._notifier is not None else self.rt.notifier

    # -- in-process use ----------------------------------------------------------------------

    def nudge(self, subject_id: str | None = None) -> None:
        """A change just committed: deliver now (the thread, or inline when there is none).
        Never raises: the change is committed and its row waits for the next pass anyway."""
        if self._thread is not None and self._thread.is_alive():
            self._wake.set()
            return
        try:
            self.deliver_due(subject_id=subject_id)
        except Exception as exc:  # a database hiccup: the row is still pending
            log.warning("outbox.inline_failed", subject_id=subject_id, error=str(exc))

    def start(self) -> OutboxSender:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.run_forever, name="gatehouse-outbox", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling after one last pass (what the drained runs owe), bounded by `timeout`;
        what is not delivered by then waits in the table for the next sender."""
        self._give_up_at = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout + 5)

    def run_forever(self) -> None:
        log.info("outbox.started", worker=self.rt.worker_id)
        failures = 0
        purged_at = 0.0
        while not self._stop.is_set():
            try:
                delivered = self.deliver_due()
                if time.monotonic() - purged_at > 3600:
                    self.purge()
                    purged_at = time.monotonic()
                failures = 0
            except Exception as exc:
                failures += 1
                pause = min(self.poll_seconds * 2**failures, 10.0)
                event = "outbox.database_unavailable" if is_disconnect(exc) else "outbox.error"
                self._lost_database = self._lost_database or is_disconnect(exc)
                log.warning(event, error=str(exc), retry_in=pause)
                self._stop.wait(pause)
                continue
            if delivered == 0:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
        try:
            self.deliver_due()  # the last pass: cards owed by the runs that just drained
        except Exception as exc:
            log.warning("outbox.last_pass_failed", error=str(exc))
        log.info("outbox.stopped", delivered=self.delivered)

    # -- one pass ----------------------------------------------------------------------------

    def deliver_due(self, *, subject_id: str | None = None) -> int:
        """Claim and deliver every due subject (only `subject_id` if given); returns how many
        subjects were delivered."""
        if subject_id is None:
            self.end_abandoned_claims()
        done = 0
        while True:
            now = self.rt.clock.now()
            if self.paused(now):
                return done
            with self.rt.db.transaction() as conn:
                claimed = rows.claim_due(
                    conn,
                    worker=self.rt.worker_id,
                    now=now,
                    lease=self.lease,
                    limit=self.batch,
                    subject_id=subject_id,
                )
            if not claimed:
                if subject_id is None:
                    self._probe_idle()
                return done
            for index, head in enumerate(claimed):
                out_of_time = self._give_up_at is not None and time.monotonic() > self._give_up_at
                if out_of_time or self.paused(self.rt.clock.now()):
                    # draining and out of time, or delivery just paused: give the rest back
                    self._release(claimed[index:])
                    return done
                if self._deliver(head).delivered:
                    done += 1
            if len(claimed) < self.batch or subject_id is not None:
                return done

    def deliver_subject(self, subject_id: str) -> Outcome | None:
        """Deliver one subject now, on this thread, if it is due and nobody else holds it;
        None when there was nothing to claim (not due, delivered, another sender's, or delivery
        is paused)."""
        now = self.rt.clock.now()
        if self.paused(now):
            return None
        with self.rt.db.transaction() as conn:
            claimed = rows.claim_due(
                conn,
                worker=self.rt.worker_id,
                now=now,
                lease=self.lease,
                limit=1,
                subject_id=subject_id,
            )
        return self._deliver(claimed[0]) if claimed else None

    def paused(self, now: datetime) -> Pause | None:
        """The pause that holds every delivery now, if any (past its `until`, a probe may go)."""
        pause = self.pauses.pause
        return pause if pause is not None and now < pause.until else None

    def end_abandoned_claims(self) -> int:
        """End the claims nobody is delivering any more: those of dead processes on this host,
        and ours that a lost database interrupted. Their subjects are claimable again now."""
        now = self.rt.clock.now()
        ended = 0
        with self.rt.db.transaction() as conn:
            for row_id, holder in rows.live_claims(conn, now):
                ours = holder == self.rt.worker_id
                abandoned = self._lost_database if ours else owner_is_dead(holder)
                if abandoned and rows.end_claim(conn, row_id, holder=holder, now=now):
                    ended += 1
                    log.warning("outbox.claim_ended", row_id=row_id, holder=holder)
        self._lost_database = False
        return ended

    def _release(self, claimed: list[rows.Claimed]) -> None:
        with self.rt.db.transaction() as conn:
            for head in claimed:
                rows.release(conn, head.id, worker=self.rt.worker_id)

    def purge(self) -> int:
        """Forget rows delivered more than `keep_delivered` ago (the sender does it hourly)."""
        with self.rt.db.transaction() as conn:
            return rows.purge_delivered(conn, before=self.rt.clock.now() - self.keep_delivered)

    def _deliver(self, head: rows.Claimed) -> Outcome:
        with self.rt.db.transaction() as conn:
            up_to = rows.last_pending_id(conn, head.subject_id) or head.id
        if head.taken_over:
            self.taken_over += 1
            log.warning("outbox.taken_over", subject_id=head.subject_id, owed=head.event)
        reached_notifier = False
        try:
            method, view = self._current(head)
            if method is not None and head.taken_over and view is not None:
                reached_notifier = True
                self._adopt_lost_card(head, view)
            if method is not None and not self._stale(head, view):
                reached_notifier = True
                getattr(self.notifier, method)(view)
        except DeliveryFailed as exc:
            if exc.hold == "delivery":
                self._pause(head, exc)
                return Outcome(head.subject_id, False, exc)
            if exc.code is not None:
                self._resume()  # the service answered past its authentication: the token works
            self._failed(head, up_to, str(exc), exc.retryable, exc.retry_after, exc)
            return Outcome(head.subject_id, False, exc)
        except (UnknownApproval, UnknownTask):
            method = None  # its run was deleted: nothing left to show
        except Exception as exc:
            if is_disconnect(exc):
                raise
            # A bug in a card builder: retried like a permanent error, then dead.
            log.exception("outbox.notifier_error", subject_id=head.subject_id)
            error = f"{type(exc).__name__}: {exc}"
            self._failed(head, up_to, error, False, None)
            return Outcome(head.subject_id, False, DeliveryFailed(error, retryable=False))
        if reached_notifier:
            self._resume()
        self.pauses.release_subject(head.subject_id)
        now = self.rt.clock.now()
        with self.rt.db.transaction() as conn:
            rows.mark_delivered(conn, head.subject_id, up_to=up_to, now=now)
        self.delivered += 1
        watcher = observations.observer()
        if watcher.active:  # owed (its oldest row) to delivered, as this sender saw it
            watcher.outbox_delivered(max((now - head.created_at).total_seconds(), 0.0))
        log.info("outbox.delivered", subject_id=head.subject_id, owed=head.event)
        return Outcome(head.subject_id, True)

    def _pause(self, head: rows.Claimed, failure: DeliveryFailed) -> None:
        """Every delivery would fail as this one did: pause them all (this row waits for the
        probe, no attempt counted)."""
        pause = self._paused_by(failure, subject_id=head.subject_id)
        with self.rt.db.transaction() as conn:
            rows.postpone(
                conn,
                head.id,
                worker=self.rt.worker_id,
                retry_at=pause.until,
                error=str(failure),
                keep_holder=head.taken_over,
            )

    def _paused_by(self, failure: DeliveryFailed, *, subject_id: str | None = None) -> Pause:
        """Begin the pause, or lengthen it after a failed probe; logged at `error` when it
        begins, at `warning` when a probe fails."""
        now = self.rt.clock.now()
        before, pause = self.pauses.begin(failure, now, self.pause_first, self.pause_cap)
        retry_in = (pause.until - now).total_seconds()
        if before is None:
            log.error(
                "outbox.paused",
                reason=pause.reason,
                error=pause.error,
                action=pause.action,
                retry_in=retry_in,
                subject_id=subject_id,
                detail="Slack refuses every delivery: nothing goes dead, every card waits; "
                f"fix it ({pause.action}) and delivery resumes by itself at the next probe",
            )
        elif pause is not before:
            log.warning(
                "outbox.still_paused",
                reason=pause.reason,
                error=pause.error,
                action=pause.action,
                retry_in=retry_in,
                paused_for=(now - pause.since).total_seconds(),
            )
        return pause

    def _probe_idle(self) -> None:
        """The pause ran out and nothing is due here to probe with (another replica delivered
        it): ask the notifier whether delivery works (an optional `check_delivery()`, Slack's
        `auth.test`), so a pause this process saw does not outlive its cause."""
        pause = self.pauses.pause
        check = getattr(self.notifier, "check_delivery", None)
        if pause is None or check is None or self.rt.clock.now() < pause.until:
            return
        try:
            check()
        except DeliveryFailed as exc:
            if exc.hold == "delivery":
                self._paused_by(exc)
            else:  # Slack down, say: nothing learnt about the token; ask again a while later
                self.pauses.probe_later(self.rt.clock.now() + self.pause_first)
            return
        self._resume()

    def _resume(self) -> None:
        """The notifier delivered, or Slack answered past its authentication: the pause, if
        any, is over."""
        pause = self.pauses.end()
        if pause is not None:
            log.info(
                "outbox.resumed",
                reason=pause.reason,
                paused_for=(self.rt.clock.now() - pause.since).total_seconds(),
                probes=pause.probes + 1,
            )

    def _adopt_lost_card(self, head: rows.Claimed, view: View) -> None:
        """The previous sender may have posted the card and died before recording it: let the
        notifier find it (an optional `adopt_lost_card(view)`), so it is updated, not posted
        twice."""
        adopt = getattr(self.notifier, "adopt_lost_card", None)
        if adopt is not None:
            adopt(view)

    def _current(self, head: rows.Claimed) -> tuple[str | None, View | None]:
        """Which notifier method shows the subject's state now, and the view to show."""
        if head.event in APPROVAL_EVENTS:
            approval = inspect.get_approval(self.rt, head.subject_id)
            pending = approval.status == "pending"
            if pending:
                return "approval_requested", approval
            # Decided: the card shows how the call ended, and its undo, as they are now.
            return "approval_decided", call_outcomes.with_outcome(self.rt, approval)
        if head.event == run_notices.RUN_NOTICE:
            notice = run_notices.notice_for(self.rt, head.subject_id)
            if notice is None or not hasattr(self.notifier, "run_notice"):
                return None, None  # nothing to tell now, or no way to tell it here
            return "run_notice", notice
        if head.event in TASK_EVENTS:
            task = inspect.get_task(self.rt, head.subject_id)
            if task.status == "open":
                return "task_opened", task
            # Answered: the card says what the run did next, as it stands now.
            return "task_answered", task_outcomes.with_after(self.rt, task)
        if head.event in ALERT_EVENTS:
            alert_id = alerting.alert_id_of(head.subject_id)
            alert = alerting.get_alert(self.rt, alert_id) if alert_id is not None else None
            if alert is None:
                return None, None  # deleted: nothing left to show
            return ("alert_opened" if alert.is_open else "alert_recovered"), alert
        if head.event in REVIEW_EVENTS:
            week_id = review.week_id_of(head.subject_id)
            try:
                week = review.get_week(self.rt, week_id) if week_id is not None else None
            except UnknownReviewWeek:
                week = None
            return (head.event if week is not None else None), week
        if head.event == REVIEW_VERDICT:
            item_id = review.item_id_of(head.subject_id)
            try:
                item = review.get_item(self.rt, item_id) if item_id is not None else None
            except UnknownReviewItem:
                item = None
            return ("review_verdict" if item is not None else None), item
        if head.event == ATTENTION_EVENT:  # a needs-attention notice (pipelines/run_operations.py)
            try:
                return "run_needs_attention", inspect.get_run(self.rt, head.subject_id)
            except UnknownRun:
                return None, None  # pruned: nothing left to show
        log.error("outbox.unknown_event", owed=head.event, subject_id=head.subject_id)
        return None, None

    def _stale(self, head: rows.Claimed, view: View | None) -> bool:
        """A subject settled long ago that never had a card (rows a CLI-only install left
        behind) is not worth a late post; anything still waiting for a person always is. An
        alert is worth posting for `alerting.RETRY_HORIZON`."""
        if isinstance(view, ReviewWeekView | ReviewItemView | Run):
            return False  # a review is posted, however late: its pick and verdicts are stored
        if isinstance(view, RunNotice):
            return head.created_at <= self.rt.clock.now() - self.stale_after
        if isinstance(view, AlertView):
            stale = head.created_at <= self.rt.clock.now() - alerting.RETRY_HORIZON
            if stale:
                log.info("outbox.skipped_stale", subject_id=head.subject_id)
            return stale
        if view is None or head.created_at > self.rt.clock.now() - self.stale_after:
            return False
        if view.status in ("pending", "open"):
            return False
        kind = "approval" if isinstance(view, ApprovalView) else "task"
        with self.rt.db.transaction() as conn:
            has_card = messages.message_ref(conn, kind=kind, ref_id=view.id) is not None
        if not has_card:
            log.info(
                "outbox.skipped_stale", subject_id=head.subject_id, created=str(head.created_at)
            )
        return not has_card

    def _failed(
        self,
        head: rows.Claimed,
        up_to: int,
        error: str,
        retryable: bool,
        retry_after: float | None,
        failure: DeliveryFailed | None = None,
    ) -> None:
        attempts = head.attempts + 1
        now = self.rt.clock.now()
        if failure is not None and failure.hold is not None:
            self._held(head, attempts, failure, now)
            return
        with self.rt.db.transaction() as conn:
            if not retryable and attempts >= self.max_attempts:
                rows.mark_dead(conn, head.subject_id, up_to=up_to, error=error)
                log.error(
                    "outbox.dead",
                    subject_id=head.subject_id,
                    owed=head.event,
                    attempts=attempts,
                    error=error,
                    hint="fix the cause (channel, token, scopes); an approval or task is "
                    "still decidable with `gatehouse approve|reject|answer`, an alert is "
                    "listed by `gatehouse alerts`",
                )
                return
            retry_at = self.retry_at(now, attempts, retry_after)
            rows.reschedule(
                conn,
                head.id,
                worker=self.rt.worker_id,
                retry_at=retry_at,
                error=error,
                keep_holder=head.taken_over,
            )
        log.warning(
            "outbox.retry",
            subject_id=head.subject_id,
            attempts=attempts,
            retry_at=retry_at.isoformat(),
            error=error,
        )

    def _held(
        self, head: rows.Claimed, attempts: int, failure: DeliveryFailed, now: datetime
    ) -> None:
        """This delivery waits for an operator (a scope to add): retried on the pause's
        schedule, never given up; each failure logged at `error` with what to do."""
        wait = min(self.pause_first * 2 ** (attempts - 1), self.pause_cap)
        retry_at = now + wait
        self.pauses.hold_subject(head.subject_id, failure.reason, now)
        with self.rt.db.transaction() as conn:
            rows.reschedule(
                conn,
                head.id,
                worker=self.rt.worker_id,
                retry_at=retry_at,
                error=str(failure),
                keep_holder=head.taken_over,
            )
        log.error(
            "outbox.held",
            subject_id=head.subject_id,
            owed=head.event,
            reason=failure.reason,
            error=str(failure),
            action=failure.action,
            attempts=attempts,
            retry_at=retry_at.isoformat(),
        )

    def retry_at(self, now: datetime, attempts: int, retry_after: float | None) -> datetime:
        """Capped exponential backoff with jitter, never sooner than `Retry-After`."""
        backoff = min(self.base_backoff * 2 ** (attempts - 1), self.max_backoff)
        delay = backoff * (0.5 + self._jitter() / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return now + timedelta(seconds=delay)
