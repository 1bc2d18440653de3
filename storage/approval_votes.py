"""Quorum approvals (N distinct people): the requirement, each vote, and the compare-and-set
that counts a vote once.

A vote is two statements in the deciding transaction: `INSERT … ON CONFLICT DO NOTHING` of
(approval, voter), so the same person twice counts once (a concurrent second insert waits for
the first and then does nothing); then `UPDATE approval_quorums SET approved = approved + 1
WHERE approved < required AND <the approval is open>`, which takes the quorum row's lock, so
concurrent votes of different people are counted one after the other and exactly one of them
sees the count reach `required`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, Table, exists, or_, select, update

from storage.claims import insert_unless_taken
from storage.fastsql import fast_insert, fast_scalar
from storage.models import Approval, ApprovalQuorum, ApprovalStatus, ApprovalVote

quorums_table: Table = ApprovalQuorum.__table__  # type: ignore[assignment]
votes_table: Table = ApprovalVote.__table__  # type: ignore[assignment]
approvals_table: Table = Approval.__table__  # type: ignore[assignment]


class VoteRow(NamedTuple):
    """An `approval_votes` row."""

    approval_id: str
    voter: str
    voted_at: datetime


class Tally(NamedTuple):
    """A quorum approval's count after a vote: `approved` of `required`."""

    required: int
    approved: int

    @property
    def complete(self) -> bool:
        return self.approved >= self.required


def insert_quorum(conn: Connection, approval_id: str, required: int) -> None:
    fast_insert(
        conn, quorums_table, {"approval_id": approval_id, "required": required, "approved": 0}
    )


def required_of(conn: Connection, approval_id: str) -> int | None:
    """How many people this approval needs, or None for an ordinary (one-person) approval."""
    # On the driver (storage.fastsql): every decision asks this, and most approvals have no row.
    found = fast_scalar(conn, _REQUIRED_SQL[conn.dialect.name], (approval_id,))
    return int(found) if found is not None else None


_REQUIRED = "SELECT required FROM approval_quorums WHERE approval_id = {mark}"
_REQUIRED_SQL = {"sqlite": _REQUIRED.format(mark="?"), "postgresql": _REQUIRED.format(mark="%s")}


def add_vote(conn: Connection, approval_id: str, voter: str, at: datetime) -> bool:
    """Record `voter`'s approval; False if they had approved already."""
    values = {"approval_id": approval_id, "voter": voter, "voted_at": at}
    return insert_unless_taken(conn, votes_table, values, key=("approval_id", "voter"))


def count_vote(conn: Connection, approval_id: str, at: datetime) -> Tally | None:
    """Compare-and-set: one more approval, while the approval is pending, before its deadline
    and short of its quorum; the tally after it, or None if the vote came too late."""
    open_approval = exists().where(
        approvals_table.c.id == approval_id,
        approvals_table.c.status == ApprovalStatus.PENDING.value,
        or_(approvals_table.c.expires_at.is_(None), approvals_table.c.expires_at > at),
    )
    q = quorums_table.c
    statement = (
        update(quorums_table)
        .where(q.approval_id == approval_id, q.approved < q.required, open_approval)
        .values(approved=q.approved + 1)
        .returning(q.required, q.approved)
    )
    row = conn.execute(statement).first()
    return Tally(int(row[0]), int(row[1])) if row is not None else None


def quorums_of(
    conn: Connection, approval_ids: Sequence[str]
) -> dict[str, tuple[int, list[VoteRow]]]:
    """For the approvals among `approval_ids` that need a quorum: (required, votes in order)."""
    if not approval_ids:
        return {}
    ids = list(approval_ids)
    required = {
        str(r.approval_id): int(r.required)
        for r in conn.execute(
            select(quorums_table.c.approval_id, quorums_table.c.required).where(
                quorums_table.c.approval_id.in_(ids)
            )
        )
    }
    if not required:
        return {}
    found: dict[str, tuple[int, list[VoteRow]]] = {a: (n, []) for a, n in required.items()}
    query = (
        select(votes_table)
        .where(votes_table.c.approval_id.in_(list(required)))
        .order_by(votes_table.c.voted_at, votes_table.c.voter)
    )
    for row in conn.execute(query):
        found[str(row.approval_id)][1].append(VoteRow(*row))
    return found
