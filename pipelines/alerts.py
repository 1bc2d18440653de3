"""Error-rate alerts: one evaluation per minute opens an alert on a spike and recovers it later.

A pipeline *spikes* when, over the last window (default 15 min), its error rate (failed +
needs_attention over finished) is at least the threshold (20%), at least `factor` times its
baseline (3 times; the baseline is the rate over the 24 h before the window, 0 when nothing
finished then), and at least `min_volume` runs (10) finished in the window. A spike opens an alert with a
single INSERT guarded by the one-open-alert-per-pipeline index, so however many replicas
evaluate at once, one alert is opened. While it is open the pipeline is quiet. The alert
recovers once the window's rate has stayed under the threshold for a full window, counted from
the first evaluation that saw it under (`below_since`); a window with no finished runs counts as
under. `evaluate` returns what it changed, for the bot to post.

Posting is tracked separately (`claim_posts`, `finish_post`, `release_post`): each message (the
alert, the "recovered" reply) is claimed with a lease before it is sent, so a failed post is
retried by the next check on any replica, and a message is never sent twice at once.
"""

from __future__ import annotations

import math
from collections import Counter
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
from storage.alerts import OPEN, RECOVERED, ErrorCounts

log = structlog.get_logger()

TOP_ERRORS = 3
SAMPLE_RUNS = 5
ERROR_MESSAGE_LIMIT = 300
NO_MESSAGE = "(no error message)"
POSTED = "posted"
POST_LEASE = timedelta(minutes=5)
RETRY_HORIZON = timedelta(days=7)
# Rates are ratios of counts; compare with a little slack so 0.3 >= 3 * 0.1 holds.
_EPSILON = 1e-9

ChangeKind = Literal["opened", "recovered"]
Stage = Literal["opened", "recovered"]


@dataclass(frozen=True)
class Thresholds:
    """When one pipeline's window counts as a spike."""

    threshold: float = 0.2
    factor: float = 3.0
    min_volume: int = 10

    def over_threshold(self, counts: ErrorCounts) -> bool:
        rate = counts.rate
        return rate is not None and rate >= self.threshold - _EPSILON

    def spikes(self, window: ErrorCounts, baseline: ErrorCounts) -> bool:
        if window.finished < self.min_volume or not self.over_threshold(window):
            return False
        return (window.rate or 0.0) >= self.factor * (baseline.rate or 0.0) - _EPSILON


_OVERRIDE_KEYS = tuple(f.name for f in fields(Thresholds))


@dataclass(frozen=True)
class AlertPolicy:
    """The windows, the default thresholds and the per-pipeline overrides."""

    window: timedelta = timedelta(minutes=15)
    baseline: timedelta = timedelta(hours=24)
    default: Thresholds = Thresholds()
    overrides: Mapping[str, Thresholds] | None = None

    def for_pipeline(self, pipeline: str) -> Thresholds:
        return (self.overrides or {}).get(pipeline, self.default)

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertPolicy:
        """From GATEHOUSE_ALERT_*; a bad override raises one line naming the variable."""
        default = Thresholds(
            threshold=settings.alert_threshold,
            factor=settings.alert_factor,
            min_volume=settings.alert_min_volume,
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
        )


def _override(pipeline: str, values: Mapping[str, float], default: Thresholds) -> Thresholds:
    where = f"GATEHOUSE_ALERT_OVERRIDES[{pipeline!r}]"
    unknown = sorted(set(values) - set(_OVERRIDE_KEYS))
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key {', '.join(map(repr, unknown))}; use {', '.join(_OVERRIDE_KEYS)}"
        )
    threshold = float(values.get("threshold", default.threshold))
    factor = float(values.get("factor", default.factor))
    min_volume = values.get("min_volume", default.min_volume)
    if not 0 <= threshold <= 1:
        raise ConfigurationError(f"{where}: threshold must be between 0 and 1, got {threshold}")
    if factor < 1:
        raise ConfigurationError(f"{where}: factor must be at least 1, got {factor}")
    if float(min_volume) != int(min_volume) or int(min_volume) < 1:
        raise ConfigurationError(f"{where}: min_volume must be a whole number ≥ 1")
    return Thresholds(threshold=threshold, factor=factor, min_volume=int(min_volume))


# -- views ---------------------------------------------------------------------------------------


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

    @property
    def is_open(self) -> bool:
        return self.status == OPEN

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
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
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
        }


@dataclass(frozen=True)
class AlertChange:
    """What one evaluation did: opened an alert, or marked one recovered."""

    kind: ChangeKind
    alert: AlertView

    def to_json(self) -> dict[str, Any]:
        return {"change": self.kind, "alert": self.alert.to_json()}


# -- the evaluation ------------------------------------------------------------------------------


def evaluate(
    rt: Runtime, policy: AlertPolicy | Settings, now: datetime | None = None
) -> list[AlertChange]:
    """Open alerts on spikes and recover the ones whose rate stayed down; return the changes.

    One transaction: a GROUP BY over the window (covering index), the open alerts, and only for
    pipelines already over the threshold with enough volume, a GROUP BY over their baseline.
    """
    if not isinstance(policy, AlertPolicy):
        policy = AlertPolicy.from_settings(policy)
    now = now if now is not None else rt.clock.now()
    since = now - policy.window
    changes: list[AlertChange] = []
    with rt.db.transaction() as conn:
        window = store.error_counts(conn, since=since, until=now)
        open_rows = {row.pipeline: row for row in store.open_alerts(conn)}
        candidates = [
            name
            for name, counts in sorted(window.items())
            if name not in open_rows
            and counts.finished >= policy.for_pipeline(name).min_volume
            and policy.for_pipeline(name).over_threshold(counts)
        ]
        if candidates:
            baselines = store.error_counts(
                conn,
                since=since - policy.baseline,
                until=since,
                until_inclusive=False,
                pipelines=candidates,
            )
            for name in candidates:
                baseline = baselines.get(name, ErrorCounts())
                thresholds = policy.for_pipeline(name)
                if not thresholds.spikes(window[name], baseline):
                    continue
                details = _details(conn, name, window[name], baseline, policy, thresholds, now)
                row = store.insert_open_alert(
                    conn,
                    pipeline=name,
                    now=now,
                    rate=window[name].rate or 0.0,
                    baseline=baseline.rate,
                    window_runs=window[name].finished,
                    details=details,
                )
                if row is not None:
                    changes.append(AlertChange("opened", AlertView.of(row)))
        for name, row in sorted(open_rows.items()):
            recovered = _follow_open_alert(conn, row, window.get(name, ErrorCounts()), policy, now)
            if recovered is not None:
                changes.append(AlertChange("recovered", recovered))
    for change in changes:
        alert = change.alert
        if change.kind == "opened":
            log.warning(
                "alert.opened",
                pipeline=alert.pipeline,
                alert_id=alert.id,
                rate=round(alert.rate, 4),
                baseline=alert.baseline,
                window_runs=alert.window_runs,
            )
        else:
            log.warning("alert.recovered", pipeline=alert.pipeline, alert_id=alert.id)
    return changes


def _details(
    conn: Connection,
    pipeline: str,
    window: ErrorCounts,
    baseline: ErrorCounts,
    policy: AlertPolicy,
    thresholds: Thresholds,
    now: datetime,
) -> dict[str, Any]:
    """What the message shows: the top errors by first line, with counts, and sample run ids."""
    errored = store.errored_runs(conn, pipeline, since=now - policy.window, until=now)
    by_message = Counter(error_headline(error) for _run_id, error in errored)
    top = sorted(by_message.items(), key=lambda item: (-item[1], item[0]))[:TOP_ERRORS]
    return {
        "errors": window.errors,
        "window_minutes": policy.window.total_seconds() / 60,
        "baseline_hours": policy.baseline.total_seconds() / 3600,
        "baseline_runs": baseline.finished,
        "baseline_errors": baseline.errors,
        "threshold": thresholds.threshold,
        "factor": thresholds.factor,
        "min_volume": thresholds.min_volume,
        "top_errors": [{"message": message, "count": count} for message, count in top],
        "sample_run_ids": [run_id for run_id, _error in errored[:SAMPLE_RUNS]],
    }


def error_headline(error: str | None) -> str:
    """The first non-empty line of an error message, cut to a length worth grouping by."""
    for line in (error or "").splitlines():
        if line.strip():
            text = line.strip()
            return (
                text if len(text) <= ERROR_MESSAGE_LIMIT else text[: ERROR_MESSAGE_LIMIT - 1] + "…"
            )
    return NO_MESSAGE


def _follow_open_alert(
    conn: Connection, row: Any, window: ErrorCounts, policy: AlertPolicy, now: datetime
) -> AlertView | None:
    """Track how long the rate has been under the threshold; recover after a full window."""
    if policy.for_pipeline(row.pipeline).over_threshold(window):
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
    if now - row.below_since < policy.window:
        return None
    changed = store.update_alert(
        conn,
        row.id,
        status=OPEN,
        below_since=(row.below_since,),
        values={"status": RECOVERED, "recovered_at": now},
        patch={
            "recovery_rate": window.rate,
            "recovery_runs": window.finished,
            "recovery_errors": window.errors,
        },
    )
    return AlertView.of(store.get_alert(conn, row.id)) if changed else None


# -- reading -------------------------------------------------------------------------------------


def list_alerts(
    rt: Runtime, *, now: datetime | None = None, since: timedelta = timedelta(days=7)
) -> list[AlertView]:
    """Open alerts, and the others opened in the last `since`; newest first."""
    now = now if now is not None else rt.clock.now()
    with rt.db.transaction() as conn:
        rows = store.recent_alerts(conn, since=now - since)
    return [AlertView.of(row) for row in rows]


# -- posting -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostClaim:
    """This process may send `stage`'s message for `alert` until the lease runs out."""

    alert: AlertView
    stage: Stage
    token: str

    @property
    def key(self) -> str:
        return f"{self.stage}_post"


def _claim_token(now: datetime, worker_id: str) -> str:
    return f"{now.isoformat()}|{worker_id}"


def _claimable(state: Any, now: datetime, lease: timedelta) -> bool:
    """Not yet posted, and nobody is posting it (no claim, or a claim older than the lease)."""
    if state is None:
        return True
    if state == POSTED or not isinstance(state, str):
        return False
    try:
        claimed_at = datetime.fromisoformat(state.split("|", 1)[0])
    except ValueError:
        return True
    return now - claimed_at >= lease


def claim_posts(
    rt: Runtime,
    *,
    now: datetime | None = None,
    lease: timedelta = POST_LEASE,
    horizon: timedelta = RETRY_HORIZON,
) -> list[PostClaim]:
    """Claim every message that is due: the alert message of an alert not yet in Slack, and the
    "recovered" reply of a recovered alert (once its alert message is, or is being, posted).
    Oldest alert first; for one alert, its message before its reply."""
    now = now if now is not None else rt.clock.now()
    claims: list[PostClaim] = []
    with rt.db.transaction() as conn:
        for row in reversed(store.recent_alerts(conn, since=now - horizon, limit=1000)):
            details: dict[str, Any] = row.details or {}
            view = AlertView.of(row)
            opened_state = details.get("opened_post")
            opened_ready = opened_state == POSTED
            if not opened_ready and _claimable(opened_state, now, lease):
                token = _claim_token(now, rt.worker_id)
                if store.update_alert(
                    conn,
                    row.id,
                    details_key=("opened_post", opened_state),
                    patch={"opened_post": token},
                ):
                    claims.append(PostClaim(view, "opened", token))
                    opened_ready = True
            if row.status != RECOVERED or not opened_ready:
                continue
            recovered_state = details.get("recovered_post")
            if _claimable(recovered_state, now, lease):
                token = _claim_token(now, rt.worker_id)
                if store.update_alert(
                    conn,
                    row.id,
                    details_key=("recovered_post", recovered_state),
                    patch={"recovered_post": token},
                ):
                    claims.append(PostClaim(view, "recovered", token))
    return claims


def finish_post(
    rt: Runtime,
    claim: PostClaim,
    *,
    channel: str | None = None,
    ts: str | None = None,
    reply_ts: str | None = None,
) -> bool:
    """Record the message as sent (the alert's channel and ts, or the reply's ts). False when
    the lease was lost meanwhile (another process took the post over: it was slow)."""
    values: dict[str, Any] = {}
    patch: dict[str, Any] = {claim.key: POSTED}
    if claim.stage == "opened":
        values = {"channel": channel, "ts": ts}
    else:
        patch["recovered_reply_ts"] = reply_ts
    with rt.db.transaction() as conn:
        done = store.update_alert(
            conn, claim.alert.id, details_key=(claim.key, claim.token), values=values, patch=patch
        )
    if not done:
        log.warning("alert.post_lease_lost", alert_id=claim.alert.id, stage=claim.stage)
    return done


def release_post(rt: Runtime, claim: PostClaim) -> None:
    """Give a claim back after a failed post, so the next check retries it at once."""
    with rt.db.transaction() as conn:
        store.update_alert(
            conn, claim.alert.id, details_key=(claim.key, claim.token), patch={claim.key: None}
        )


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
