"""The weekly review in Slack: a parent message and one threaded reply per picked run, with
Looks right and Flag (a modal: category, note, what it should have been), progress on the
parent, and a summary in the thread once every run is reviewed or the week is over.

Posting resumes where it stopped: the pick is stored (`pipelines.operations.review`), and the parent's and
each reply's ts are stored as soon as Slack answers, so a retry after a crash or an error posts
only what is missing. Posts are paced (Slack allows about one message a second per channel); a
429 is waited out and retried — it means nothing was posted, so the retry cannot duplicate.
The one window left is a process dying between Slack's answer and the commit of its ts (a few
milliseconds); closing it would take `conversations.replies`, i.e. the channels:history scope.
The Block Kit is in `bot.slack.review_cards`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog
from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack.actions import tell
from bot.slack.bot import Bot
from bot.slack.mrkdwn import escape
from bot.slack.review_cards import (
    DEFAULT_PACE_SECONDS,
    FLAG_ACTION,
    FLAG_CALLBACK,
    LOOKS_RIGHT_ACTION,
    flag_from_submission,
    flag_modal,
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
from pipelines.evaluation import output_schema
from pipelines.inspect import get_run
from pipelines.operations import review
from pipelines.operations.review import ReviewItemView, ReviewWeekView
from pipelines.ports import retry_after_seconds
from storage.review import FLAGGED, POSTED, SUMMARIZED

log = structlog.get_logger()

RATE_LIMIT_RETRIES = 3  # after the client's own RateLimitErrorRetryHandler gave up
EARLIER_WEEKS = 4  # weeks the summary compares the flag rate with

_posting = threading.Lock()  # one poster per process; the schedule's fire claim covers replicas
_progress = threading.Lock()  # parent updates count and send in order


class ReviewPostFailed(GatehouseError):
    pass


# -- posting -----------------------------------------------------------------------------------


class _Poster:
    """chat.postMessage, paced, with 429s waited out (nothing was posted, so a retry is safe)."""

    def __init__(self, client: WebClient, pace: float, sleep: Callable[[float], None]) -> None:
        self.client, self.pace, self.sleep = client, pace, sleep
        self.last: float | None = None

    def post(self, what: str, **message: Any) -> tuple[str, str]:
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            if self.pace > 0 and self.last is not None:
                wait = self.pace - (time.monotonic() - self.last)
                if wait > 0:
                    self.sleep(wait)
            self.last = time.monotonic()
            try:
                response = self.client.chat_postMessage(**message)
            except SlackApiError as exc:
                if exc.response.status_code == 429 and attempt < RATE_LIMIT_RETRIES:
                    # 1 s when Slack sent no readable Retry-After
                    waited = retry_after_seconds(exc.response.headers)
                    retry_after = 1.0 if waited is None else waited
                    log.warning("review.rate_limited", what=what, retry_after=retry_after)
                    self.sleep(retry_after)
                    continue
                error = exc.response.get("error")
                raise ReviewPostFailed(
                    f"Slack refused the review's {what}: {error}; "
                    "`gatehouse review post` carries on from there"
                ) from exc
            return str(response["channel"]), str(response["ts"])
        raise AssertionError("unreachable")


def _run_or_none(bot: Bot, run_id: str) -> Run | None:
    try:
        return get_run(bot.gatehouse.rt, run_id)
    except UnknownRun:
        return None


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
        poster = _Poster(bot.client, pace_seconds, sleep)
        if week.parent_ts is None:
            channel, ts = poster.post(
                "parent message",
                channel=settings.review_channel,
                text=parent_text(week, settings.timezone),
                blocks=parent_blocks(week, settings.timezone),
            )
            review.start_posting(rt, week.id, channel=channel, parent_ts=ts)
            week = review.get_week(rt, week.id)
            log.info("review.parent_posted", week_id=week.id, channel=channel, ts=ts)
        for item in week.items:
            if item.reply_ts is not None:
                continue
            run = _run_or_none(bot, item.run_id)
            _, ts = poster.post(
                f"reply {item.position}/{week.total}",
                channel=week.channel,
                thread_ts=week.parent_ts,
                text=item_text(item, run, week.total),
                blocks=item_blocks(item, run, week.total, command=settings.slash_command),
            )
            review.record_reply(rt, item.id, ts)
        review.finish_posting(rt, week.id)
        log.info("review.posted", week_id=week.id, runs=week.total)
        week = review.get_week(rt, week.id)
        if not week.total:
            review.claim_summary(rt, week.id)  # nothing to summarize
        elif week.all_reviewed:  # reviewers were quicker than the posting
            post_summary(bot, week)
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
    """Show the week's progress on the parent message (counted inside the lock, so the last
    update sent is never older than one before it)."""
    tz = bot.settings.timezone
    with _progress:
        week = review.get_week(bot.gatehouse.rt, week_id)
        if week.channel and week.parent_ts:
            try:
                bot.client.chat_update(
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


def _pipelines_of(bot: Bot, week: ReviewWeekView) -> dict[str, str]:
    found = {}
    for item in week.items:
        if item.verdict == FLAGGED:
            run = _run_or_none(bot, item.run_id)
            found[item.run_id] = run.pipeline if run else "?"
    return found


def post_summary(bot: Bot, week: ReviewWeekView) -> bool:
    """Post the summary in the thread, once (claimed in the database); False if another caller
    has it or Slack refused (then it is released for the next try)."""
    rt = bot.gatehouse.rt
    if not week.channel or not week.parent_ts or not review.claim_summary(rt, week.id):
        return False
    tz = bot.settings.timezone
    blocks = summary_blocks(
        week, review.earlier_weeks(rt, week, EARLIER_WEEKS), tz, _pipelines_of(bot, week)
    )
    try:
        response = bot.client.chat_postMessage(
            channel=week.channel,
            thread_ts=week.parent_ts,
            text=summary_text(week, tz),
            blocks=blocks,
        )
    except SlackApiError as exc:
        review.release_summary(rt, week.id)
        log.error("review.summary_failed", week_id=week.id, error=str(exc.response.get("error")))
        return False
    review.record_summary(rt, week.id, str(response["ts"]))
    log.info("review.summarized", week_id=week.id, reviewed=week.reviewed, flagged=week.flagged)
    refresh_parent(bot, week.id)
    return True


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
    """Update the run's reply, the parent's progress, and the summary (posting it when this was
    the last run to review, updating it when it was already posted)."""
    rt = bot.gatehouse.rt
    week = review.get_week(rt, item.week_id)
    if week.channel and item.reply_ts:
        run = _run_or_none(bot, item.run_id)
        try:
            bot.client.chat_update(
                channel=week.channel,
                ts=item.reply_ts,
                text=item_text(item, run, week.total),
                blocks=item_blocks(item, run, week.total, command=bot.settings.slash_command),
            )
        except SlackApiError as exc:
            log.error("review.update_failed", what="reply", error=str(exc.response.get("error")))
    week = refresh_parent(bot, week.id)
    if week.summary_ts and week.channel:
        tz = bot.settings.timezone
        earlier = review.earlier_weeks(rt, week, EARLIER_WEEKS)
        try:
            bot.client.chat_update(
                channel=week.channel,
                ts=week.summary_ts,
                text=summary_text(week, tz),
                blocks=summary_blocks(week, earlier, tz, _pipelines_of(bot, week)),
            )
        except SlackApiError as exc:
            log.error("review.update_failed", what="summary", error=str(exc.response.get("error")))
    elif week.all_reviewed and week.status == POSTED:
        post_summary(bot, week)


def _reviewer(body: Mapping[str, Any]) -> str:
    return str(body["user"]["id"])


def mark_looks_right(bot: Bot, body: dict[str, Any], item_id: int) -> None:
    try:
        item = review.looks_right(bot.gatehouse.rt, item_id, reviewer=_reviewer(body))
    except GatehouseError as refusal:
        tell(bot.client, body, f":information_source: {escape(str(refusal))}")
        return
    show_verdict(bot, item)


def record_flag(bot: Bot, body: dict[str, Any], item_id: int, flag: dict[str, Any]) -> None:
    try:
        item = review.flag(bot.gatehouse.rt, item_id, reviewer=_reviewer(body), **flag)
    except GatehouseError as refusal:
        log.warning("review.flag_refused", item_id=item_id, why=str(refusal))
        return
    show_verdict(bot, item)


def open_flag_modal(bot: Bot, trigger_id: str, value: str) -> None:
    item_id, _, rest = value.partition(":")
    run_id, _, pipeline = rest.partition(":")
    view = flag_modal(int(item_id), run_id, pipeline or None, output_schema(pipeline))
    bot.client.views_open(trigger_id=trigger_id, view=view)


def _item_id(text: str) -> int | None:
    head = text.partition(":")[0]
    return int(head) if head.isdigit() else None


def register(app: App, bot: Bot) -> None:
    @app.action(LOOKS_RIGHT_ACTION)
    def looks_right_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        item_id = _item_id(str(action.get("value", "")))
        if item_id is not None:
            bot.submit(mark_looks_right, bot, body, item_id)

    @app.action(FLAG_ACTION)
    def flag_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        value = str(action.get("value", ""))
        if _item_id(value) is not None:
            bot.submit_ui(open_flag_modal, bot, str(body["trigger_id"]), value)

    @app.view(FLAG_CALLBACK)
    def flag_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        metadata = str(view.get("private_metadata", ""))
        item_id = _item_id(metadata)
        schema = output_schema(metadata.partition(":")[2])
        flag, errors = flag_from_submission(view["state"]["values"], schema)
        if errors:
            ack(response_action="errors", errors=errors)
            return
        ack()
        if item_id is not None:
            bot.submit(record_flag, bot, body, item_id, flag)
