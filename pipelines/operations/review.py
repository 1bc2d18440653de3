"""The weekly review: a random sample of last week's finished runs, stored so that every
re-post shows the same runs, and the verdicts people give them.

What is picked: runs that *finished* in the 7 days before the pick, in any final state except
`invalid_input` (refused before any step ran: there is nothing to review). Each is equally
likely; with `stratify`, the sample is shared evenly among the pipelines that have runs in the
window, then drawn uniformly within each. How that stays fast on millions of runs, and what it
means for each run's chance, is `pipelines.operations.sampling`'s business.

A week is keyed by its start (Monday 00:00 in the configured time zone, stored as UTC): the
first pick of a week is stored with its items in one transaction, and any later call for that
week (a re-post, a retry after a crash, another replica) gets the stored pick back.

What people must see is owed through the outbox, like approval cards: the thread (the parent
and one reply per run: subject `review:ID`), the summary (`review-summary:ID`) and each verdict
(its reply updated, with the parent's progress: `review-item:ID`). The outbox
sender hands the week's state at delivery time to the notifier port, which posts what is not in
Slack yet and records where (`start_posting`, `record_reply`, `record_summary`), so a retry, a
sender that died, or another replica posts only what is missing.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Connection

from pipelines import fire_times
from pipelines.config import ConfigurationError
from pipelines.errors import GatehouseError
from pipelines.operations.sampling import pick_runs
from pipelines.runtime import Runtime
from pipelines.sensitive import mask
from pipelines.views import iso
from storage import outbox as outbox_rows
from storage import review as rows
from storage.models import FINISHED_RUN_STATUSES, RunStatus
from storage.review import FLAGGED, LOOKS_RIGHT, WeekCounts
from storage.sampling import Window

log = structlog.get_logger()

# Every final state but invalid_input. (Evaluation runs, when issue 8 brings them, must stay out
# of this window too: a status or trigger of their own, excluded here.)
REVIEWABLE_STATUSES = frozenset(str(s) for s in FINISHED_RUN_STATUSES - {RunStatus.INVALID_INPUT})
WINDOW = timedelta(days=7)

FLAG_CATEGORIES: Mapping[str, str] = {
    "wrong_output": "Wrong output",
    "hallucination": "Hallucination",
    "bad_routing": "Bad routing",
    "policy": "Policy",
    "other": "Other",
}


# What the outbox owes about a week (its rows' `event`), and the subjects.
REVIEW_THREAD = "review_thread"
REVIEW_SUMMARY = "review_summary"
REVIEW_EVENTS = (REVIEW_THREAD, REVIEW_SUMMARY)
REVIEW_VERDICT = "review_verdict"  # a reply to update (subject `review-item:ID`)
THREAD_PREFIX = "review:"
SUMMARY_PREFIX = "review-summary:"
ITEM_PREFIX = "review-item:"  # a reply: its message metadata, and its verdict's subject


def thread_subject(week_id: int) -> str:
    return f"{THREAD_PREFIX}{week_id}"


def summary_subject(week_id: int) -> str:
    return f"{SUMMARY_PREFIX}{week_id}"


def item_ref(item_id: int) -> str:
    return f"{ITEM_PREFIX}{item_id}"


def item_id_of(subject_id: str) -> int | None:
    """The review item a verdict's subject names, or None when it names something else."""
    tail = subject_id[len(ITEM_PREFIX) :]
    return int(tail) if subject_id.startswith(ITEM_PREFIX) and tail.isdigit() else None


def week_id_of(subject_id: str) -> int | None:
    """The week a review subject names, or None when it names something else."""
    for prefix in (THREAD_PREFIX, SUMMARY_PREFIX):
        if subject_id.startswith(prefix) and subject_id[len(prefix) :].isdigit():
            return int(subject_id[len(prefix) :])
    return None


class UnknownReviewItem(GatehouseError):
    pass


class UnknownReviewWeek(GatehouseError):
    pass


class AlreadyReviewed(GatehouseError):
    """A Looks right on a run somebody already reviewed."""


class InvalidFlag(GatehouseError):
    pass


# -- views -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewItemView:
    id: int
    week_id: int
    position: int
    run_id: str
    reply_ts: str | None
    verdict: str | None
    category: str | None
    note: str | None
    expected: Any
    reviewer: str | None
    reviewed_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> ReviewItemView:
        return cls(
            id=row.id,
            week_id=row.week_id,
            position=row.position,
            run_id=row.run_id,
            reply_ts=row.reply_ts,
            verdict=row.verdict,
            category=row.category,
            note=row.note,
            expected=row.expected,
            reviewer=row.reviewer,
            reviewed_at=row.reviewed_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "position": self.position,
            "run_id": self.run_id,
            "reply_ts": self.reply_ts,
            "verdict": self.verdict,
            "category": self.category,
            "note": self.note,
            "expected": self.expected,
            "reviewer": self.reviewer,
            "reviewed_at": iso(self.reviewed_at),
        }


@dataclass(frozen=True)
class ReviewWeekView:
    id: int
    week_start: datetime
    picked_at: datetime
    status: str
    channel: str | None
    parent_ts: str | None
    summary_ts: str | None
    items: list[ReviewItemView] = field(default_factory=list)

    @property
    def window_since(self) -> datetime:
        return self.picked_at - WINDOW

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def reviewed(self) -> int:
        return sum(1 for i in self.items if i.verdict is not None)

    @property
    def flagged(self) -> int:
        return sum(1 for i in self.items if i.verdict == FLAGGED)

    @property
    def flag_rate(self) -> float | None:
        """Flagged over reviewed (None before any verdict)."""
        return self.flagged / self.reviewed if self.reviewed else None

    @property
    def all_reviewed(self) -> bool:
        return self.reviewed == self.total

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "week_start": iso(self.week_start),
            "picked_at": iso(self.picked_at),
            "window": {"since": iso(self.window_since), "until": iso(self.picked_at)},
            "status": self.status,
            "channel": self.channel,
            "parent_ts": self.parent_ts,
            "summary_ts": self.summary_ts,
            "total": self.total,
            "reviewed": self.reviewed,
            "flagged": self.flagged,
            "items": [i.to_json() for i in self.items],
        }


def _week_view(conn: Connection, row: Any) -> ReviewWeekView:
    return ReviewWeekView(
        id=row.id,
        week_start=row.week_start,
        picked_at=row.picked_at,
        status=row.status,
        channel=row.channel,
        parent_ts=row.parent_ts,
        summary_ts=row.summary_ts,
        items=[ReviewItemView.of(i) for i in rows.week_items(conn, row.id)],
    )


# -- weeks -------------------------------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    """GATEHOUSE_TIMEZONE as a zone, or a ConfigurationError that names the variable."""
    try:
        return fire_times.zone(name)
    except ValueError as exc:
        raise ConfigurationError(f"GATEHOUSE_TIMEZONE: {exc}") from None


def week_start_of(moment: datetime, timezone: str) -> datetime:
    """Monday 00:00 of `moment`'s week in `timezone`, as an aware datetime (compare in UTC)."""
    tz = zone(timezone)
    local = moment.astimezone(tz)
    monday = local.date() - timedelta(days=local.weekday())
    return datetime(monday.year, monday.month, monday.day, tzinfo=tz)


# -- picking -----------------------------------------------------------------------------------


def pick_week(
    rt: Runtime,
    *,
    size: int,
    stratify: bool,
    timezone: str,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> ReviewWeekView:
    """This week's review: picked and stored on the first call, the stored pick afterwards."""
    now = now or rt.clock.now()
    start = week_start_of(now, timezone)
    with rt.db.transaction() as conn:
        row = rows.fetch_week(conn, week_start=start)
        if row is None:
            window = Window(now - WINDOW, now, REVIEWABLE_STATUSES)
            run_ids = pick_runs(conn, window, size, stratify=stratify, rng=rng or random.Random())
            if rows.insert_week(conn, week_start=start, picked_at=now, run_ids=run_ids):
                log.info("review.picked", week_start=iso(start), runs=len(run_ids))
            row = rows.fetch_week(conn, week_start=start)
        return _week_view(conn, row)


def get_week(rt: Runtime, week_id: int) -> ReviewWeekView:
    with rt.db.transaction() as conn:
        row = rows.fetch_week(conn, week_id=week_id)
        if row is None:
            raise UnknownReviewWeek(f"no weekly review {week_id}")
        return _week_view(conn, row)


def find_week(rt: Runtime, week_start: datetime) -> ReviewWeekView | None:
    with rt.db.transaction() as conn:
        row = rows.fetch_week(conn, week_start=week_start)
        return _week_view(conn, row) if row is not None else None


def get_item(rt: Runtime, item_id: int) -> ReviewItemView:
    with rt.db.transaction() as conn:
        row = rows.fetch_item(conn, item_id)
    if row is None:
        raise UnknownReviewItem(f"no review item {item_id}; it may belong to a deleted review")
    return ReviewItemView.of(row)


# -- what is owed, and where it was posted ----------------------------------------------------


def _owe(conn: Connection, event: str, subject_id: str, now: datetime) -> None:
    """One pending row per subject is enough: the delivery shows the week as it is then."""
    if outbox_rows.last_pending_id(conn, subject_id) is None:
        outbox_rows.enqueue(conn, event=event, subject_id=subject_id, now=now)


def owe_thread(rt: Runtime, week_id: int) -> str:
    """The week's thread is owed (posted only where it is missing); returns its subject."""
    subject = thread_subject(week_id)
    with rt.db.transaction() as conn:
        row = rows.fetch_week(conn, week_id=week_id)
        if row is not None and row.status in (rows.PICKED, rows.POSTING):
            _owe(conn, REVIEW_THREAD, subject, rt.clock.now())
    return subject


def owe_summary(rt: Runtime, week_id: int) -> str | None:
    """The week's summary is owed (once every run is reviewed, or the week is over); returns
    its subject, or None when it is posted already (or there is nothing to summarize)."""
    subject = summary_subject(week_id)
    with rt.db.transaction() as conn:
        row = rows.fetch_week(conn, week_id=week_id)
        if row is None or row.summary_ts is not None or row.status == rows.SUMMARIZED:
            return None
        _owe(conn, REVIEW_SUMMARY, subject, rt.clock.now())
    return subject


def start_posting(rt: Runtime, week_id: int, *, channel: str, parent_ts: str) -> bool:
    with rt.db.transaction() as conn:
        return rows.start_posting(conn, week_id, channel=channel, parent_ts=parent_ts)


def record_reply(rt: Runtime, item_id: int, reply_ts: str) -> bool:
    with rt.db.transaction() as conn:
        return rows.record_reply(conn, item_id, reply_ts)


def finish_posting(rt: Runtime, week_id: int) -> bool:
    """Every reply is in the thread. A week with no run has nothing to summarize either."""
    with rt.db.transaction() as conn:
        if not rows.week_items(conn, week_id):
            return rows.move_week(
                conn, week_id, from_status=[rows.POSTING], to_status=rows.SUMMARIZED
            )
        return rows.move_week(conn, week_id, from_status=[rows.POSTING], to_status=rows.POSTED)


def record_summary(rt: Runtime, week_id: int, summary_ts: str) -> bool:
    """Where the summary was posted (once); the week is summarized."""
    with rt.db.transaction() as conn:
        row = rows.fetch_week(conn, week_id=week_id)
        if row is None or row.summary_ts is not None:
            return False
        rows.record_summary(conn, week_id, summary_ts)
        rows.move_week(
            conn, week_id, from_status=[rows.POSTING, rows.POSTED], to_status=rows.SUMMARIZED
        )
        return True


# -- verdicts ----------------------------------------------------------------------------------


def looks_right(rt: Runtime, item_id: int, *, reviewer: str) -> ReviewItemView:
    """Record "looks right" on a run nobody reviewed yet; AlreadyReviewed says who did."""
    with rt.db.transaction() as conn:
        recorded = rows.record_looks_right(conn, item_id, reviewer=reviewer, now=rt.clock.now())
        row = rows.fetch_item(conn, item_id)
        if recorded and rt.outbox:
            # a row per change (no `_owe`): a delivery under way may have read the item before
            outbox_rows.enqueue(
                conn, event=REVIEW_VERDICT, subject_id=item_ref(item_id), now=rt.clock.now()
            )
    if row is None:
        raise UnknownReviewItem(f"no review item {item_id}; it may belong to a deleted review")
    item = ReviewItemView.of(row)
    if not recorded:
        what = "flagged" if item.verdict == FLAGGED else "marked looks right"
        raise AlreadyReviewed(
            f"run {item.run_id} was already {what} by {item.reviewer}; use Flag to report a problem"
        )
    log.info("review.looks_right", item_id=item_id, run_id=item.run_id, reviewer=reviewer)
    return item


def flag(
    rt: Runtime,
    item_id: int,
    *,
    reviewer: str,
    category: str,
    note: str | None = None,
    expected: Any = None,
) -> ReviewItemView:
    """Flag a run (over a "looks right", or replacing an earlier flag's category and note)."""
    if category not in FLAG_CATEGORIES:
        raise InvalidFlag(
            f"{category!r} is not a flag category; use one of: {', '.join(FLAG_CATEGORIES)}"
        )
    note = (note or "").strip() or None
    with rt.db.transaction() as conn:
        recorded = rows.record_flag(
            conn,
            item_id,
            reviewer=reviewer,
            category=category,
            note=note,
            expected=expected,
            now=rt.clock.now(),
        )
        row = rows.fetch_item(conn, item_id) if recorded else None
        if row is not None and rt.outbox:
            # a row per change (no `_owe`): a delivery under way may have read the item before
            outbox_rows.enqueue(
                conn, event=REVIEW_VERDICT, subject_id=item_ref(item_id), now=rt.clock.now()
            )
    if row is None:
        raise UnknownReviewItem(f"no review item {item_id}; it may belong to a deleted review")
    log.info("review.flagged", item_id=item_id, run_id=row.run_id, category=category)
    return ReviewItemView.of(row)


# -- summaries ---------------------------------------------------------------------------------


def weeks_due_for_summary(rt: Runtime, now: datetime, timezone: str) -> list[ReviewWeekView]:
    """Posted reviews whose week is over (a later week has begun in `timezone`)."""
    current = week_start_of(now, timezone)
    with rt.db.transaction() as conn:
        found = rows.weeks_in_status(conn, [rows.POSTING, rows.POSTED], started_before=current)
        return [_week_view(conn, row) for row in found]


def earlier_weeks(rt: Runtime, week: ReviewWeekView, count: int = 4) -> list[WeekCounts]:
    """The `count` reviews before `week`, newest first, for comparing flag rates."""
    with rt.db.transaction() as conn:
        return rows.earlier_week_counts(conn, week.week_start, count)


# -- export ------------------------------------------------------------------------------------


def reviewed_cases(rt: Runtime, *, since: datetime, flagged_only: bool) -> list[dict[str, Any]]:
    """Reviewed runs as test cases (the JSONL of `gatehouse review export`), oldest first.

    Each case keeps the test-set keys `input`, `expected` (when known: what the flagger said it
    should have been, or the recorded output a reviewer said looks right) and `note`, plus the
    record: `recorded_output`, `recorded_status`, `pipeline`, `run_id`, `verdict`, and for a
    flag `flag: {category, note, reviewer, at}`.
    """
    with rt.db.transaction() as conn:
        found = rows.reviewed_items_since(conn, since, flagged_only=flagged_only)
    cases = []
    for row in found:
        case: dict[str, Any] = {"input": row.run_input}
        if row.verdict == FLAGGED and row.expected is not None:
            case["expected"] = row.expected
        elif row.verdict == LOOKS_RIGHT and row.run_output is not None:
            case["expected"] = row.run_output
        case["note"] = row.note or ""
        case["recorded_output"] = row.run_output
        case["recorded_status"] = row.run_status
        if row.run_error:
            case["recorded_error"] = row.run_error
        case["pipeline"] = row.pipeline
        case["run_id"] = row.run_id
        case["verdict"] = row.verdict
        if row.verdict == FLAGGED:
            case["flag"] = {
                "category": row.category,
                "note": row.note,
                "reviewer": row.reviewer,
                "at": iso(row.reviewed_at),
            }
        else:
            case["reviewed_by"] = row.reviewer
            case["reviewed_at"] = iso(row.reviewed_at)
        cases.append(mask(case))  # sensitive values as ••••, as every view shows them
    return cases
