"""Alerts in Slack: the checks the scheduler runs (every minute; drift hourly), how an alert is
shown (`SlackAlerts`, behind the notifier port), and its messages (pure Block Kit).

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
from datetime import datetime, timedelta
from typing import Any

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError

from bot.formatting import clock
from bot.slack.blocks import context, header, section
from bot.slack.bot import Bot
from bot.slack.delivery import delivery_failure, find_by_metadata, looks_up_history, metadata
from bot.slack.mrkdwn import code, escape, truncate
from pipelines.operations import alerting, alerts, drift
from pipelines.operations.alerting import (
    CONFIDENCE_DROP,
    HUMAN_EXIT_RATE,
    INPUT_DRIFT,
    OUTPUT_DRIFT,
    AlertChange,
    AlertView,
    percent,
)
from pipelines.outbox import OutboxSender
from pipelines.ports import DeliveryFailed, SilentNotifier
from pipelines.runtime import Runtime

log = structlog.get_logger()

ERROR_LIMIT = 800  # one error line, escaped, in a message (3 of them + labels < 3,000)
NAME_LIMIT = 100
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
            str(failure), retryable=True, retry_after=failure.retry_after, code=failure.code
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


TITLES = {
    "error_rate": (":rotating_light:", "Error-rate alert"),
    HUMAN_EXIT_RATE: (":raising_hand:", "Human-exit alert"),
    CONFIDENCE_DROP: (":chart_with_downwards_trend:", "Confidence drop"),
    INPUT_DRIFT: (":twisted_rightwards_arrows:", "Input drift"),
    OUTPUT_DRIFT: (":twisted_rightwards_arrows:", "Output drift"),
}
DRIFT_RULES = (INPUT_DRIFT, OUTPUT_DRIFT)
CALL_RULES = (HUMAN_EXIT_RATE, CONFIDENCE_DROP)


def _name(alert: AlertView) -> str:
    """The alert's subject (the pipeline, `pipeline · llm KEY`, `pipeline · input.FIELD`)."""
    return escape(truncate(alert.subject or alert.pipeline, NAME_LIMIT))


def _title(alert: AlertView) -> str:
    return TITLES.get(alert.rule, (":rotating_light:", "Alert"))[1]


def _confidence(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _calls(count: int, noun: str = "call") -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _days(days: Any) -> str:
    return f"{float(days):g} day" + ("" if float(days) == 1 else "s")


def _minutes(length: timedelta) -> str:
    minutes = length.total_seconds() / 60
    if minutes >= 120 and minutes % 60 == 0:
        return f"{minutes / 60:g} h"
    return f"{minutes:g} min"


def _hours(length: timedelta) -> str:
    return f"{length.total_seconds() / 3600:g} h"


def _runs(count: int) -> str:
    return f"{count:,} run" + ("" if count == 1 else "s")


def summary_text(alert: AlertView) -> str:
    """The rule's figure and what it is compared with, as escaped mrkdwn."""
    if alert.rule in CALL_RULES:
        return _call_summary(alert)
    if alert.rule in DRIFT_RULES:
        return _drift_summary(alert)
    line = (
        ("" if alert.is_open else "When it opened: ")
        + f"*{percent(alert.rate)}* of the {_runs(alert.window_runs)} that finished in the last "
        f"{_minutes(alert.window)} ended in error ({alert.window_errors:,})."
    )
    if alert.baseline is None:
        baseline = f"No runs finished in the {_hours(alert.baseline_window)} before: no baseline."
    else:
        baseline = (
            f"Baseline: *{percent(alert.baseline)}* over the {_hours(alert.baseline_window)} "
            f"before ({_runs(alert.baseline_runs)})."
        )
    return f"{line}\n{baseline}"


def _call_summary(alert: AlertView) -> str:
    figures = alert.detail("figures") or {}
    key = alert.detail("call_key")
    calls = f"the LLM call {code(key, 200)}" if key else "the LLM calls"
    opened = "" if alert.is_open else "When it opened: "
    if alert.rule == HUMAN_EXIT_RATE:
        line = (
            f"{opened}*{percent(alert.rate)}* of the {_calls(alert.window_runs)} to {calls} "
            f"in the last {_minutes(alert.window)} took the human exit "
            f"({int(figures.get('human_exits', 0)):,})."
        )
        base_calls = int(figures.get("baseline_calls", 0))
        baseline = (
            f"Baseline: *{percent(alert.baseline)}* over the {_hours(alert.baseline_window)} "
            f"before ({_calls(base_calls)})."
            if alert.baseline is not None
            else f"No calls in the {_hours(alert.baseline_window)} before: no baseline."
        )
        return f"{line}\n{baseline}"
    line = (
        f"{opened}Mean confidence *{_confidence(alert.rate)}* over "
        f"{_calls(alert.window_runs, 'answer')} of {calls} in the last {_minutes(alert.window)}."
    )
    baseline = (
        f"Baseline: *{_confidence(alert.baseline)}* over the {_hours(alert.baseline_window)} "
        f"before ({_calls(int(figures.get('baseline_confident', 0)), 'answer')})."
    )
    return f"{line}\n{baseline}"


def _drift_summary(alert: AlertView) -> str:
    opened = "" if alert.is_open else "When it opened: "
    return (
        f"{opened}PSI *{alert.rate:.2f}* for {code(alert.detail('label', '?'), 300)}: the last "
        f"{_days(alert.detail('recent_days', 7))} ({_calls(int(alert.detail('recent_count', 0)), 'value')}) "
        f"against the {_days(alert.detail('reference_days', 28))} before "
        f"({_calls(int(alert.detail('reference_count', 0)), 'value')})."
    )


def shifts_text(alert: AlertView) -> str:
    """The categories that moved most, with their share before and now."""
    lines = [
        f"• {code(shift.get('value'), 300)}: {percent(shift.get('reference_share'))} → "
        f"{percent(shift.get('recent_share'))}"
        for shift in alert.detail("top_shifts") or []
    ]
    return "*Most shifted*\n" + ("\n".join(lines) or "none")


def top_errors_text(alert: AlertView) -> str:
    if not alert.top_errors:
        return "*Top errors*\nnone recorded"
    lines = [f"• {code(e.message, ERROR_LIMIT)} — {_runs(e.count)}" for e in alert.top_errors]
    return "*Top errors*\n" + "\n".join(lines)


def sample_runs_text(alert: AlertView, command: str) -> str:
    lines = [f"• `{escape(command)} run {escape(run_id)}`" for run_id in alert.sample_run_ids]
    return "*Sample runs*\n" + ("\n".join(lines) or "none")


def rule_text(alert: AlertView) -> str:
    if alert.rule == HUMAN_EXIT_RATE:
        return (
            f"alert #{alert.id} · opened {clock(alert.opened_at)} · fires at ≥ "
            f"{percent(alert.threshold)} human exits and ≥ {alert.factor:g} times the baseline "
            f"with ≥ {_calls(alert.min_volume)}"
        )
    if alert.rule == CONFIDENCE_DROP:
        return (
            f"alert #{alert.id} · opened {clock(alert.opened_at)} · fires when the mean "
            f"confidence falls more than {alert.threshold:g} under the baseline with ≥ "
            f"{_calls(alert.min_volume, 'answer')}"
        )
    if alert.rule in DRIFT_RULES:
        return (
            f"alert #{alert.id} · opened {clock(alert.opened_at)} · fires at a PSI above "
            f"{alert.threshold:g} with ≥ {_calls(alert.min_volume, 'value')} in each period"
        )
    return (
        f"alert #{alert.id} · opened {clock(alert.opened_at)} · fires at ≥ "
        f"{percent(alert.threshold)} and ≥ {alert.factor:g} times the baseline with ≥ "
        f"{_runs(alert.min_volume)}"
    )


def recovery_text(alert: AlertView) -> str:
    """How the alert ended, as escaped mrkdwn (only for a recovered alert)."""
    ended = alert.recovered_at or alert.opened_at
    after = (
        f"Recovered {clock(ended, same_day_as=alert.opened_at)}, "
        f"after {_duration(ended - alert.opened_at)}."
    )
    if alert.rule in DRIFT_RULES:
        now_psi = "n/a" if alert.recovery_rate is None else f"{alert.recovery_rate:.2f}"
        return f"PSI back at or under {alert.threshold:g} (now {now_psi}). {after}"
    if alert.rule == CONFIDENCE_DROP:
        return (
            f"Mean confidence back within {alert.threshold:g} of the baseline for "
            f"{_minutes(alert.window)} (now {_confidence(alert.recovery_rate)}). {after}"
        )
    if alert.rule == HUMAN_EXIT_RATE:
        return (
            f"Human exits back under the bar for {_minutes(alert.window)} "
            f"(now {percent(alert.recovery_rate)}). {after}"
        )
    now_rate = (
        f"now {percent(alert.recovery_rate)} over {_runs(alert.recovery_runs or 0)}"
        if alert.recovery_rate is not None
        else "no runs finished in the last window"
    )
    return (
        f"Back under {percent(alert.threshold)} for {_minutes(alert.window)} ({now_rate}). "
        f"Recovered {clock(ended, same_day_as=alert.opened_at)}, "
        f"after {_duration(ended - alert.opened_at)}."
    )


def _duration(length: timedelta) -> str:
    minutes = int(length.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def alert_blocks(alert: AlertView, command: str = "/gatehouse") -> list[dict[str, Any]]:
    """The alert message; once recovered, the same message says so (for `chat.update`)."""
    subject = truncate(alert.subject or alert.pipeline, NAME_LIMIT)
    if alert.is_open:
        icon, title = TITLES.get(alert.rule, (":rotating_light:", "Alert"))
        text = f"{icon} {title}: {subject}"
    else:
        text = f":white_check_mark: Recovered: {subject}"
    blocks: list[dict[str, Any]] = [header(text)]
    if not alert.is_open:
        blocks.append(section(recovery_text(alert)))
    blocks.append(section(summary_text(alert)))
    if alert.rule in DRIFT_RULES:
        blocks.append(section(shifts_text(alert)))
    elif alert.rule not in CALL_RULES:
        blocks += [section(top_errors_text(alert)), section(sample_runs_text(alert, command))]
    if not alert.is_open:
        quiet = "recovered"
    elif alert.rule in DRIFT_RULES:
        quiet = "quiet until the PSI is back under the bar at an hourly check"
    elif alert.rule in CALL_RULES:
        quiet = f"quiet until the call is back under the bar for {_minutes(alert.window)}"
    else:
        quiet = (
            f"quiet until the rate stays under {percent(alert.threshold)} for "
            f"{_minutes(alert.window)}"
        )
    blocks.append(context(f"{rule_text(alert)} · {quiet}"))
    return blocks


def alert_text(alert: AlertView) -> str:
    """The message's `text` (notifications, screen readers), escaped like the blocks."""
    if alert.is_open and alert.rule == HUMAN_EXIT_RATE:
        return (
            f"Human-exit alert: {_name(alert)}: {percent(alert.rate)} of "
            f"{_calls(alert.window_runs)} took the human exit (baseline {percent(alert.baseline)})"
        )
    if alert.is_open and alert.rule == CONFIDENCE_DROP:
        return (
            f"Confidence drop: {_name(alert)}: mean {_confidence(alert.rate)} "
            f"(baseline {_confidence(alert.baseline)})"
        )
    if alert.is_open and alert.rule in DRIFT_RULES:
        return f"{_title(alert)}: {_name(alert)}: PSI {alert.rate:.2f}"
    if not alert.is_open and alert.rule != "error_rate":
        return f"Recovered: {_name(alert)} ({_title(alert).lower()})"
    if alert.is_open:
        return (
            f"Error-rate alert: {_name(alert)}: {percent(alert.rate)} of "
            f"{_runs(alert.window_runs)} in {_minutes(alert.window)} ended in error "
            f"(baseline {percent(alert.baseline)})"
        )
    return f"Recovered: {_name(alert)} (was {percent(alert.rate)} errors)"


def recovered_reply_blocks(alert: AlertView) -> list[dict[str, Any]]:
    return [section(f":white_check_mark: *Recovered*: {_name(alert)}. {recovery_text(alert)}")]


def recovered_text(alert: AlertView) -> str:
    if alert.rule != "error_rate":
        return f"Recovered: {_name(alert)} ({_title(alert).lower()})"
    return f"Recovered: {_name(alert)} is back under {percent(alert.threshold)} errors"
