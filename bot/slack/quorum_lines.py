"""What a card says about an approval that needs more than one person: who approved so far, how
many of how many, how many are still needed (mrkdwn, people as mentions)."""

from __future__ import annotations

from bot.slack.mrkdwn import mention, truncate
from pipelines.views import ApprovalView, Quorum

NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


def people(voters: list[str]) -> str:
    """ "@a", "@a and @b", "@a, @b and @c"."""
    named = [mention(truncate(v, 100)) for v in voters]
    if len(named) <= 1:
        return "".join(named) or "nobody"
    return f"{', '.join(named[:-1])} and {named[-1]}"


def approved_by(quorum: Quorum) -> str:
    """ "@a and @b (2 of 2)": everyone who approved, in order, and of how many."""
    return f"{people(quorum.voters)} ({quorum.approved} of {quorum.required})"


def progress_line(quorum: Quorum) -> str:
    """ "Approved by @a (1 of 2) — waiting for one more", or, before anyone approved, "Needs 2
    approvals from different people — none yet"."""
    if not quorum.votes:
        return f"Needs {quorum.required} approvals from different people — none yet"
    more = NUMBER_WORDS.get(quorum.remaining, str(quorum.remaining))
    line = f"Approved by {approved_by(quorum)}"
    if quorum.remaining:
        line += f" — waiting for {more} more"
    return line


def decided_note(approval: ApprovalView) -> str:
    """After a rejection or the deadline, the approvals it had: " (approved before by @a, 1 of
    2)"; nothing when nobody had approved."""
    quorum = approval.quorum
    if quorum is None or not quorum.votes or approval.status == "approved":
        return ""
    return f" (approved before by {people(quorum.voters)}, {quorum.approved} of {quorum.required})"
