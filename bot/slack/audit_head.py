"""The audit head in the alerts channel: once a day and when `gatehouse serve` starts, so a copy
of it (`COUNT:HASH`) lives outside the database, where whoever can write the database cannot
reach it. `gatehouse audit verify --expect-head COUNT:HASH` later proves the log was neither cut
below it nor rewritten up to it (storage/audit.py).

The chain is verified before its head is posted: a broken chain posts what broke instead, so
the channel never shows a tampered head as a good one.

Delivered straight through the bot's Web client, not the outbox: the outbox re-renders a card
from a row it owes (an approval, an alert), and a head is a snapshot with no row to owe it from;
a post that fails is logged, and the next day's (or the next start's) head supersedes it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from slack_sdk.errors import SlackClientError
from sqlalchemy import make_url

from bot.formatting import when
from bot.scheduler import SchedulerHandle
from bot.slack.blocks import context, section
from bot.slack.bot import Bot
from bot.slack.delivery import delivery_failure
from bot.slack.mrkdwn import code, escape
from storage.audit import KEYED, PLAIN, SCHEME_NAMES, VerifyResult, verify_database

log = structlog.get_logger()

DAILY = "0 8 * * *"  # in GATEHOUSE_TIMEZONE
JOB = "audit-head"


def database_label(url: str) -> str:
    """Which database the head is from, without its password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite:///{parsed.database}" if parsed.database else "sqlite (in memory)"
    host = parsed.host or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.get_backend_name()}://{host}{port}/{parsed.database or ''}"


def audit_head_text(result: VerifyResult, database: str) -> str:
    """The notification text (and what a screen reader says)."""
    if not result.ok:
        return f"Gatehouse audit log broken, in the database at {database}: {result.reason}"
    return f"Gatehouse audit head, from the database at {database}: {result.head}"


def audit_head_blocks(result: VerifyResult, database: str, now: datetime) -> list[dict[str, Any]]:
    """The head, what produced it and how to check it later; or, for a broken chain, what broke."""
    where = f"from the database at {code(database, 300)}"
    if not result.ok:
        return [
            section(f":rotating_light: *Gatehouse audit log broken*, {where}"),
            section(escape(result.reason or "the chain does not verify")),
            context(
                "Found by verifying the chain before posting its head. Compare with the last "
                "head posted here: `gatehouse audit verify --expect-head COUNT:HASH`"
            ),
        ]
    latest = (
        f"latest entry {result.head_id} ({escape(result.head_event or '')}) at "
        f"{when(result.head_at and result.head_at.astimezone(UTC))}"
        if result.head_id is not None
        else "the log is empty"
    )
    scheme = SCHEME_NAMES[KEYED if result.keyed else PLAIN]
    return [
        section(f"*Gatehouse audit head*, {where}\n{code(result.head, 200)}"),
        section(
            f"{result.count} entries, every hash recomputed ({scheme}) and linked back to the "
            + (f"checkpoint of the {result.pruned} pruned; " if result.pruned else "start; ")
            + f"{latest}. Checked at {when(now.astimezone(UTC))}."
        ),
        context(
            "Posted daily and when `gatehouse serve` starts, so a copy lives outside the "
            "database. To prove the log was not cut or rewritten since: "
            f"`gatehouse audit verify --expect-head {result.head}`"
        ),
    ]


def post_audit_head(bot: Bot, fire_time: datetime | None = None) -> bool:
    """Verify the chain and post its head (or what broke) to the alerts channel; False when
    nothing went out (no channel, or Slack refused: logged)."""
    channel = bot.settings.alerts_channel
    if not channel:
        return False
    now = fire_time if fire_time is not None else bot.gatehouse.rt.clock.now()
    result = verify_database(bot.gatehouse.db)
    database = database_label(bot.gatehouse.db.url)
    if not result.ok:
        log.error("audit.broken", problem=result.problem, entry=result.broken_id)
    try:
        bot.client.chat_postMessage(
            channel=channel,
            text=audit_head_text(result, database),
            blocks=audit_head_blocks(result, database, now),
        )
    except (SlackClientError, OSError) as exc:
        # The next day's post (or the next start's) brings a newer head: nothing to retry.
        log.warning("audit_head.post_failed", channel=channel, error=str(delivery_failure(exc)))
        return False
    log.info("audit_head.posted", channel=channel, head=result.head if result.ok else None)
    return True


def schedule_audit_head(bot: Bot, handle: SchedulerHandle) -> None:
    """The daily post (one replica a day: `claim=True`) and one now, in the background. Without
    GATEHOUSE_ALERTS_CHANNEL there is nowhere to post: said once, here."""
    if not bot.settings.alerts_channel:
        log.warning("audit_head.skipped", reason="GATEHOUSE_ALERTS_CHANNEL is not set")
        return
    handle.add_system_job(JOB, DAILY, lambda fire_time: post_audit_head(bot, fire_time), claim=True)
    bot.submit(post_audit_head, bot)
