"""The engine's notifier, implemented for Slack: approval and human-task cards; alerts and the
weekly review are delegated to `bot.slack.alerts.SlackAlerts` and `bot.slack.review.SlackReview`.

A card is posted when an approval is requested or a task opened, and updated in place (with
`chat.update` on the stored channel and ts, not the short-lived `response_url`) when it is
decided, expires or is answered. The outbox sender (`pipelines.outbox`) calls these methods with
the subject's state at delivery time and retries failures, so each method is idempotent: a card
that exists is updated, one that does not is posted (a late "decided" card included), and a
subject gets one card. Slack's failures are raised as `DeliveryFailed`: retryable (429 with its
`Retry-After`, 5xx, connection errors) or not (a channel that does not exist); a revoked token
or a missing scope holds delivery until an operator acts (`bot.slack.delivery`). A card whose
message was deleted is posted again, showing its state now, and its new ts recorded.

A card carries message metadata naming what it shows (`gatehouse_card`: kind and id). A sender
that died (or lost the database) after Slack accepted the post but before the ts was recorded
leaves a card nobody knows about; the sender that takes the delivery over calls
`adopt_lost_card`, which finds that card in the channel's recent history by its metadata and
records it, so the delivery updates it instead of posting a second one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.slack import attention_cards, cards
from bot.slack.alerts import SlackAlerts
from bot.slack.approval_nudges import post_owed_replies
from bot.slack.card_links import card_links
from bot.slack.delivery import (
    delivery_failure,
    find_by_metadata,
    looks_up_history,
    message_gone,
    metadata,
)
from bot.slack.review import SlackReview
from bot.slack.run_notices import SlackRunNotices
from bot.slack.task_after_cards import after_line
from pipelines import inspect
from pipelines.attention import last_operation
from pipelines.display import display_marks, field_titles
from pipelines.four_eyes import excluded_deciders
from pipelines.operations.alerting import AlertView
from pipelines.operations.review import ReviewItemView, ReviewWeekView
from pipelines.pipeline import registered_pipelines
from pipelines.rate_limits import rate_limit_headroom
from pipelines.run_notices import RunNotice
from pipelines.runtime import Runtime
from pipelines.tool_context import context_for
from pipelines.tools import lookup_tool
from pipelines.views import ApprovalView, Run, TaskView
from storage import messages

log = structlog.get_logger()


class SlackNotifier:
    def __init__(
        self,
        client: WebClient,
        *,
        approvals_channel: str,
        runtime: Callable[[], Runtime],
        alerts: SlackAlerts | None = None,
        review: SlackReview | None = None,
        run_notices: SlackRunNotices | None = None,
    ) -> None:
        self._client = client
        self._default_channel = approvals_channel
        self._runtime = runtime  # the engine is built after its notifier; resolved on use
        # Alert messages (their Block Kit and threads are `bot.slack.alerts`' business).
        self._alerts = alerts or SlackAlerts(client, channel=None, runtime=runtime)
        # The weekly review's thread and summary (`bot.slack.review`).
        self._review = review or SlackReview(
            client, channel=None, timezone="UTC", command="/gatehouse", runtime=runtime
        )
        # The DMs telling a run's Slack triggerer how it went (`bot.slack.run_notices`).
        self._run_notices = run_notices or SlackRunNotices(client, runtime=runtime)

    # -- approvals ------------------------------------------------------------------------

    def approval_requested(self, approval: ApprovalView) -> None:
        self._show(
            "approval",
            approval.id,
            self.channel_for(approval),
            lambda: cards.approval_card(approval, self.approval_context(approval)),
            cards.approval_fallback_text(approval),
        )
        post_owed_replies(self._client, self._runtime(), approval)  # reminder, escalation

    def approval_decided(self, approval: ApprovalView) -> None:
        self._show(
            "approval",
            approval.id,
            self.channel_for(approval),
            lambda: cards.approval_decided_card(approval, self.approval_context(approval)),
            cards.approval_fallback_text(approval),
        )

    def approval_context(self, approval: ApprovalView) -> cards.ApprovalContext:
        rt = self._runtime()
        run = inspect.get_run(rt, approval.run_id)
        tool = lookup_tool(approval.tool)
        position = next(
            (i for i, c in enumerate(run.calls) if c.id == approval.call_id), len(run.calls)
        )
        earlier = run.calls[:position]
        return cards.ApprovalContext(
            trigger=run.trigger,
            run_input=run.input,
            # The model's answers and people's (a human exit, ctx.ask_human): the card says whose.
            llm_calls=[c for c in earlier if c.kind in ("llm", "human")],
            rate_limit=rate_limit_headroom(rt, tool) if tool is not None else None,
            tool_description=tool.description if tool is not None else "",
            arg_marks=display_marks(tool.args_model) if tool is not None else {},
            arg_titles=field_titles(tool.args_model) if tool is not None else {},
            tool_context=context_for(approval.tool, approval.args, earlier),
            now=rt.clock.now(),
            kept_out=[e.user for e in excluded_deciders(rt, approval)],
        )

    def channel_for(self, approval: ApprovalView) -> str:
        tool = lookup_tool(approval.tool)
        if tool is not None and tool.approvals_channel:
            return tool.approvals_channel
        pipeline = registered_pipelines().get(approval.pipeline or "")
        if pipeline is not None and pipeline.approvals_channel:
            return pipeline.approvals_channel
        return self._default_channel

    # -- human tasks ----------------------------------------------------------------------

    def task_opened(self, task: TaskView) -> None:
        self._show(
            "task",
            task.id,
            self.task_channel(task),
            lambda: cards.task_card(task),
            cards.task_fallback_text(task),
        )

    def task_answered(self, task: TaskView) -> None:
        self._show(
            "task",
            task.id,
            self.task_channel(task),
            lambda: cards.task_answered_card(task, next_line=self.task_next_line(task)),
            cards.task_fallback_text(task),
        )

    def task_next_line(self, task: TaskView) -> str | None:
        """What the run did after the answer, linking the approval card it waits on."""
        after = task.after
        if after is None:
            return None
        link = None
        if after.approval_id is not None:
            approval = inspect.get_approval(self._runtime(), after.approval_id)
            link = card_links(self._client, self._runtime(), [approval]).get(approval.id)
        return after_line(after, approval_link=link)

    # -- needs-attention notices (bot/slack/attention_cards.py) ---------------------------

    def run_needs_attention(self, run: Run) -> None:
        done = last_operation(self._runtime(), run.id)
        self._show(
            "run",
            run.id,
            self._pipeline_channel(run.pipeline),
            lambda: attention_cards.attention_card(run, done),
            attention_cards.attention_fallback_text(run, done),
        )

    def _pipeline_channel(self, pipeline_name: str) -> str:
        pipeline = registered_pipelines().get(pipeline_name)
        return (pipeline.approvals_channel if pipeline else None) or self._default_channel

    # -- alerts ---------------------------------------------------------------------------

    def alert_opened(self, alert: AlertView) -> None:
        self._alerts.alert_opened(alert)

    def alert_recovered(self, alert: AlertView) -> None:
        self._alerts.alert_recovered(alert)

    # -- the weekly review ----------------------------------------------------------------

    def review_thread(self, week: ReviewWeekView) -> None:
        self._review.review_thread(week)

    def review_summary(self, week: ReviewWeekView) -> None:
        self._review.review_summary(week)

    def review_verdict(self, item: ReviewItemView) -> None:
        self._review.review_verdict(item)

    # -- the triggerer's notices ----------------------------------------------------------

    def run_notice(self, notice: RunNotice) -> None:
        self._run_notices.run_notice(notice)

    # -- a delivery taken over ------------------------------------------------------------

    def adopt_lost_card(
        self,
        view: ApprovalView | TaskView | AlertView | ReviewWeekView | ReviewItemView | RunNotice,
    ) -> bool:
        """Find a card for `view` whose ts was never recorded (its sender died between Slack's
        answer and the commit) among the channel's latest messages, newest first, and record
        it. True when one was found."""
        if isinstance(view, AlertView):
            return self._alerts.adopt_lost_card(view)
        if isinstance(view, ReviewWeekView):
            return self._review.adopt_lost_card(view)
        if isinstance(view, ReviewItemView):
            return False  # a verdict updates a reply: nothing is posted, nothing can be lost
        if isinstance(view, RunNotice):
            return False  # a DM's history needs im:history, which the app does not ask for
        kind = "approval" if isinstance(view, ApprovalView) else "task"
        channel = (
            self.channel_for(view) if isinstance(view, ApprovalView) else self.task_channel(view)
        )
        if not looks_up_history(channel):
            # conversations.history takes ids only: name the channel by id for this protection
            log.warning("slack.card_not_looked_up", ref_id=view.id, channel=channel)
            return False
        rt = self._runtime()
        with rt.db.transaction() as conn:
            if messages.message_ref(conn, kind=kind, ref_id=view.id) is not None:
                return False
        found = find_by_metadata(self._client, channel, view.id)
        if found is None:
            return False
        with rt.db.transaction() as conn:
            messages.save_message_ref(
                conn, kind=kind, ref_id=view.id, channel=found[0], ts=found[1], now=rt.clock.now()
            )
        log.warning("slack.card_adopted", kind=kind, ref_id=view.id)
        return True

    def check_delivery(self) -> None:
        """Does Slack take this token (`auth.test`)? The outbox's probe when delivery is paused
        and no card is due to probe with; raises `DeliveryFailed` when it does not."""
        try:
            self._client.auth_test()
        except (SlackClientError, OSError) as exc:
            raise delivery_failure(exc) from exc

    def task_channel(self, task: TaskView) -> str:
        pipeline = registered_pipelines().get(task.pipeline or "")
        return (pipeline.approvals_channel if pipeline else None) or self._default_channel

    # -- Web API --------------------------------------------------------------------------

    def _show(
        self,
        kind: str,
        ref_id: str,
        channel: str,
        blocks: Callable[[], list[dict[str, Any]]],
        text: str,
    ) -> None:
        """Make Slack show this card: update it where it is, or post it once. A card whose
        message is gone (deleted, past its edit window) is posted again, with its state now, in
        the channel it was in, and the new ts replaces the old (later updates go there)."""
        rt = self._runtime()
        with rt.db.transaction() as conn:
            ref = messages.message_ref(conn, kind=kind, ref_id=ref_id)
        gone: str | None = None
        try:
            if ref is not None:
                try:
                    self._client.chat_update(
                        channel=ref.channel, ts=ref.ts, blocks=blocks(), text=text
                    )
                    log.info("slack.card_updated", kind=kind, ref_id=ref_id)
                    return
                except SlackApiError as exc:
                    if not message_gone(exc):
                        raise
                    gone = str(exc.response.get("error"))
                    channel = ref.channel
            response = self._client.chat_postMessage(
                channel=channel,
                blocks=blocks(),
                text=text,
                metadata=metadata(kind, ref_id),
            )
        except (SlackClientError, OSError) as exc:
            failure = delivery_failure(exc)
            log.warning("slack.delivery_failed", kind=kind, ref_id=ref_id, error=str(failure))
            raise failure from exc
        with rt.db.transaction() as conn:
            messages.save_message_ref(
                conn,
                kind=kind,
                ref_id=ref_id,
                channel=str(response["channel"]),
                ts=str(response["ts"]),
                now=rt.clock.now(),
            )
        if ref is not None and gone is not None:
            log.warning(
                "slack.card_reposted",
                kind=kind,
                ref_id=ref_id,
                channel=response["channel"],
                old_ts=ref.ts,
                ts=response["ts"],
                error=gone,
                detail=f"the card's message {ref.ts} is gone ({gone}): posted it again as "
                f"{response['ts']}, showing its state now",
            )
            return
        log.info("slack.card_posted", kind=kind, ref_id=ref_id, channel=response["channel"])
