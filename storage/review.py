"""The weekly review's rows: a week (its stored pick and where it was posted), one item per
picked run, and the verdicts; counts per week for the flag rate, reviewed items for export.

Every change is a compare-and-set (`WHERE … IS NULL`, `WHERE status IN (…)`): a retry or a
second replica never stores a second parent, reply or summary. The picking reads of `runs`
are in `storage.sampling`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, Table, case, func, select
from sqlalchemy.dialects import postgresql, sqlite

from storage.fastsql import fast_insert, fast_select, fast_update
from storage.models import ReviewItem, ReviewWeek
from storage.rows import ReviewedItemRow, ReviewItemRow, ReviewWeekRow
from storage.runs import runs_table
from storage.sampling import Window as Window  # re-exported: bench/scale.py imports it here

review_weeks_table: Table = ReviewWeek.__table__  # type: ignore[assignment]
review_items_table: Table = ReviewItem.__table__  # type: ignore[assignment]

LOOKS_RIGHT = "looks_right"
FLAGGED = "flagged"

# review_weeks.status
PICKED = "picked"
POSTING = "posting"
POSTED = "posted"
SUMMARIZED = "summarized"

# -- weeks and items ---------------------------------------------------------------------------


def fetch_week(
    conn: Connection, *, week_id: int | None = None, week_start: datetime | None = None
) -> ReviewWeekRow | None:
    """The week's row by id or by start, or None."""
    where: dict[str, Any] = {"id": week_id} if week_id is not None else {"week_start": week_start}
    rows = fast_select(conn, review_weeks_table, where, ReviewWeekRow)
    return rows[0] if rows else None


def insert_week(
    conn: Connection, *, week_start: datetime, picked_at: datetime, run_ids: Sequence[str]
) -> bool:
    """Store a pick. False when another process stored this week first (its pick stands)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(review_weeks_table)
        .values(week_start=week_start, picked_at=picked_at, status=PICKED)
        .on_conflict_do_nothing(index_elements=["week_start"])
        .returning(review_weeks_table.c.id)
    )
    week_id = conn.execute(statement).scalar()
    if week_id is None:
        return False
    if run_ids:
        fast_insert(
            conn,
            review_items_table,
            [
                {"week_id": week_id, "position": position, "run_id": run_id}
                for position, run_id in enumerate(run_ids, start=1)
            ],
        )
    return True


def week_items(conn: Connection, week_id: int) -> list[ReviewItemRow]:
    where = {"week_id": week_id}
    return fast_select(conn, review_items_table, where, ReviewItemRow, order_by="position")


def fetch_item(conn: Connection, item_id: int) -> ReviewItemRow | None:
    rows = fast_select(conn, review_items_table, {"id": item_id}, ReviewItemRow)
    return rows[0] if rows else None


def start_posting(conn: Connection, week_id: int, *, channel: str, parent_ts: str) -> bool:
    """Record the parent message (once: the first stored parent stands)."""
    values = {"channel": channel, "parent_ts": parent_ts, "status": POSTING}
    return fast_update(conn, review_weeks_table, values, {"id": week_id, "parent_ts": None}) == 1


def record_reply(conn: Connection, item_id: int, reply_ts: str) -> bool:
    """Record where an item's reply was posted (once)."""
    where = {"id": item_id, "reply_ts": None}
    return fast_update(conn, review_items_table, {"reply_ts": reply_ts}, where) == 1


def move_week(
    conn: Connection, week_id: int, *, from_status: Sequence[str], to_status: str
) -> bool:
    where: dict[str, Any] = {"id": week_id, "status": tuple(from_status)}
    return fast_update(conn, review_weeks_table, {"status": to_status}, where) == 1


def record_summary(conn: Connection, week_id: int, summary_ts: str) -> None:
    fast_update(conn, review_weeks_table, {"summary_ts": summary_ts}, {"id": week_id})


def record_looks_right(conn: Connection, item_id: int, *, reviewer: str, now: datetime) -> bool:
    """Compare-and-set: only an item nobody reviewed yet becomes `looks_right`."""
    values = {"verdict": LOOKS_RIGHT, "reviewer": reviewer, "reviewed_at": now}
    return fast_update(conn, review_items_table, values, {"id": item_id, "verdict": None}) == 1


def record_flag(
    conn: Connection,
    item_id: int,
    *,
    reviewer: str,
    category: str,
    note: str | None,
    expected: Any,
    now: datetime,
) -> bool:
    """A flag stands over a `looks_right` and replaces an earlier flag (the latest reviewer's
    category and note win): a problem found is never hidden by an earlier approval."""
    values = {
        "verdict": FLAGGED,
        "category": category,
        "note": note,
        "expected": expected,
        "reviewer": reviewer,
        "reviewed_at": now,
    }
    return fast_update(conn, review_items_table, values, {"id": item_id}) == 1


@dataclass(frozen=True)
class WeekCounts:
    week_id: int
    week_start: datetime
    total: int
    reviewed: int
    flagged: int


def _counts_query() -> Select[int, datetime, int, int, int]:
    items = review_items_table.c
    weeks = review_weeks_table.c
    return (
        select(
            weeks.id,
            weeks.week_start,
            func.count(items.id),
            func.count(items.verdict),
            func.coalesce(func.sum(case((items.verdict == FLAGGED, 1), else_=0)), 0),
        )
        .select_from(review_weeks_table.outerjoin(review_items_table, items.week_id == weeks.id))
        .group_by(weeks.id, weeks.week_start)
    )


def week_counts(conn: Connection, week_id: int) -> WeekCounts:
    row = conn.execute(_counts_query().where(review_weeks_table.c.id == week_id)).one()
    return WeekCounts(int(row[0]), row[1], int(row[2]), int(row[3]), int(row[4]))


def earlier_week_counts(conn: Connection, before: datetime, limit: int) -> list[WeekCounts]:
    """The `limit` weeks that started before `before`, newest first."""
    weeks = review_weeks_table.c
    query = (
        _counts_query()
        .where(weeks.week_start < before)
        .order_by(weeks.week_start.desc())
        .limit(limit)
    )
    return [
        WeekCounts(int(r[0]), r[1], int(r[2]), int(r[3]), int(r[4])) for r in conn.execute(query)
    ]


def weeks_in_status(
    conn: Connection, statuses: Sequence[str], *, started_before: datetime
) -> list[ReviewWeekRow]:
    weeks = review_weeks_table.c
    query = (
        select(review_weeks_table)
        .where(weeks.status.in_(list(statuses)), weeks.week_start < started_before)
        .order_by(weeks.week_start)
    )
    return [ReviewWeekRow(*row) for row in conn.execute(query)]


def reviewed_items_since(
    conn: Connection, since: datetime, *, flagged_only: bool
) -> list[ReviewedItemRow]:
    """Reviewed items (through `ix_review_items_verdict`) with their run's pipeline, input and
    output, oldest verdict first."""
    items = review_items_table.c
    runs = runs_table.c
    verdicts = [FLAGGED] if flagged_only else [FLAGGED, LOOKS_RIGHT]
    query = (
        select(
            review_items_table,
            runs.pipeline,
            runs.status.label("run_status"),
            runs.input.label("run_input"),
            runs.output.label("run_output"),
            runs.error.label("run_error"),
        )
        .join(runs_table, runs.id == items.run_id)
        .where(items.verdict.in_(verdicts), items.reviewed_at >= since)
        .order_by(items.reviewed_at, items.id)
    )
    return [ReviewedItemRow(*row) for row in conn.execute(query)]
