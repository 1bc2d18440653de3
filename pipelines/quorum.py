"""Approvals that need N distinct people (`@tool(approvals_required=N)`): the quorum opened
with the request, each person's vote counted once by compare-and-set, and the views that show
who approved so far.

`approvals.decide` casts the vote in its deciding transaction; only the vote that completes
the quorum goes on to the approval's own compare-and-set (pending → approved), so the run is
released once, by the N-th approval, and a rejection or the deadline racing it decides once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from pipelines.errors import AlreadyVoted
from pipelines.tools import Tool
from pipelines.views import ApprovalView, Quorum, Vote
from storage import approval_votes as vote_rows
from storage.approval_votes import Tally
from storage.audit import append_audit


class VoteTooLate(Exception):
    """Raised inside the deciding transaction to roll a vote back: the approval was decided,
    or its deadline passed, before the vote was counted."""


def open_quorum(conn: Connection, tool: Tool, approval_id: str) -> None:
    """With the request: record how many people this approval needs (nothing for one)."""
    if tool.approvals_required > 1:
        vote_rows.insert_quorum(conn, approval_id, tool.approvals_required)


def required_votes(conn: Connection, approval_id: str) -> int | None:
    """How many distinct people this approval needs, or None for an ordinary one-person
    approval (whose decision is not a counted vote)."""
    return vote_rows.required_of(conn, approval_id)


def cast_vote(conn: Connection, approval: Any, required: int, *, user: str, now: datetime) -> Tally:
    """Count `user`'s approval of an approval that needs `required` people (`required_votes`),
    in the deciding transaction: the tally after it. AlreadyVoted when this person's approval
    is counted already; VoteTooLate when it can no longer be counted."""
    if not vote_rows.add_vote(conn, approval.id, user, now):
        counted = vote_rows.quorums_of(conn, [approval.id]).get(approval.id)
        approved = len(counted[1]) if counted else 0
        raise AlreadyVoted(
            f"You already approved {approval.tool} (approval {approval.id}): {approved} of "
            f"{required} approvals so far; the rest must come from other approvers"
        )
    tally = vote_rows.count_vote(conn, approval.id, now)
    if tally is None:
        raise VoteTooLate(approval.id)
    return tally


def audit_vote(conn: Connection, approval: Any, tally: Tally, *, user: str, now: datetime) -> None:
    """The vote in the audit log. Written after the approval's own compare-and-set, as every
    decision does: the audit chain's lock is always taken last, so a vote and a rejection
    racing on one approval wait for each other instead of deadlocking."""
    append_audit(
        conn,
        event="approval.voted",
        at=now,
        actor=user,
        run_id=approval.run_id,
        call_id=approval.call_id,
        tool=approval.tool,
        approval_id=approval.id,
        detail={"approved": tally.approved, "required": tally.required},
    )


def with_quorum(conn: Connection, views: Sequence[ApprovalView]) -> list[ApprovalView]:
    """The views with their quorum and votes read in (those that need more than one person)."""
    found = quorums_of(conn, [v.id for v in views])
    return [replace(v, quorum=found[v.id]) if v.id in found else v for v in views]


def quorums_of(conn: Connection, approval_ids: Sequence[str]) -> dict[str, Quorum]:
    """The quorum and votes so far of those of `approval_ids` that need more than one person."""
    found = vote_rows.quorums_of(conn, approval_ids)
    return {approval_id: _quorum(*counted) for approval_id, counted in found.items()}


def _quorum(required: int, votes: list[vote_rows.VoteRow]) -> Quorum:
    return Quorum(required=required, votes=tuple(Vote(r.voter, r.voted_at) for r in votes))


def progress(quorum: Quorum) -> str:
    """ "1 of 2 approvals (U1); waiting for 1 more" — for the CLI and logs."""
    who = f" ({', '.join(quorum.voters)})" if quorum.votes else ""
    line = f"{quorum.approved} of {quorum.required} approvals{who}"
    if quorum.remaining:
        line += f"; waiting for {quorum.remaining} more"
    return line
