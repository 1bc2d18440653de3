"""The outbox: what the bot must post, written with the state change, claimed and delivered later.

`enqueue` is one INSERT inside the caller's transaction (the approval, decision or task row's), so
a card is owed exactly when the change committed. A sender claims a *subject* (an approval, a
task) through its oldest pending row: a row is claimable only when no older row of its subject
is still pending, so one subject is never delivered by two senders at once, and its rows are
delivered in order. The claim is a lease (`claimed_by`, `claim_until`): a sender that died gives
its subject back when the lease runs out, or at once when its holder is known to be dead
(`end_claim`); a claim taken over that way is `taken_over`: its delivery may have half happened
(posted to Slack, not recorded). `FOR UPDATE SKIP LOCKED` lets several senders claim
side by side on PostgreSQL; SQLite's `BEGIN IMMEDIATE` serializes the claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Table, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from storage.fastsql import fast_insert
from storage.models import Outbox, OutboxStatus

outbox_table: Table = Outbox.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Claimed:
    """A subject claimed for delivery through its oldest pending row."""

    id: int
    event: str
    subject_id: str
    created_at: datetime
    attempts: int
    # The previous claim was neither settled nor given back: its holder died (or lost the
    # database) mid-delivery, so the card may be in Slack without its ts recorded.
    taken_over: bool = False


def enqueue(conn: Connection, *, event: str, subject_id: str, now: datetime) -> None:
    """Owe a delivery; call it inside the transaction that makes the change it reports."""
    fast_insert(
        conn,
        outbox_table,
        {
            "event": event,
            "subject_id": subject_id,
            "created_at": now,
            "status": OutboxStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
        },
    )


def _claimable(now: datetime) -> list[object]:
    o = outbox_table.c
    older = aliased(outbox_table)
    return [
        o.status == OutboxStatus.PENDING,
        o.next_attempt_at <= now,
        or_(o.claim_until.is_(None), o.claim_until <= now),
        ~exists().where(
            older.c.subject_id == o.subject_id,
            older.c.status == OutboxStatus.PENDING,
            older.c.id < o.id,
        ),
    ]


def claim_due(
    conn: Connection,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    limit: int = 20,
    subject_id: str | None = None,
) -> list[Claimed]:
    """Claim up to `limit` subjects whose oldest pending row is due (only `subject_id`'s if
    given); the caller delivers each and then marks, reschedules or kills it."""
    o = outbox_table.c
    conditions = _claimable(now)
    if subject_id is not None:
        conditions.append(o.subject_id == subject_id)
    query = (
        select(o.id, o.event, o.subject_id, o.created_at, o.attempts, o.claimed_by)
        .where(and_(*conditions))  # type: ignore[arg-type]
        .order_by(o.next_attempt_at, o.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=outbox_table)
    rows = conn.execute(query).all()
    claimed = []
    for row in rows:
        taken = conn.execute(
            update(outbox_table)
            .where(
                o.id == row.id,
                o.status == OutboxStatus.PENDING,
                or_(o.claim_until.is_(None), o.claim_until <= now),
            )
            .values(claimed_by=worker, claim_until=now + lease)
        ).rowcount
        if taken == 1:
            claimed.append(
                Claimed(
                    row.id,
                    row.event,
                    row.subject_id,
                    row.created_at,
                    row.attempts,
                    taken_over=row.claimed_by is not None,
                )
            )
    return claimed


def live_claims(conn: Connection, now: datetime) -> list[tuple[int, str]]:
    """(row id, holder) of every pending row whose claim still runs."""
    o = outbox_table.c
    query = select(o.id, o.claimed_by).where(
        o.status == OutboxStatus.PENDING, o.claimed_by.is_not(None), o.claim_until > now
    )
    return [(int(row.id), str(row.claimed_by)) for row in conn.execute(query).all()]


def end_claim(conn: Connection, row_id: int, *, holder: str, now: datetime) -> bool:
    """End `holder`'s claim now (it is dead, or it lost the database mid-delivery). The holder
    stays named, so whoever claims the row next knows the delivery may have half happened."""
    o = outbox_table.c
    return (
        conn.execute(
            update(outbox_table)
            .where(o.id == row_id, o.status == OutboxStatus.PENDING, o.claimed_by == holder)
            .values(claim_until=now)
        ).rowcount
        == 1
    )


def last_pending_id(conn: Connection, subject_id: str) -> int | None:
    """The newest pending row of a subject. Read it *before* loading the subject's state: every
    row up to it is then answered by that state, since each row commits with its change."""
    o = outbox_table.c
    query = select(func.max(o.id)).where(
        o.subject_id == subject_id, o.status == OutboxStatus.PENDING
    )
    value = conn.execute(query).scalar()
    return None if value is None else int(value)


def mark_delivered(conn: Connection, subject_id: str, *, up_to: int, now: datetime) -> int:
    """Every pending row of the subject up to `up_to` is delivered (collapsed into one delivery)."""
    o = outbox_table.c
    return int(
        conn.execute(
            update(outbox_table)
            .where(o.subject_id == subject_id, o.status == OutboxStatus.PENDING, o.id <= up_to)
            .values(
                status=OutboxStatus.DELIVERED,
                delivered_at=now,
                claimed_by=None,
                claim_until=None,
            )
        ).rowcount
    )


def reschedule(
    conn: Connection,
    row_id: int,
    *,
    worker: str,
    retry_at: datetime,
    error: str,
    keep_holder: bool = False,
) -> bool:
    """The delivery failed and will be tried again at `retry_at`; the claim is given back.
    `keep_holder` (a delivery taken over that never settled): the row stays named as claimed,
    so the next claim is `taken_over` too and looks for a lost card again before it posts."""
    o = outbox_table.c
    return (
        conn.execute(
            update(outbox_table)
            .where(o.id == row_id, o.status == OutboxStatus.PENDING, o.claimed_by == worker)
            .values(
                attempts=o.attempts + 1,
                next_attempt_at=retry_at,
                last_error=error[:2000],
                claimed_by=worker if keep_holder else None,
                claim_until=None,
            )
        ).rowcount
        == 1
    )


def postpone(
    conn: Connection,
    row_id: int,
    *,
    worker: str,
    retry_at: datetime,
    error: str,
    keep_holder: bool = False,
) -> bool:
    """The delivery is held up by something an operator must fix (a revoked token): due again
    at `retry_at`, the claim given back, and no attempt counted (a pause never kills a row);
    `keep_holder` as for `reschedule`."""
    o = outbox_table.c
    return (
        conn.execute(
            update(outbox_table)
            .where(o.id == row_id, o.status == OutboxStatus.PENDING, o.claimed_by == worker)
            .values(
                next_attempt_at=retry_at,
                last_error=error[:2000],
                claimed_by=worker if keep_holder else None,
                claim_until=None,
            )
        ).rowcount
        == 1
    )


def release(conn: Connection, row_id: int, *, worker: str) -> bool:
    """Give a claim back untried (a sender stopping): due again at once for another sender."""
    o = outbox_table.c
    return (
        conn.execute(
            update(outbox_table)
            .where(o.id == row_id, o.status == OutboxStatus.PENDING, o.claimed_by == worker)
            .values(claimed_by=None, claim_until=None)
        ).rowcount
        == 1
    )


def mark_dead(conn: Connection, subject_id: str, *, up_to: int, error: str) -> int:
    """Give up on the subject's rows up to `up_to` (a permanent error after every attempt)."""
    o = outbox_table.c
    return int(
        conn.execute(
            update(outbox_table)
            .where(o.subject_id == subject_id, o.status == OutboxStatus.PENDING, o.id <= up_to)
            .values(
                status=OutboxStatus.DEAD,
                attempts=o.attempts + 1,
                last_error=error[:2000],
                claimed_by=None,
                claim_until=None,
            )
        ).rowcount
    )


def counts(conn: Connection) -> dict[str, int]:
    """Rows per status (for /metrics and the deployment checks)."""
    o = outbox_table.c
    rows = conn.execute(select(o.status, func.count()).group_by(o.status)).all()
    return {str(status): int(count) for status, count in rows}


def oldest_pending(conn: Connection) -> datetime | None:
    """When the oldest undelivered row was written (for /metrics: how long a card has waited)."""
    o = outbox_table.c
    value = conn.execute(
        select(func.min(o.created_at)).where(o.status == OutboxStatus.PENDING)
    ).scalar()
    return value if isinstance(value, datetime) else None


def rows_for(conn: Connection, subject_id: str) -> list[Outbox]:
    """Every row of a subject, oldest first (tests and `gatehouse` inspection)."""
    o = outbox_table.c
    query = select(outbox_table).where(o.subject_id == subject_id).order_by(o.id)
    return list(conn.execute(query).all())  # type: ignore[arg-type]


def purge_delivered(conn: Connection, *, before: datetime, limit: int = 1000) -> int:
    """Forget delivered rows older than `before` (the table stays small)."""
    o = outbox_table.c
    ids = select(o.id).where(o.status == OutboxStatus.DELIVERED, o.delivered_at < before)
    ids = ids.limit(limit)
    return int(conn.execute(delete(outbox_table).where(o.id.in_(ids))).rowcount)


def pending_subjects(conn: Connection, *, prefix: str, limit: int = 100) -> list[str]:
    """The subjects starting with `prefix` (`alert:`) that have a pending row, oldest first."""
    o = outbox_table.c
    query = (
        select(o.subject_id, func.min(o.id).label("first"))
        .where(o.status == OutboxStatus.PENDING, o.subject_id.startswith(prefix, autoescape=True))
        .group_by(o.subject_id)
        .order_by("first")
        .limit(limit)
    )
    return [str(row.subject_id) for row in conn.execute(query).all()]
