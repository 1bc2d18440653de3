"""The alert machinery every rule uses: a rule and a subject, thresholds and their per-pipeline
overrides, opening an alert once across replicas, following it until it recovers, reading alerts.

An alert has a rule and a subject, is opened by `open_alert` (once across replicas: one open alert
per rule and subject, a single INSERT guarded by a unique index), stays quiet while open, and is
followed by `follow_open_alert` (recovered after `recover_after` under its bar). The rules live
apart: the error rate in `pipelines.operations.alerts`, the human-exit, confidence and drift
rules in `pipelines.operations.drift`.

What people must see is owed through the outbox, like approval cards: opening an alert and
recovering it each write an outbox row (subject `alert:ID`) in the transaction of the change, and
the outbox sender hands the alert's state at delivery time to the notifier port, which shows it
(the alert message; once recovered, the message saying so and a reply in its thread) and records
where with `record_message` / `record_recovery_reply`. Retries, a dead sender's claim and
delivering each subject once across replicas are the outbox's business.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy import Connection

from pipelines.config import ConfigurationError, Settings
from pipelines.runtime import Runtime
from pipelines.views import iso
from storage import alerts as store
from storage import outbox as outbox_rows
from storage.alerts import ERROR_RATE, OPEN, RECOVERED, ErrorCounts

log = structlog.get_logger()

ChangeKind = Literal["opened", "recovered"]


# What the outbox owes about an alert (its rows' `event`); the subject is `alert:ID`.
ALERT_OPENED = "alert_opened"
ALERT_RECOVERED = "alert_recovered"
ALERT_EVENTS = (ALERT_OPENED, ALERT_RECOVERED)
SUBJECT_PREFIX = "alert:"

# An alert not in Slack after this long is not worth a late post (the sender skips it).
RETRY_HORIZON = timedelta(days=7)


def subject_of(alert_id: int) -> str:
    """The outbox subject of an alert."""
    return f"{SUBJECT_PREFIX}{alert_id}"


def alert_id_of(subject_id: str) -> int | None:
    """The alert an outbox subject names, or None when it names something else."""
    if not subject_id.startswith(SUBJECT_PREFIX):
        return None
    tail = subject_id[len(SUBJECT_PREFIX) :]
    return int(tail) if tail.isdigit() else None


# Rates are ratios of counts; compare with a little slack so 0.3 >= 3 * 0.1 holds.
_EPSILON = 1e-9


HUMAN_EXIT_RATE = "human_exit_rate"


CONFIDENCE_DROP = "confidence_drop"


INPUT_DRIFT = "input_drift"


OUTPUT_DRIFT = "output_drift"


RULES = (ERROR_RATE, HUMAN_EXIT_RATE, CONFIDENCE_DROP, INPUT_DRIFT, OUTPUT_DRIFT)


@dataclass(frozen=True)
class Thresholds:
    """When one pipeline's window counts as a spike, for each rule.

    error_rate: `threshold`, `factor` times the baseline, `min_volume` finished runs.
    human_exit_rate: at least `human_exit_min_rate` and `human_exit_factor` times the baseline,
    over `human_exit_min_volume` LLM calls. confidence_drop: the mean confidence more than
    `confidence_drop` under the baseline's, over `confidence_min_volume` answers with one.
    input/output drift: a PSI above `psi`, with `drift_min_volume` values in each period."""

    threshold: float = 0.2
    factor: float = 3.0
    min_volume: int = 10
    human_exit_factor: float = 2.0
    human_exit_min_rate: float = 0.1
    human_exit_min_volume: int = 20
    confidence_drop: float = 0.15
    confidence_min_volume: int = 20
    psi: float = 0.2
    drift_min_volume: int = 50

    def over_threshold(self, counts: ErrorCounts) -> bool:
        rate = counts.rate
        return rate is not None and rate >= self.threshold - _EPSILON

    def spikes(self, window: ErrorCounts, baseline: ErrorCounts) -> bool:
        if window.finished < self.min_volume or not self.over_threshold(window):
            return False
        return (window.rate or 0.0) >= self.factor * (baseline.rate or 0.0) - _EPSILON


_OVERRIDE_KEYS = tuple(f.name for f in fields(Thresholds))


_SHARES = ("threshold", "human_exit_min_rate", "confidence_drop")


_FACTORS = ("factor", "human_exit_factor")


_VOLUMES = ("min_volume", "human_exit_min_volume", "confidence_min_volume", "drift_min_volume")


@dataclass(frozen=True)
class AlertPolicy:
    """The windows, the default thresholds and the per-pipeline overrides."""

    window: timedelta = timedelta(minutes=15)
    baseline: timedelta = timedelta(hours=24)
    default: Thresholds = Thresholds()
    overrides: Mapping[str, Thresholds] | None = None
    # Drift: the last `drift_recent` against the `drift_reference` before it, every `drift_every`.
    drift_recent: timedelta = timedelta(days=7)
    drift_reference: timedelta = timedelta(days=28)
    drift_every: timedelta = timedelta(hours=1)

    def for_pipeline(self, pipeline: str) -> Thresholds:
        return (self.overrides or {}).get(pipeline, self.default)

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertPolicy:
        """From GATEHOUSE_ALERT_*; a bad override raises one line naming the variable."""
        default = Thresholds(
            threshold=settings.alert_threshold,
            factor=settings.alert_factor,
            min_volume=settings.alert_min_volume,
            human_exit_factor=settings.alert_human_exit_factor,
            human_exit_min_rate=settings.alert_human_exit_min_rate,
            human_exit_min_volume=settings.alert_human_exit_min_volume,
            confidence_drop=settings.alert_confidence_drop,
            confidence_min_volume=settings.alert_confidence_min_volume,
            psi=settings.alert_drift_psi,
            drift_min_volume=settings.alert_drift_min_volume,
        )
        overrides = {
            pipeline: _override(pipeline, values, default)
            for pipeline, values in settings.alert_overrides.items()
        }
        return cls(
            window=timedelta(minutes=settings.alert_window_minutes),
            baseline=timedelta(hours=settings.alert_baseline_hours),
            default=default,
            overrides=overrides,
            drift_recent=timedelta(days=settings.alert_drift_recent_days),
            drift_reference=timedelta(days=settings.alert_drift_reference_days),
        )


def _override(pipeline: str, values: Mapping[str, float], default: Thresholds) -> Thresholds:
    where = f"GATEHOUSE_ALERT_OVERRIDES[{pipeline!r}]"
    unknown = sorted(set(values) - set(_OVERRIDE_KEYS))
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key {', '.join(map(repr, unknown))}; use {', '.join(_OVERRIDE_KEYS)}"
        )
    chosen: dict[str, Any] = {}
    for key in _OVERRIDE_KEYS:
        value = values.get(key, getattr(default, key))
        if key in _SHARES and not 0 <= float(value) <= 1:
            raise ConfigurationError(f"{where}: {key} must be between 0 and 1, got {value}")
        if key in _FACTORS and float(value) < 1:
            raise ConfigurationError(f"{where}: {key} must be at least 1, got {value}")
        if key in _VOLUMES:
            if float(value) != int(value) or int(value) < 1:
                raise ConfigurationError(f"{where}: {key} must be a whole number ≥ 1")
            value = int(value)
        if key == "psi" and float(value) <= 0:
            raise ConfigurationError(f"{where}: psi must be above 0, got {value}")
        chosen[key] = value if key in _VOLUMES else float(value)
    return Thresholds(**chosen)


@dataclass(frozen=True)
class ErrorCount:
    message: str
    count: int


@dataclass(frozen=True)
class AlertView:
    """An alert as the bot and the CLI show it. `ts` is set once the message is in Slack."""

    id: int
    pipeline: str
    status: str
    opened_at: datetime
    rate: float
    baseline: float | None
    window_runs: int
    window_errors: int
    window: timedelta
    baseline_window: timedelta
    baseline_runs: int
    threshold: float
    factor: float
    min_volume: int
    top_errors: tuple[ErrorCount, ...]
    sample_run_ids: tuple[str, ...]
    channel: str | None
    ts: str | None
    below_since: datetime | None
    recovered_at: datetime | None
    recovery_rate: float | None
    recovery_runs: int | None
    recovered_reply_ts: str | None
    rule: str = ERROR_RATE
    subject: str = ""
    details: Mapping[str, Any] | None = None  # the rule's own figures (pipelines.operations.drift)

    @property
    def is_open(self) -> bool:
        return self.status == OPEN

    def detail(self, key: str, default: Any = None) -> Any:
        return (self.details or {}).get(key, default)

    @classmethod
    def of(cls, row: Any) -> AlertView:
        details: dict[str, Any] = row.details or {}
        return cls(
            id=int(row.id),
            pipeline=row.pipeline,
            status=row.status,
            opened_at=row.opened_at,
            rate=float(row.rate),
            baseline=None if row.baseline is None else float(row.baseline),
            window_runs=int(row.window_runs),
            window_errors=int(details.get("errors", 0)),
            window=timedelta(minutes=float(details.get("window_minutes", 15))),
            baseline_window=timedelta(hours=float(details.get("baseline_hours", 24))),
            baseline_runs=int(details.get("baseline_runs", 0)),
            threshold=float(details.get("threshold", 0.2)),
            factor=float(details.get("factor", 3)),
            min_volume=int(details.get("min_volume", 10)),
            top_errors=tuple(
                ErrorCount(str(e["message"]), int(e["count"]))
                for e in details.get("top_errors", [])
            ),
            sample_run_ids=tuple(str(r) for r in details.get("sample_run_ids", [])),
            channel=row.channel,
            ts=row.ts,
            below_since=row.below_since,
            recovered_at=row.recovered_at,
            recovery_rate=details.get("recovery_rate"),
            recovery_runs=details.get("recovery_runs"),
            recovered_reply_ts=details.get("recovered_reply_ts"),
            rule=getattr(row, "rule", None) or ERROR_RATE,
            subject=getattr(row, "subject", None) or row.pipeline,
            details=details,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "subject": self.subject,
            "pipeline": self.pipeline,
            "status": self.status,
            "opened_at": iso(self.opened_at),
            "rate": self.rate,
            "baseline": self.baseline,
            "window_runs": self.window_runs,
            "window_errors": self.window_errors,
            "window_minutes": self.window.total_seconds() / 60,
            "baseline_hours": self.baseline_window.total_seconds() / 3600,
            "baseline_runs": self.baseline_runs,
            "threshold": self.threshold,
            "factor": self.factor,
            "min_volume": self.min_volume,
            "top_errors": [{"message": e.message, "count": e.count} for e in self.top_errors],
            "sample_run_ids": list(self.sample_run_ids),
            "channel": self.channel,
            "ts": self.ts,
            "below_since": iso(self.below_since),
            "recovered_at": iso(self.recovered_at),
            "recovery_rate": self.recovery_rate,
            "recovery_runs": self.recovery_runs,
            "recovered_reply_ts": self.recovered_reply_ts,
            **({"figures": self.detail("figures")} if self.rule != ERROR_RATE else {}),
        }


@dataclass(frozen=True)
class AlertChange:
    """What one evaluation did: opened an alert, or marked one recovered."""

    kind: ChangeKind
    alert: AlertView

    def to_json(self) -> dict[str, Any]:
        return {"change": self.kind, "alert": self.alert.to_json()}


def log_changes(changes: list[AlertChange]) -> None:
    for change in changes:
        alert = change.alert
        if change.kind == "opened":
            log.warning(
                "alert.opened",
                rule=alert.rule,
                subject=alert.subject,
                pipeline=alert.pipeline,
                alert_id=alert.id,
                rate=round(alert.rate, 4),
                baseline=alert.baseline,
                window_runs=alert.window_runs,
            )
        else:
            log.warning(
                "alert.recovered",
                rule=alert.rule,
                subject=alert.subject,
                pipeline=alert.pipeline,
                alert_id=alert.id,
            )


def open_alerts_by_subject(conn: Connection) -> dict[tuple[str, str], Any]:
    """The open alerts by (rule, subject): a rule skips the subjects that have one (quiet)."""
    return {(row.rule, row.subject): row for row in store.open_alerts(conn)}


def open_alert(
    conn: Connection,
    *,
    rule: str,
    subject: str,
    pipeline: str,
    now: datetime,
    value: float,
    baseline: float | None,
    volume: int,
    details: Mapping[str, Any],
) -> AlertChange | None:
    """Open an alert of `rule` on `subject`, unless another evaluator just did (None then)."""
    row = store.insert_open_alert(
        conn,
        rule=rule,
        subject=subject,
        pipeline=pipeline,
        now=now,
        rate=value,
        baseline=baseline,
        window_runs=volume,
        details=details,
    )
    if row is None:
        return None
    outbox_rows.enqueue(conn, event=ALERT_OPENED, subject_id=subject_of(int(row.id)), now=now)
    return AlertChange("opened", AlertView.of(row))


def follow_open_alert(
    conn: Connection,
    row: Any,
    *,
    over: bool,
    recover_after: timedelta,
    now: datetime,
    patch: Mapping[str, Any],
) -> AlertChange | None:
    """Track how long an open alert's figure has been back under its bar (`over` False);
    recover it after `recover_after`, storing `patch` (the figures it recovered with)."""
    if over:
        if row.below_since is not None:
            store.update_alert(
                conn,
                row.id,
                status=OPEN,
                below_since=(row.below_since,),
                values={"below_since": None},
            )
        return None
    if row.below_since is None:
        store.update_alert(
            conn, row.id, status=OPEN, below_since=(None,), values={"below_since": now}
        )
        return None
    if now - row.below_since < recover_after:
        return None
    changed = store.update_alert(
        conn,
        row.id,
        status=OPEN,
        below_since=(row.below_since,),
        values={"status": RECOVERED, "recovered_at": now},
        patch=patch,
    )
    if not changed:
        return None
    outbox_rows.enqueue(conn, event=ALERT_RECOVERED, subject_id=subject_of(int(row.id)), now=now)
    return AlertChange("recovered", AlertView.of(store.get_alert(conn, row.id)))


def list_alerts(
    rt: Runtime, *, now: datetime | None = None, since: timedelta = timedelta(days=7)
) -> list[AlertView]:
    """Open alerts, and the others opened in the last `since`; newest first."""
    now = now if now is not None else rt.clock.now()
    with rt.db.transaction() as conn:
        rows = store.recent_alerts(conn, since=now - since)
    return [AlertView.of(row) for row in rows]


def record_message(rt: Runtime, alert_id: int, *, channel: str, ts: str) -> bool:
    """Where the alert's message was posted (once: the first recorded message stands)."""
    with rt.db.transaction() as conn:
        return store.record_alert_message(conn, alert_id, channel=channel, ts=ts)


def record_recovery_reply(rt: Runtime, alert_id: int, ts: str) -> bool:
    """Where the "recovered" reply was posted in the alert's thread (once)."""
    with rt.db.transaction() as conn:
        return store.update_alert(
            conn,
            alert_id,
            details_key=("recovered_reply_ts", None),
            patch={"recovered_reply_ts": ts},
        )


def owed_alerts(rt: Runtime, *, limit: int = 100) -> list[int]:
    """The alerts with a delivery still owed (pending outbox rows), oldest first."""
    with rt.db.transaction() as conn:
        subjects = outbox_rows.pending_subjects(conn, prefix=SUBJECT_PREFIX, limit=limit)
    return [alert_id for alert_id in map(alert_id_of, subjects) if alert_id is not None]


def get_alert(rt: Runtime, alert_id: int) -> AlertView | None:
    with rt.db.transaction() as conn:
        row = store.get_alert(conn, alert_id)
    return None if row is None else AlertView.of(row)


def percent(rate: float | None) -> str:
    """`42%`, `3.1%`, `0.25%`: two significant figures under 10%."""
    if rate is None:
        return "n/a"
    value = rate * 100
    if value == 0 or value >= 10 or math.isclose(value, round(value)):
        return f"{value:.0f}%"
    return f"{value:.2g}%" if value < 1 else f"{value:.1f}%"
