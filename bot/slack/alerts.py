"""Alerts in Slack: the checks the scheduler runs (every minute; drift hourly), how an alert is
shown (`SlackAlerts`, behind the notifier port); its messages are `bot.slack.alert_cards`.

`check_alerts` evaluates (`pipelines.operations.alerts.evaluate`: opens alerts on spikes, recovers
them), `check_drift` evaluates drift (`pipelines.operations.drift.evaluate_drift`); each change
owes an outbox delivery of its alert, and both checks then deliver what is owed at once (the
outbox sender's thread would, too; its claims keep it to one sender):

- an open alert not yet in Slack: a message in the alerts channel with the rule's figure and its
  baseline (an error rate with the top errors and sample runs, `/gatehouse run ID`; a human-exit
  rate or a mean confidence of one LLM call; a PSI with the most shifted categories); its channel
  and ts are stored;
- a recovered alert: its message if it never went out, a "recovered" reply in its thread, then
  `chat.update` of the alert message so the channel shows it is over.

A post that fails (Slack down, a bad channel) leaves the delivery owed: the outbox retries it
with backoff, on any replica, and what was posted is not posted again. Error messages come from
pipelines and models, so everything shown is escaped (`<!channel>` in an error pings nobody).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError

from bot.slack.alert_cards import alert_blocks, alert_text, recovered_reply_blocks, recovered_text
from bot.slack.bot import Bot
from bot.slack.delivery import delivery_failure, find_by_metadata, looks_up_history, metadata
from pipelines.operations import alerting, alerts, drift
from pipelines.operations.alerting import (
    AlertChange,
    AlertView,
)
from pipelines.outbox import OutboxSender
from pipelines.ports import DeliveryFailed, SilentNotifier
from pipelines.runtime import Runtime

log = structlog.get_logger()

DRIFT_BUDGET_SECONDS = 60.0  # of counting days per hourly drift check


@dataclass(frozen=True)
class AlertsCheck:
    """What one check did: the evaluation's changes, and the messages sent or not sent."""

    changes: list[AlertChange]
    posted: list[tuple[int, str]] = field(default_factory=list)  # (alert id, stage)
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (alert id, stage, error)
    not_posted: str | None = None  # why nothing was sent at all

    def to_json(self) -> dict[str, Any]:
        return {
            "changes": [change.to_json() for change in self.changes],
            "posted": [{"alert_id": a, "stage": s} for a, s in self.posted],
            "failed": [{"alert_id": a, "stage": s, "error": e} for a, s, e in self.failed],
            "not_posted": self.not_posted,
        }


def check_alerts(bot: Bot, now: datetime | None = None) -> AlertsCheck:
    """Evaluate now and send what is due. The job the scheduler runs every minute."""
    rt = bot.gatehouse.rt
    now = now if now is not None else rt.clock.now()
    return post_due(bot, alerts.evaluate(rt, bot.settings, now=now), now)


def check_drift(
    bot: Bot, now: datetime | None = None, *, budget_seconds: float | None = DRIFT_BUDGET_SECONDS
) -> AlertsCheck:
    """Count the days not yet counted (for up to `budget_seconds`: a first count of a long
    history goes on at the next fire), evaluate drift (PSI of every categorical field) and send
    what is due. Hourly."""
    rt = bot.gatehouse.rt
    now = now if now is not None else rt.clock.now()
    changes = drift.evaluate_drift(rt, bot.settings, now=now, budget_seconds=budget_seconds)
    return post_due(bot, changes, now)


def post_due(bot: Bot, changes: list[AlertChange], now: datetime) -> AlertsCheck:
    """Deliver every alert whose delivery is owed (whichever evaluation owed it), now."""
    rt = bot.gatehouse.rt
    channel = bot.settings.alerts_channel
    if not channel:
        if changes:
            log.warning("alerts.not_posted", reason="GATEHOUSE_ALERTS_CHANNEL is not set")
        return AlertsCheck(changes, not_posted="GATEHOUSE_ALERTS_CHANNEL is not set")
    result = AlertsCheck(changes)
    slack = SlackAlerts(
        bot.client, channel=channel, runtime=lambda: rt, command=bot.settings.slash_command
    )
    # The checks are the alerts' retry schedule: a failure here is due again at the next check
    # (never sooner than Slack's Retry-After), as the sender's backoff would make it wait longer.
    sender = OutboxSender(rt, notifier=slack, base_backoff=0.0)
    for alert_id in alerting.owed_alerts(rt):
        before = alerting.get_alert(rt, alert_id)
        outcome = sender.deliver_subject(alerting.subject_of(alert_id))
        after = alerting.get_alert(rt, alert_id)
        if outcome is None or before is None or after is None:
            continue  # not due yet (a retry later), or another sender has it
        if before.ts is None and after.ts is not None:
            result.posted.append((alert_id, "opened"))
        if before.recovered_reply_ts is None and after.recovered_reply_ts is not None:
            result.posted.append((alert_id, "recovered"))
        if outcome.failure is not None:
            stage = "opened" if after.ts is None else "recovered"
            result.failed.append((alert_id, stage, outcome.failure.reason))
    return result


class SlackAlerts(SilentNotifier):
    """The notifier's alert half: shows an alert's state in Slack, idempotently (what is posted
    and recorded is never posted again). Approvals and tasks are `SlackNotifier`'s; alone (the
    checks' own deliveries) this shows alerts only."""

    def __init__(
        self,
        client: WebClient,
        *,
        channel: str | None,
        runtime: Callable[[], Runtime],
        command: str = "/gatehouse",
    ) -> None:
        self._client = client
        self._channel = channel
        self._runtime = runtime
        self._command = command

    def alert_opened(self, alert: AlertView) -> None:
        self._message(self._fresh(alert))

    def alert_recovered(self, alert: AlertView) -> None:
        posted_now = self._message(self._fresh(alert))
        alert = alerting.get_alert(self._runtime(), alert.id) or alert
        if alert.recovered_reply_ts is not None or not alert.channel or not alert.ts:
            return
        rt = self._runtime()
        try:
            response = self._client.chat_postMessage(
                channel=alert.channel,
                thread_ts=alert.ts,
                blocks=recovered_reply_blocks(alert),
                text=recovered_text(alert),
                metadata=metadata("alert_reply", alerting.subject_of(alert.id)),
            )
        except (SlackClientError, OSError) as exc:
            raise self._failed(alert, "recovered", exc) from exc
        alerting.record_recovery_reply(rt, alert.id, str(response["ts"]))
        log.info("alert.recovery_posted", alert_id=alert.id, pipeline=alert.pipeline)
        if posted_now:
            return  # the message was posted saying "recovered" already
        try:
            self._client.chat_update(
                channel=alert.channel,
                ts=alert.ts,
                blocks=alert_blocks(alert, self._command),
                text=alert_text(alert),
            )
        except (SlackClientError, OSError) as exc:
            # The reply is in the thread; the original keeps saying "open". Not worth a re-send.
            log.warning("alert.update_failed", alert_id=alert.id, error=_slack_error(exc))

    def _fresh(self, alert: AlertView) -> AlertView:
        """The alert as stored now (a message found by `adopt_lost_card` is recorded)."""
        return alerting.get_alert(self._runtime(), alert.id) or alert

    def adopt_lost_card(self, alert: AlertView) -> bool:
        """Record the alert's message if a sender that died posted it without recording it
        (found by its metadata in the channel's recent history). The "recovered" reply is in
        a thread, which `conversations.history` does not list: that window (a crash between
        Slack's answer and the commit of its ts) stays open."""
        if alert.ts is not None or not self._channel or not looks_up_history(self._channel):
            return False
        found = find_by_metadata(self._client, self._channel, alerting.subject_of(alert.id))
        if found is None:
            return False
        log.warning("alert.message_adopted", alert_id=alert.id)
        return alerting.record_message(self._runtime(), alert.id, channel=found[0], ts=found[1])

    def _message(self, alert: AlertView) -> bool:
        """Post the alert's message (its state now) unless it is in Slack; True if posted."""
        if alert.ts is not None:
            return False
        if not self._channel:
            raise DeliveryFailed(
                "GATEHOUSE_ALERTS_CHANNEL is not set", retryable=True, code="no_alerts_channel"
            )
        try:
            response = self._client.chat_postMessage(
                channel=self._channel,
                blocks=alert_blocks(alert, self._command),
                text=alert_text(alert),
                metadata=metadata("alert", alerting.subject_of(alert.id)),
            )
        except (SlackClientError, OSError) as exc:
            raise self._failed(alert, "opened", exc) from exc
        alerting.record_message(
            self._runtime(), alert.id, channel=str(response["channel"]), ts=str(response["ts"])
        )
        log.info(
            "alert.posted",
            alert_id=alert.id,
            rule=alert.rule,
            subject=alert.subject,
            ts=response["ts"],
        )
        return True

    def _failed(self, alert: AlertView, stage: str, exc: Exception) -> DeliveryFailed:
        """Every failure is worth another try (a channel fixed, the bot invited): an alert's
        delivery stays owed until it is posted or `alerting.RETRY_HORIZON` passes, never given
        up after a few attempts like a card (no later change would owe it again)."""
        failure = delivery_failure(exc)
        log.warning("alert.post_failed", alert_id=alert.id, stage=stage, error=failure.reason)
        return DeliveryFailed(
            str(failure),
            retryable=True,
            retry_after=failure.retry_after,
            code=failure.code,
            hold=failure.hold,
            action=failure.action,
        )


def _slack_error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            return str(response.get("error") or exc)
        except AttributeError:
            pass
    return str(exc) or type(exc).__name__


# -- messages (pure) -----------------------------------------------------------------------------
