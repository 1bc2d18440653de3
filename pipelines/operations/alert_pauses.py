"""An alert that pauses its pipeline (`@pipeline(pause_on=["error_rate"])`), and the choice its
message then asks for: **Resume** or **Keep paused**.

The pause is made in the transaction that opens the alert (`pause_for_alert`), and recorded in
the alert's details (`PAUSE_KEY`), so the message, posted later through the outbox, always says
whether it paused the pipeline. A person's choice (`choose`) is checked like any pause or
resume (operators only), audited, and recorded in the details too (`CHOICE_KEY`): every
rendering of the message afterwards (the recovery's `chat.update` included) shows who chose
what. "Keep paused" leaves Resume on the message; Resume is the last word.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import structlog
from sqlalchemy import Connection

from pipelines import pauses
from pipelines.authorization import authorize_operator
from pipelines.errors import GatehouseError
from pipelines.operations.alerting import AlertChange, AlertView, get_alert, percent
from pipelines.pipeline import registered_pipelines
from pipelines.runtime import Runtime
from pipelines.views import iso
from storage import alerts as alert_rows
from storage.alerts import ERROR_RATE
from storage.audit import append_audit

log = structlog.get_logger()

PAUSE_KEY = (
    "pause"  # {"paused": bool (this alert paused it; False: it was paused already), "source"}
)
CHOICE_KEY = "pause_choice"  # {"choice": Choice, "by": user, "at": iso}
PAUSED_BY = "gatehouse"  # the actor of a pause made by an alert rule
Choice = Literal["resumed", "kept_paused", "not_paused"]

RULE_SOURCES = {ERROR_RATE: "alert:error_rate"}
"""Alert rules that may pause their pipeline, and the pause source each records."""


class UnknownAlert(GatehouseError):
    pass


class AlertPausedNothing(GatehouseError):
    """A Resume / Keep paused choice on an alert that did not pause its pipeline."""


def pause_for_alert(conn: Connection, change: AlertChange, now: datetime) -> bool:
    """In the transaction that opened `change`'s alert: pause its pipeline when the pipeline
    asks for it (`pause_on`) and record that on the alert. True when this paused it."""
    alert = change.alert
    source = RULE_SOURCES.get(alert.rule)
    pipeline = registered_pipelines().get(alert.pipeline)
    if change.kind != "opened" or source is None or pipeline is None:
        return False
    if alert.rule not in pipeline.pause_on:
        return False
    reason = (
        f"error-rate alert #{alert.id}: {percent(alert.rate)} of {alert.window_runs} runs "
        f"ended in error"
    )
    paused = pauses.pause_in(
        conn, alert.pipeline, by=PAUSED_BY, reason=reason, source=source, now=now
    )
    alert_rows.update_alert(conn, alert.id, patch={PAUSE_KEY: {"paused": paused, "source": source}})
    return paused


def alert_pause(alert: AlertView) -> dict[str, Any] | None:
    """What the alert did to its pipeline's switch (None: nothing)."""
    value = alert.detail(PAUSE_KEY)
    return value if isinstance(value, dict) else None


def alert_choice(alert: AlertView) -> dict[str, Any] | None:
    """The latest person's choice on the alert's message (None: nobody chose yet)."""
    value = alert.detail(CHOICE_KEY)
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class ChoiceOutcome:
    """What a click did: `choice` as recorded, and the alert as it now stands."""

    alert: AlertView
    choice: Choice
    changed: bool


def choose(rt: Runtime, alert_id: int, *, user: str, resume: bool) -> ChoiceOutcome:
    """Resume the alert's pipeline, or keep it paused (operators only; audited)."""
    alert = get_alert(rt, alert_id)
    if alert is None:
        raise UnknownAlert(f"no alert #{alert_id}; `gatehouse alerts` lists them")
    if alert_pause(alert) is None:
        raise AlertPausedNothing(f"alert #{alert_id} did not pause {alert.pipeline}")
    action = "resume" if resume else "keep paused"
    authorize_operator(rt, user, action, alert.pipeline)
    now = rt.clock.now()
    choice: Choice
    if resume:
        changed = pauses.resume_pipeline(
            rt, alert.pipeline, by=user, reason=f"Resume on alert #{alert_id}"
        )
        choice = "resumed" if changed else "not_paused"
    else:
        changed = False
        with rt.db.transaction() as conn:
            if pauses.is_paused(conn, alert.pipeline):
                choice = "kept_paused"
                append_audit(
                    conn,
                    event="pipeline.kept_paused",
                    at=now,
                    actor=user,
                    detail={"pipeline": alert.pipeline, "alert_id": alert_id},
                )
            else:
                choice = "not_paused"
    with rt.db.transaction() as conn:
        record = {"choice": choice, "by": user, "at": iso(now)}
        alert_rows.update_alert(conn, alert_id, patch={CHOICE_KEY: record})
    log.info("alert.pause_choice", alert_id=alert_id, pipeline=alert.pipeline, choice=choice)
    return ChoiceOutcome(get_alert(rt, alert_id) or alert, choice, changed)
