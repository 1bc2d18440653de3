"""Alerts and the weekly review are delivered through the outbox. Opening and recovering an
alert owe an outbox row (subject `alert:ID`, event `alert_opened` / `alert_recovered`) instead of
a post claim kept in the alert's `details` (`opened_post`, `recovered_post`); a review's thread
and summary are subjects `review:ID` and `review-summary:ID`. No column changes; what an existing
database still owes becomes outbox rows: the message of an alert not in Slack, the "recovered"
reply of a recovered alert without one (alerts of the last 7 days, as the old claims were), the
rest of a review thread whose posting was interrupted. The downgrade gives the old claims back:
what was posted meanwhile is marked posted, and these rows leave the outbox (an interrupted
review is resumed by the old code at start, as before).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 12:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

from storage.types import JSONValue, UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

HORIZON = timedelta(days=7)  # the old claims' retry horizon
POSTED = "posted"

alerts = sa.table(
    "alerts",
    sa.column("id", sa.Integer),
    sa.column("status", sa.String),
    sa.column("opened_at", UTCDateTime),
    sa.column("recovered_at", UTCDateTime),
    sa.column("ts", sa.String),
    sa.column("details", JSONValue),
)
review_weeks = sa.table(
    "review_weeks",
    sa.column("id", sa.Integer),
    sa.column("status", sa.String),
    sa.column("picked_at", UTCDateTime),
)
outbox = sa.table(
    "outbox",
    sa.column("id", sa.Integer),
    sa.column("event", sa.String),
    sa.column("subject_id", sa.String),
    sa.column("created_at", UTCDateTime),
    sa.column("status", sa.String),
    sa.column("attempts", sa.Integer),
    sa.column("next_attempt_at", UTCDateTime),
)


def _owed(row: Any) -> list[tuple[str, datetime]]:
    details: dict[str, Any] = row.details or {}
    owed = []
    if row.ts is None and details.get("opened_post") != POSTED:
        owed.append(("alert_opened", row.opened_at))
    if (
        row.status == "recovered"
        and not details.get("recovered_reply_ts")
        and details.get("recovered_post") != POSTED
    ):
        owed.append(("alert_recovered", row.recovered_at or row.opened_at))
    return owed


def upgrade() -> None:
    conn = op.get_bind()
    now = datetime.now(UTC)
    query = (
        sa.select(alerts)
        .where(sa.or_(alerts.c.status == "open", alerts.c.opened_at >= now - HORIZON))
        .order_by(alerts.c.id)
    )
    rows = [
        {
            "event": event,
            "subject_id": f"alert:{row.id}",
            "created_at": created,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
        }
        for row in conn.execute(query).all()
        for event, created in _owed(row)
    ]
    interrupted = sa.select(review_weeks).where(review_weeks.c.status == "posting")
    rows += [
        {
            "event": "review_thread",
            "subject_id": f"review:{week.id}",
            "created_at": week.picked_at,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
        }
        for week in conn.execute(interrupted.order_by(review_weeks.c.id)).all()
    ]
    if rows:
        conn.execute(sa.insert(outbox), rows)


def downgrade() -> None:
    conn = op.get_bind()
    for row in conn.execute(sa.select(alerts)).all():
        details: dict[str, Any] = dict(row.details or {})
        marks = {}
        if row.ts is not None:
            marks["opened_post"] = POSTED
        if details.get("recovered_reply_ts"):
            marks["recovered_post"] = POSTED
        if marks and any(details.get(key) != value for key, value in marks.items()):
            conn.execute(
                sa.update(alerts).where(alerts.c.id == row.id).values(details={**details, **marks})
            )
    owned = sa.or_(outbox.c.subject_id.like("alert:%"), outbox.c.subject_id.like("review%"))
    conn.execute(sa.delete(outbox).where(owned))
