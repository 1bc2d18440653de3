"""Telling the person who triggered a run from Slack how it went: a direct message from the app
(`chat.postMessage` with their user id as the channel) when it waits on a person and when it
ends, with the run id and a link to its card. The engine decides what to tell and when
(`pipelines.run_notices`); this module says it.

Each state is told once: the message is recorded (`slack_messages`, kind `run_notice`) under the
run and its state's key, and a delivery that finds it recorded sends nothing. A DM Slack refuses
for the person (no such user, a deactivated one) is logged and not retried: there is nobody to
reach; Slack being down or rate-limiting is retried by the outbox like any card.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.slack.blocks import context, section
from bot.slack.delivery import delivery_failure
from bot.slack.mrkdwn import SLASH_COMMAND, escape, mentions, truncate
from bot.slack.quorum_lines import progress_line
from bot.slack.refusals import log_refusal
from pipelines.run_notices import RunNotice
from pipelines.runtime import Runtime
from storage import messages

log = structlog.get_logger()

KIND = "run_notice"
ERROR_LIMIT = 300
# Slack refuses a DM to this person: nobody to tell, so the notice is dropped (logged).
NOBODY_THERE = frozenset(
    {"channel_not_found", "user_not_found", "user_disabled", "cannot_dm_bot", "is_archived"}
)

_ENDINGS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "rejected": "was rejected",
    "needs_attention": "needs attention: a person must decide what happened",
    "cancelled": "was cancelled",
}


def notice_ref(notice: RunNotice) -> str:
    """The record's id: the run and a short hash of the state told (fits 40 characters)."""
    digest = hashlib.sha256(notice.key.encode()).hexdigest()[:12]
    return f"{notice.run_id[:26]}:{digest}"


def notice_text(notice: RunNotice, link: str | None, *, command: str = SLASH_COMMAND) -> str:
    """The message (mrkdwn): the run, its pipeline, and what it waits for or how it ended."""
    run = f"Your run `{escape(truncate(notice.run_id, 100))}` ({escape(truncate(notice.pipeline, 100))})"
    card = f" <{link}|See the card.>" if link else ""
    if notice.waiting:
        first = notice.waiting[0]
        who = mentions(first.who, 300)
        what = escape(truncate(first.what, 100))
        if first.kind == "approval":
            line = f"⏳ {run} waits for approval of *{what}* by {who}."
            if first.quorum is not None:  # "Needs 2 approvals from different people — none yet"
                line += f" {progress_line(first.quorum)}."
        else:
            line = f"⏳ {run} waits for an answer to *{what}* from {who}."
        more = len(notice.waiting) - 1
        if more > 0:
            line += f" And {more} more."
        return line + card
    ending = _ENDINGS.get(notice.status, escape(notice.status))
    mark = "✅" if notice.status == "succeeded" else "⚠️"
    line = f"{mark} {run} {ending}"
    if notice.error and notice.status != "succeeded":
        line += f" — {escape(truncate(notice.error, ERROR_LIMIT))}"
    line += "."
    return line + card


class SlackRunNotices:
    """The notifier port's `run_notice`, in Slack: one DM per state, recorded."""

    def __init__(
        self,
        client: WebClient,
        *,
        runtime: Callable[[], Runtime],
        command: str = SLASH_COMMAND,
        enabled: bool = True,
    ) -> None:
        self._client = client
        self._runtime = runtime
        self._command = command
        self.enabled = enabled  # GATEHOUSE_TELL_TRIGGERER

    def run_notice(self, notice: RunNotice) -> None:
        if not self.enabled:
            return  # switched off: the owed notice is settled with nothing sent
        rt = self._runtime()
        ref_id = notice_ref(notice)
        with rt.db.transaction() as conn:
            if messages.message_ref(conn, kind=KIND, ref_id=ref_id) is not None:
                return  # told already (a delivery retried after the post)
        text = notice_text(notice, self._card_link(rt, notice), command=self._command)
        hint = f"`{escape(self._command)} run {escape(notice.run_id)}` shows every call"
        try:
            response = self._client.chat_postMessage(
                channel=notice.user, text=text, blocks=[section(text), context(hint)]
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            if error in NOBODY_THERE:
                log_refusal("slack.run_notice_refused", exc, user=notice.user, run=notice.run_id)
                return
            raise delivery_failure(exc) from exc
        except (SlackClientError, OSError) as exc:
            raise delivery_failure(exc) from exc
        with rt.db.transaction() as conn:
            messages.save_message_ref(
                conn,
                kind=KIND,
                ref_id=ref_id,
                channel=str(response["channel"]),
                ts=str(response["ts"]),
                now=rt.clock.now(),
            )
        log.info("slack.run_notice_sent", run_id=notice.run_id, status=notice.status)

    def _card_link(self, rt: Runtime, notice: RunNotice) -> str | None:
        """A permalink to the card the notice is about, when it was posted; a link Slack will
        not give leaves the notice without one rather than unsent."""
        if notice.card is None:
            return None
        kind, ref_id = notice.card
        with rt.db.transaction() as conn:
            ref = messages.message_ref(conn, kind=kind, ref_id=ref_id)
        if ref is None:
            return None
        try:
            answer = self._client.chat_getPermalink(channel=ref.channel, message_ts=ref.ts)
        except (SlackClientError, OSError) as exc:
            log.warning("slack.permalink_failed", ref_id=ref_id, error=str(exc))
            return None
        link = answer.get("permalink")
        return str(link) if link else None
