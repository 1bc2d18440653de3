"""The weekly review in Slack: a parent message and one threaded reply per picked run, with
Looks right and Flag (a modal: category, note, what it should have been), progress on the
parent, and a summary in the thread once every run is reviewed or the week is over.

The thread and the summary are outbox subjects (`pipelines.operations.review` owes them); this
module shows them (`SlackReview`, behind the notifier port) and runs the jobs that owe and
deliver them at once (`post_weekly_review`, `summarize_due_reviews`). Posting resumes where it
stopped: the pick is stored, and the parent's and each reply's ts are stored as soon as Slack
answers, so a retry after a crash or an error posts only what is missing; a sender that died
between Slack's answer and that commit is covered by the message metadata (the sender that
takes the delivery over finds the message in the channel or the thread and records it). Posts
are paced (Slack allows about one message a second per channel); a 429 is waited out and
retried — it means nothing was posted, so the retry cannot duplicate — and past a few the
outbox retries after `Retry-After`. The Block Kit is in `bot.slack.review_cards`, the buttons and
the Flag modal in `bot.slack.review_listener`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.slack.bot import Bot
from bot.slack.delivery import delivery_failure, find_by_metadata, looks_up_history, metadata
from bot.slack.review_cards import (
    DEFAULT_PACE_SECONDS,
    item_blocks,
    item_text,
    parent_blocks,
    parent_text,
    summary_blocks,
    summary_text,
)
from pipelines import GatehouseError, Run
from pipelines.config import ConfigurationError
from pipelines.errors import UnknownRun
from pipelines.inspect import get_run
from pipelines.operations import review
from pipelines.operations.review import ReviewItemView, ReviewWeekView
from pipelines.outbox import OutboxSender, Outcome
from pipelines.ports import DeliveryFailed, SilentNotifier, retry_after_seconds
from pipelines.runtime import Runtime
from storage.review import FLAGGED, POSTED, SUMMARIZED

log = structlog.get_logger()

RATE_LIMIT_RETRIES = 3  # after the client's own RateLimitErrorRetryHandler gave up
EARLIER_WEEKS = 4  # weeks the summary compares the flag rate with
# One delivery posts for at most this long, then hands the rest to the next pass (other cards
# go out in between; the claim's lease is never near its end).
POSTING_BUDGET_SECONDS = 30.0
CONTINUES = "review_continues"  # a DeliveryFailed code: not a failure, the rest follows

_posting = threading.Lock()  # one poster per process; the schedule's fire claim covers replicas
_progress = threading.Lock()  # parent updates count and send in order


class ReviewPostFailed(GatehouseError):
    pass


def _run_or_none(rt: Runtime, run_id: str) -> Run | None:
    try:
        return get_run(rt, run_id)
    except UnknownRun:
        return None


# -- showing the review in Slack (the notifier's review half) ----------------------------------


class SlackReview(SilentNotifier):
    """Shows a week's thread and summary, idempotently: what is posted and recorded is never
    posted again. Approvals, tasks and alerts are `SlackNotifier`'s; alone (the review jobs'
    own deliveries) this shows the review only."""

    def __init__(
        self,
        client: WebClient,
        *,
        channel: str | None,
        timezone: str,
        command: str,
        runtime: Callable[[], Runtime],
        pace: float = DEFAULT_PACE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._channel = channel
        self._timezone = timezone
        self._command = command
        self._runtime = runtime
        self._pace = pace
        self._sleep = sleep
        self._last: float | None = None

    @classmethod
    def for_bot(
        cls,
        bot: Bot,
        *,
        pace: float = DEFAULT_PACE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> SlackReview:
        settings = bot.settings
        return cls(
            bot.client,
            channel=settings.review_channel,
            timezone=settings.timezone,
            command=settings.slash_command,
            runtime=lambda: bot.gatehouse.rt,
            pace=pace,
            sleep=sleep,
        )

    # -- the thread --

    def review_thread(self, week: ReviewWeekView) -> None:
        """Post what of the thread is not in Slack yet: the parent, then one reply per run."""
        rt = self._runtime()
        week = review.get_week(rt, week.id)
        started = time.monotonic()
        if week.parent_ts is None:
            if not self._channel:
                raise DeliveryFailed(
                    "GATEHOUSE_REVIEW_CHANNEL is not set", retryable=True, code="no_review_channel"
                )
            channel, ts = self._post(
                "parent message",
                channel=self._channel,
                text=parent_text(week, self._timezone),
                blocks=parent_blocks(week, self._timezone),
                metadata=metadata("review", review.thread_subject(week.id)),
            )
            review.start_posting(rt, week.id, channel=channel, parent_ts=ts)
            week = review.get_week(rt, week.id)
            log.info("review.parent_posted", week_id=week.id, channel=channel, ts=ts)
        for item in week.items:
            if item.reply_ts is not None:
                continue
            if time.monotonic() - started > POSTING_BUDGET_SECONDS:
                raise DeliveryFailed(
                    "the review's thread is partly posted; the rest follows",
                    retryable=True,
                    retry_after=0.0,
                    code=CONTINUES,
                )
            run = _run_or_none(rt, item.run_id)
            _, ts = self._post(
                f"reply {item.position}/{week.total}",
                channel=week.channel,
                thread_ts=week.parent_ts,
                text=item_text(item, run, week.total),
                blocks=item_blocks(item, run, week.total, command=self._command),
                metadata=metadata("review_item", review.item_ref(item.id)),
            )
            review.record_reply(rt, item.id, ts)
        if review.finish_posting(rt, week.id):
            log.info("review.posted", week_id=week.id, runs=week.total)

    def _post(self, what: str, **message: Any) -> tuple[str, str]:
        """chat.postMessage, paced, with 429s waited out (nothing was posted, so a retry is
        safe); past `RATE_LIMIT_RETRIES`, or any other refusal, a `DeliveryFailed`."""
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            if self._pace > 0 and self._last is not None:
                wait = self._pace - (time.monotonic() - self._last)
                if wait > 0:
                    self._sleep(wait)
            self._last = time.monotonic()
            try:
                response = self._client.chat_postMessage(**message)
            except SlackApiError as exc:
                if exc.response.status_code == 429 and attempt < RATE_LIMIT_RETRIES:
                    # 1 s when Slack sent no readable Retry-After
                    waited = retry_after_seconds(exc.response.headers)
                    retry_after = 1.0 if waited is None else waited
                    log.warning("review.rate_limited", what=what, retry_after=retry_after)
                    self._sleep(retry_after)
                    continue
                raise self._refused(what, exc) from exc
            except (SlackClientError, OSError) as exc:
                raise self._refused(what, exc) from exc
            return str(response["channel"]), str(response["ts"])
        raise AssertionError("unreachable")

    @staticmethod
    def _refused(what: str, exc: Exception) -> DeliveryFailed:
        failure = delivery_failure(exc)
        fix = f"; {failure.action}" if failure.action else ""  # a token, a scope to add
        return DeliveryFailed(
            f"Slack refused the review's {what}: {failure.reason}{fix}",
            retryable=failure.retryable,
            retry_after=failure.retry_after,
            code=failure.code,
            hold=failure.hold,
            action=failure.action,
        )

    # -- a verdict --

    def review_verdict(self, item: ReviewItemView) -> None:
        """Show a verdict: the run's reply, the parent's progress, the summary if posted."""
        rt = self._runtime()
        item = review.get_item(rt, item.id)
        week = review.get_week(rt, item.week_id)
        if week.channel and item.reply_ts:
            run = _run_or_none(rt, item.run_id)
            try:
                self._client.chat_update(
                    channel=week.channel,
                    ts=item.reply_ts,
                    text=item_text(item, run, week.total),
                    blocks=item_blocks(item, run, week.total, command=self._command),
                )
            except (SlackClientError, OSError) as exc:
                failure = delivery_failure(exc)
                log.error("review.update_failed", what="reply", error=failure.reason)
                raise failure from exc
        week = self.refresh_parent(week.id)
        self.update_summary(week)

    # -- the summary and the parent's progress --

    def review_summary(self, week: ReviewWeekView) -> None:
        """Post the summary in the thread (once; later deliveries update it)."""
        rt = self._runtime()
        week = review.get_week(rt, week.id)
        if week.summary_ts is not None:
            self.update_summary(week)
            return
        if not week.channel or not week.parent_ts:
            raise DeliveryFailed("the review's thread is not posted yet", retryable=True)
        earlier = review.earlier_weeks(rt, week, EARLIER_WEEKS)
        try:
            response = self._client.chat_postMessage(
                channel=week.channel,
                thread_ts=week.parent_ts,
                text=summary_text(week, self._timezone),
                blocks=summary_blocks(week, earlier, self._timezone, _pipelines_of(rt, week)),
                metadata=metadata("review_summary", review.summary_subject(week.id)),
            )
        except (SlackClientError, OSError) as exc:
            failure = delivery_failure(exc)
            log.error("review.summary_failed", week_id=week.id, error=failure.reason)
            raise failure from exc
        review.record_summary(rt, week.id, str(response["ts"]))
        log.info("review.summarized", week_id=week.id, reviewed=week.reviewed, flagged=week.flagged)
        self.refresh_parent(week.id)

    def update_summary(self, week: ReviewWeekView) -> None:
        if not week.summary_ts or not week.channel:
            return
        rt = self._runtime()
        earlier = review.earlier_weeks(rt, week, EARLIER_WEEKS)
        try:
            self._client.chat_update(
                channel=week.channel,
                ts=week.summary_ts,
                text=summary_text(week, self._timezone),
                blocks=summary_blocks(week, earlier, self._timezone, _pipelines_of(rt, week)),
            )
        except SlackApiError as exc:
            log.error("review.update_failed", what="summary", error=str(exc.response.get("error")))

    def refresh_parent(self, week_id: int) -> ReviewWeekView:
        """Show the week's progress on the parent message (counted inside the lock, so the last
        update sent is never older than one before it)."""
        tz = self._timezone
        with _progress:
            week = review.get_week(self._runtime(), week_id)
            if week.channel and week.parent_ts:
                try:
                    self._client.chat_update(
                        channel=week.channel,
                        ts=week.parent_ts,
                        text=parent_text(week, tz),
                        blocks=parent_blocks(week, tz),
                    )
                except SlackApiError as exc:
                    log.error(
                        "review.update_failed", what="parent", error=str(exc.response.get("error"))
                    )
        return week

    # -- a delivery taken over --

    def adopt_lost_card(self, week: ReviewWeekView) -> bool:
        """Record what a sender that died posted without recording it: the parent (found in
        the channel's history by its metadata), replies and the summary (in the thread).
        True when something was found."""
        rt = self._runtime()
        found = False
        if week.parent_ts is None and self._channel and looks_up_history(self._channel):
            parent = find_by_metadata(self._client, self._channel, review.thread_subject(week.id))
            if parent is not None:
                review.start_posting(rt, week.id, channel=parent[0], parent_ts=parent[1])
                log.warning("review.parent_adopted", week_id=week.id)
                found = True
        week = review.get_week(rt, week.id)
        if not week.channel or not week.parent_ts:
            return found
        try:
            thread = self._client.conversations_replies(
                channel=week.channel, ts=week.parent_ts, include_all_metadata=True, limit=200
            )
        except (SlackClientError, OSError) as exc:
            raise delivery_failure(exc) from exc
        by_ref = {
            (m.get("metadata") or {}).get("event_payload", {}).get("ref_id"): str(m["ts"])
            for m in thread.get("messages") or []
        }
        for item in week.items:
            ts = by_ref.get(review.item_ref(item.id))
            if item.reply_ts is None and ts is not None:
                found = review.record_reply(rt, item.id, ts) or found
        summary = by_ref.get(review.summary_subject(week.id))
        if week.summary_ts is None and summary is not None:
            found = review.record_summary(rt, week.id, summary) or found
        if found:
            log.warning("review.messages_adopted", week_id=week.id)
        return found


# -- the jobs ----------------------------------------------------------------------------------


def _deliver(
    bot: Bot, poster: SlackReview, subject_id: str, *, raise_failure: bool
) -> Outcome | None:
    """Deliver one review subject now, on this thread; None when another sender holds it.
    The job is the retry schedule (no backoff of its own; never sooner than Retry-After)."""
    sender = OutboxSender(bot.gatehouse.rt, notifier=poster, base_backoff=0.0)
    while True:
        outcome = sender.deliver_subject(subject_id)
        failure = None if outcome is None else outcome.failure
        if failure is not None and failure.code == CONTINUES:
            continue
        if failure is not None and raise_failure:
            raise ReviewPostFailed(f"{failure}; `gatehouse review post` carries on from there")
        return outcome


def post_weekly_review(
    bot: Bot,
    now: datetime | None = None,
    *,
    pace_seconds: float = DEFAULT_PACE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> ReviewWeekView:
    """Pick (or load) this week's review and post whatever of it is not posted yet: the parent,
    then one reply per run. Summaries of earlier weeks that are over are posted first."""
    settings = bot.settings
    if not settings.review_channel:
        raise ConfigurationError(
            "GATEHOUSE_REVIEW_CHANNEL is not set: the channel (id or name) the weekly review "
            "is posted in"
        )
    rt = bot.gatehouse.rt
    now = now or rt.clock.now()
    with _posting:
        summarize_due_reviews(bot, now)
        week = review.pick_week(
            rt,
            size=settings.review_size,
            stratify=settings.review_stratify,
            timezone=settings.timezone,
            now=now,
        )
        if week.status in (POSTED, SUMMARIZED):
            return week
        poster = SlackReview.for_bot(bot, pace=pace_seconds, sleep=sleep)
        _deliver(bot, poster, review.owe_thread(rt, week.id), raise_failure=True)
        week = review.get_week(rt, week.id)
        if week.total and week.status == POSTED and week.all_reviewed:
            post_summary(bot, week, poster)  # reviewers were quicker than the posting
        return review.get_week(rt, week.id)


def resume_review(bot: Bot, now: datetime | None = None) -> ReviewWeekView | None:
    """Carry on posting this week's review if one was started and not finished (at start-up,
    after a crash); None when there is nothing to resume. Never starts a new review."""
    rt = bot.gatehouse.rt
    now = now or rt.clock.now()
    week = review.find_week(rt, review.week_start_of(now, bot.settings.timezone))
    if week is None or week.status in (POSTED, SUMMARIZED):
        return None
    return post_weekly_review(bot, now, pace_seconds=DEFAULT_PACE_SECONDS)


def refresh_parent(bot: Bot, week_id: int) -> ReviewWeekView:
    """Show the week's progress on the parent message."""
    return SlackReview.for_bot(bot).refresh_parent(week_id)


def _pipelines_of(rt: Runtime, week: ReviewWeekView) -> dict[str, str]:
    found = {}
    for item in week.items:
        if item.verdict == FLAGGED:
            run = _run_or_none(rt, item.run_id)
            found[item.run_id] = run.pipeline if run else "?"
    return found


def post_summary(bot: Bot, week: ReviewWeekView, poster: SlackReview | None = None) -> bool:
    """Owe the summary and deliver it now (once: the outbox subject and its recorded ts); False
    if it was posted already, another sender has it, or Slack refused (then the next try
    delivers it)."""
    rt = bot.gatehouse.rt
    if not week.channel or not week.parent_ts:
        return False
    subject = review.owe_summary(rt, week.id)
    if subject is None:
        return False
    outcome = _deliver(bot, poster or SlackReview.for_bot(bot), subject, raise_failure=False)
    if outcome is None or not outcome.delivered:
        return False
    return review.get_week(rt, week.id).summary_ts is not None


def summarize_due_reviews(bot: Bot, now: datetime | None = None) -> list[ReviewWeekView]:
    """Post the summary of every posted review whose week is over (the job's entry point: run
    it hourly or daily; `post_weekly_review` runs it too). Returns the weeks summarized."""
    rt = bot.gatehouse.rt
    now = now or rt.clock.now()
    done = []
    for week in review.weeks_due_for_summary(rt, now, bot.settings.timezone):
        if post_summary(bot, week):
            done.append(review.get_week(rt, week.id))
    return done


# -- after a verdict ---------------------------------------------------------------------------


def show_verdict(bot: Bot, item: ReviewItemView) -> None:
    """Deliver the verdict now (the run's reply, the parent's progress, the summary when it
    was posted), and post the summary when this was the last run to review."""
    rt = bot.gatehouse.rt
    slack = SlackReview.for_bot(bot)
    _deliver(bot, slack, review.item_ref(item.id), raise_failure=False)
    week = review.get_week(rt, item.week_id)
    if week.summary_ts is None and week.all_reviewed and week.status == POSTED:
        post_summary(bot, week, slack)
