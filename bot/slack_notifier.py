"""The engine's notifier, implemented for Slack: approval and human-task cards.

A card is posted when an approval is requested or a task opened, and updated in place (with
`chat.update` on the stored channel and ts, not the short-lived `response_url`) when it is
decided, expires or is answered. Slack being unreachable must not fail a run: errors are logged
and the approval stays decidable from the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import cards
from pipelines import inspect
from pipelines.gates import rate_limit_headroom
from pipelines.pipeline import registered_pipelines
from pipelines.runtime import Runtime
from pipelines.tools import lookup_tool
from pipelines.views import ApprovalView, TaskView
from storage import messages

log = structlog.get_logger()


class SlackNotifier:
    def __init__(
        self,
        client: WebClient,
        *,
        approvals_channel: str,
        runtime: Callable[[], Runtime],
    ) -> None:
        self._client = client
        self._default_channel = approvals_channel
        self._runtime = runtime  # the engine is built after its notifier; resolved on use

    # -- approvals ------------------------------------------------------------------------

    def approval_requested(self, approval: ApprovalView) -> None:
        context = self.approval_context(approval)
        channel = self.channel_for(approval)
        self._post(
            "approval",
            approval.id,
            channel,
            cards.approval_card(approval, context),
            cards.approval_fallback_text(approval),
        )

    def approval_decided(self, approval: ApprovalView) -> None:
        self._update(
            "approval",
            approval.id,
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
        return cards.ApprovalContext(
            trigger=run.trigger,
            run_input=run.input,
            llm_calls=[c for c in run.calls[:position] if c.kind == "llm"],
            rate_limit=rate_limit_headroom(rt, tool) if tool is not None else None,
            tool_description=tool.description if tool is not None else "",
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
        pipeline = registered_pipelines().get(task.pipeline or "")
        channel = (pipeline.approvals_channel if pipeline else None) or self._default_channel
        self._post("task", task.id, channel, cards.task_card(task), cards.task_fallback_text(task))

    def task_answered(self, task: TaskView) -> None:
        self._update(
            "task", task.id, lambda: cards.task_answered_card(task), cards.task_fallback_text(task)
        )

    # -- Web API --------------------------------------------------------------------------

    def _post(
        self, kind: str, ref_id: str, channel: str, blocks: list[dict[str, Any]], text: str
    ) -> None:
        try:
            response = self._client.chat_postMessage(channel=channel, blocks=blocks, text=text)
        except SlackApiError as exc:
            log.error(
                "slack.post_failed", kind=kind, ref_id=ref_id, error=str(exc.response.get("error"))
            )
            return
        rt = self._runtime()
        with rt.db.transaction() as conn:
            messages.save_message_ref(
                conn,
                kind=kind,
                ref_id=ref_id,
                channel=str(response["channel"]),
                ts=str(response["ts"]),
                now=rt.clock.now(),
            )
        log.info("slack.card_posted", kind=kind, ref_id=ref_id, channel=response["channel"])

    def _update(
        self, kind: str, ref_id: str, blocks: Callable[[], list[dict[str, Any]]], text: str
    ) -> None:
        """Update the card in place; the blocks are only built when there is a card."""
        rt = self._runtime()
        with rt.db.transaction() as conn:
            ref = messages.message_ref(conn, kind=kind, ref_id=ref_id)
        if ref is None:
            log.warning("slack.card_missing", kind=kind, ref_id=ref_id)
            return
        try:
            self._client.chat_update(channel=ref.channel, ts=ref.ts, blocks=blocks(), text=text)
        except SlackApiError as exc:
            log.error(
                "slack.update_failed",
                kind=kind,
                ref_id=ref_id,
                error=str(exc.response.get("error")),
            )
