"""An approval's reminder and escalation in Slack: the line its card shows, and the reply in the
card's thread that tells the approvers (pipelines/approval_nudges.py decides when).

The reply is posted once: where it went is recorded like a card's (`storage.messages`, kinds
`approval_reminder` and `approval_escalation`), so a re-delivery of the card (the outbox
collapses and retries) does not post it twice. A reply still owed when the approval is decided
is dropped: it would remind people of something settled. A sender that dies between Slack's
answer and that record posts the reply again when the delivery is retried: at worst a second
reminder, never a missing one.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError

from bot.formatting import clock, duration
from bot.slack.delivery import delivery_failure
from bot.slack.mrkdwn import escape, mention, mentions, truncate
from bot.slack.quorum_lines import progress_line
from pipelines.runtime import Runtime
from pipelines.views import ApprovalView
from storage import messages

log = structlog.get_logger()

REMINDER = "approval_reminder"
ESCALATION = "approval_escalation"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def nudge_lines(approval: ApprovalView) -> list[str]:
    """ "Reminded at 14:02 UTC", "Escalated to @leads at 18:02 UTC" (mrkdwn), those that
    happened."""
    nudges = approval.nudges
    if nudges is None:
        return []
    requested = _utc(approval.requested_at)
    lines = []
    if nudges.reminded_at is not None:
        lines.append(f"Reminded at {clock(_utc(nudges.reminded_at), same_day_as=requested)}")
    if nudges.escalated_at is not None:
        to = mentions(list(nudges.escalate_to), 300)
        lines.append(
            f"Escalated to {to} at {clock(_utc(nudges.escalated_at), same_day_as=requested)}"
        )
    return lines


def who_to_ping(rt: Runtime, approvers: list[str]) -> str:
    """The approvers as mentions; a `@group` with its members mentioned after it, so a
    reminder reaches people even where the group's handle is not a Slack user group."""
    parts = []
    for entry in approvers:
        if entry.startswith("@"):
            members = sorted(rt.directory.members(entry[1:]))
            named = f" ({', '.join(mention(m) for m in members[:20])})" if members else ""
            parts.append(escape(truncate(entry, 100)) + named)
        else:
            parts.append(mention(truncate(entry, 100)))
    return ", ".join(parts) if parts else "anyone in the workspace"


def reminder_text(rt: Runtime, approval: ApprovalView) -> str:
    waited = approval.nudges.reminded_at if approval.nudges else None
    hours = ""
    if waited is not None:
        hours = f" {duration((_utc(waited) - _utc(approval.requested_at)).total_seconds())}"
    return (
        f":bell: Reminder: *{escape(truncate(approval.tool, 100))}* has waited{hours} for a "
        f"decision. {who_to_ping(rt, approval.approvers)}: approve or reject it on the card above."
        + _progress(approval)
    )


def _progress(approval: ApprovalView) -> str:
    """ " Approved by @a (1 of 2) — waiting for one more." for an approval that needs several
    people, as its card says it; "" otherwise."""
    return f" {progress_line(approval.quorum)}." if approval.quorum is not None else ""


def escalation_text(rt: Runtime, approval: ApprovalView) -> str:
    added = list(approval.nudges.escalate_to) if approval.nudges else []
    return (
        f":arrow_double_up: Escalated: still undecided, so {who_to_ping(rt, added)} "
        f"may now decide *{escape(truncate(approval.tool, 100))}* too (with "
        f"{mentions([a for a in approval.approvers if a not in added], 300, empty='nobody else')})."
        + _progress(approval)
    )


def post_owed_replies(client: WebClient, rt: Runtime, approval: ApprovalView) -> None:
    """After the card is shown: the reminder and the escalation replies not posted yet, in its
    thread. Raises `DeliveryFailed` like the card (the outbox retries; what was posted stays
    recorded and is not posted again)."""
    nudges = approval.nudges
    if nudges is None or approval.status != "pending":
        return
    owed = []
    if nudges.reminded_at is not None:
        owed.append((REMINDER, reminder_text))
    if nudges.escalated_at is not None:
        owed.append((ESCALATION, escalation_text))
    if not owed:
        return
    with rt.db.transaction() as conn:
        card = messages.message_ref(conn, kind="approval", ref_id=approval.id)
        owed = [
            (kind, text)
            for kind, text in owed
            if messages.message_ref(conn, kind=kind, ref_id=approval.id) is None
        ]
    if card is None:
        return
    for kind, text in owed:
        try:
            response = client.chat_postMessage(
                channel=card.channel, thread_ts=card.ts, text=text(rt, approval)
            )
        except (SlackClientError, OSError) as exc:
            failure = delivery_failure(exc)
            log.warning("slack.nudge_failed", kind=kind, ref_id=approval.id, error=str(failure))
            raise failure from exc
        with rt.db.transaction() as conn:
            messages.save_message_ref(
                conn,
                kind=kind,
                ref_id=approval.id,
                channel=card.channel,
                ts=str(response["ts"]),
                now=rt.clock.now(),
            )
        log.info("slack.nudge_posted", kind=kind, ref_id=approval.id)
