"""Error-rate alerts in Slack: the check the scheduler runs every minute, and its messages.

`check_alerts` evaluates (`pipelines.alerts.evaluate`: opens alerts on spikes, recovers them),
then sends every message that is due, each claimed first so that no two processes send it:

- an alert not yet in Slack: a message in the alerts channel with the rate and its baseline,
  the top errors and sample runs (`/gatehouse run ID`); its channel and ts are stored;
- a recovered alert: a "recovered" reply in the alert's thread, then `chat.update` of the alert
  message so the channel shows it is over.

A post that fails (Slack down, a bad channel) gives its claim back: the alert row is already
written, and the next check, on any replica, sends the missing message. Error messages come from
pipelines and models, so everything shown is escaped (`<!channel>` in an error pings nobody).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from slack_sdk.errors import SlackClientError

from bot.app import Bot
from bot.cards import context, header, section
from bot.mrkdwn import clock, code, escape, truncate
from pipelines import alerts
from pipelines.alerts import AlertChange, AlertView, PostClaim, percent
from pipelines.runtime import Runtime

log = structlog.get_logger()

ERROR_LIMIT = 800  # one error line, escaped, in a message (3 of them + labels < 3,000)
NAME_LIMIT = 100


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
    changes = alerts.evaluate(rt, bot.settings, now=now)
    channel = bot.settings.alerts_channel
    if not channel:
        if changes:
            log.warning("alerts.not_posted", reason="GATEHOUSE_ALERTS_CHANNEL is not set")
        return AlertsCheck(changes, not_posted="GATEHOUSE_ALERTS_CHANNEL is not set")
    result = AlertsCheck(changes)
    command = bot.settings.slash_command
    failed_alerts: set[int] = set()
    for claim in alerts.claim_posts(rt, now=now):
        if claim.alert.id in failed_alerts:  # its alert message failed: the reply waits for it
            alerts.release_post(rt, claim)
            continue
        try:
            if claim.stage == "opened":
                _post_alert(bot, rt, claim, channel, command)
            else:
                _post_recovery(bot, rt, claim, command)
        except (SlackClientError, OSError) as exc:
            error = _slack_error(exc)
            log.warning(
                "alert.post_failed", alert_id=claim.alert.id, stage=claim.stage, error=error
            )
            alerts.release_post(rt, claim)
            failed_alerts.add(claim.alert.id)
            result.failed.append((claim.alert.id, claim.stage, error))
            continue
        result.posted.append((claim.alert.id, claim.stage))
    return result


def _post_alert(bot: Bot, rt: Runtime, claim: PostClaim, channel: str, command: str) -> None:
    alert = alerts.get_alert(rt, claim.alert.id) or claim.alert
    response = bot.client.chat_postMessage(
        channel=channel, blocks=alert_blocks(alert, command), text=alert_text(alert)
    )
    alerts.finish_post(rt, claim, channel=str(response["channel"]), ts=str(response["ts"]))
    log.info("alert.posted", alert_id=alert.id, pipeline=alert.pipeline, ts=response["ts"])


def _post_recovery(bot: Bot, rt: Runtime, claim: PostClaim, command: str) -> None:
    alert = alerts.get_alert(rt, claim.alert.id) or claim.alert
    if not alert.channel or not alert.ts:  # claimed only after the alert message: defensive
        alerts.release_post(rt, claim)
        return
    response = bot.client.chat_postMessage(
        channel=alert.channel,
        thread_ts=alert.ts,
        blocks=recovered_reply_blocks(alert),
        text=recovered_text(alert),
    )
    alerts.finish_post(rt, claim, reply_ts=str(response["ts"]))
    log.info("alert.recovery_posted", alert_id=alert.id, pipeline=alert.pipeline)
    try:
        bot.client.chat_update(
            channel=alert.channel,
            ts=alert.ts,
            blocks=alert_blocks(alert, command),
            text=alert_text(alert),
        )
    except (SlackClientError, OSError) as exc:
        # The reply is in the thread; the original keeps saying "open". Not worth a re-send.
        log.warning("alert.update_failed", alert_id=alert.id, error=_slack_error(exc))


def _slack_error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            return str(response.get("error") or exc)
        except AttributeError:
            pass
    return str(exc) or type(exc).__name__


# -- messages (pure) -----------------------------------------------------------------------------


def _name(alert: AlertView) -> str:
    return escape(truncate(alert.pipeline, NAME_LIMIT))


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
    """The rate and what it is compared with, as escaped mrkdwn."""
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


def top_errors_text(alert: AlertView) -> str:
    if not alert.top_errors:
        return "*Top errors*\nnone recorded"
    lines = [f"• {code(e.message, ERROR_LIMIT)} — {_runs(e.count)}" for e in alert.top_errors]
    return "*Top errors*\n" + "\n".join(lines)


def sample_runs_text(alert: AlertView, command: str) -> str:
    lines = [f"• `{escape(command)} run {escape(run_id)}`" for run_id in alert.sample_run_ids]
    return "*Sample runs*\n" + ("\n".join(lines) or "none")


def rule_text(alert: AlertView) -> str:
    return (
        f"alert #{alert.id} · opened {clock(alert.opened_at)} · fires at ≥ "
        f"{percent(alert.threshold)} and ≥ {alert.factor:g} times the baseline with ≥ "
        f"{_runs(alert.min_volume)}"
    )


def recovery_text(alert: AlertView) -> str:
    """How the alert ended, as escaped mrkdwn (only for a recovered alert)."""
    ended = alert.recovered_at or alert.opened_at
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
    if alert.is_open:
        title = f":rotating_light: Error-rate alert: {truncate(alert.pipeline, NAME_LIMIT)}"
    else:
        title = f":white_check_mark: Recovered: {truncate(alert.pipeline, NAME_LIMIT)}"
    blocks: list[dict[str, Any]] = [header(title)]
    if not alert.is_open:
        blocks.append(section(recovery_text(alert)))
    blocks += [
        section(summary_text(alert)),
        section(top_errors_text(alert)),
        section(sample_runs_text(alert, command)),
    ]
    quiet = (
        f"quiet until the rate stays under {percent(alert.threshold)} for {_minutes(alert.window)}"
        if alert.is_open
        else "recovered"
    )
    blocks.append(context(f"{rule_text(alert)} · {quiet}"))
    return blocks


def alert_text(alert: AlertView) -> str:
    """The message's `text` (notifications, screen readers), escaped like the blocks."""
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
    return f"Recovered: {_name(alert)} is back under {percent(alert.threshold)} errors"
