"""The quiet failures: alert rules on LLM calls (human exits, confidence) and on drift (PSI).

Errors are loud; a model that slowly hands more cases to people, grows less sure, or sees
inputs unlike last month's is not. These rules run through the error-rate machinery
(`pipelines.operations.alerts`: open once per rule and subject across replicas, quiet while open,
recovered after a stretch under the bar):

- `human_exit_rate`, per `ctx.llm` call key (and per pipeline when it has several): over the
  alert window (against the whole hours of the baseline before it, `hourly_baselines`), at least `human_exit_min_rate` of the calls took the human exit and at least
  `human_exit_factor` times the baseline's share, over `human_exit_min_volume` calls.
- `confidence_drop`, the same subjects: the mean confidence the model gave fell more than
  `confidence_drop` under its baseline's mean, over `confidence_min_volume` answers.
- `input_drift` / `output_drift`, per categorical field (`pipelines.categorical`) of the
  pipeline's input, its output, and each LLM call's answer: the population stability index of
  the last 7 days against the 28 before, above `psi` with `drift_min_volume` values in each.

The first two run in the minute check (`evaluate_call_rules`, called by `alerts.evaluate`):
the window is one range of `ix_runs_created` and the baseline is read only for subjects already
over their floor. Drift needs 35 days of values and changes slowly: each field's values are counted
once per whole UTC day (`drift_counts`, a few rows a day), and `evaluate_drift` runs hourly (one
replica a fire) over those counts: the last 7 whole days against the 28 before. It keeps its
last figures (`drift_figures`) for the stats.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection

from pipelines.categorical import categorical_fields, return_model
from pipelines.config import Settings
from pipelines.operations.alerting import (
    CONFIDENCE_DROP,
    HUMAN_EXIT_RATE,
    INPUT_DRIFT,
    OUTPUT_DRIFT,
    AlertChange,
    AlertPolicy,
    Thresholds,
    follow_open_alert,
    log_changes,
    open_alert,
    open_alerts_by_subject,
)
from pipelines.pipeline import registered_pipelines
from pipelines.runtime import Runtime
from storage import drift as store
from storage.drift import CallCounts, Source

log = structlog.get_logger()

DAY = timedelta(days=1)
# A share of 0 in either period would make the PSI infinite: shares are floored at this.
PSI_EPSILON = 1e-4
TOP_SHIFTS = 3
_EPSILON = 1e-9  # compare ratios of counts with a little slack, as the error rate does


# -- PSI -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shift:
    """One category's share in each period and its term of the PSI."""

    value: str
    reference_share: float
    recent_share: float
    contribution: float

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "reference_share": self.reference_share,
            "recent_share": self.recent_share,
            "contribution": self.contribution,
        }


def psi_terms(
    reference: Mapping[str, int], recent: Mapping[str, int], epsilon: float = PSI_EPSILON
) -> list[Shift]:
    """Each category's term (recent - reference) · ln(recent / reference), shares floored at
    `epsilon` (a category new in one period, or gone from it), largest first."""
    ref_total = sum(reference.values())
    new_total = sum(recent.values())
    terms = []
    for value in sorted(set(reference) | set(recent)):
        ref_share = reference.get(value, 0) / ref_total if ref_total else 0.0
        new_share = recent.get(value, 0) / new_total if new_total else 0.0
        a, b = max(ref_share, epsilon), max(new_share, epsilon)
        terms.append(Shift(value, ref_share, new_share, (b - a) * math.log(b / a)))
    return sorted(terms, key=lambda t: (-t.contribution, t.value))


def psi(
    reference: Mapping[str, int], recent: Mapping[str, int], epsilon: float = PSI_EPSILON
) -> float:
    """The population stability index of `recent` against `reference` (category → count):
    0 for the same distribution; by the usual reading, above 0.1 a shift, above 0.2 a large one."""
    return sum(t.contribution for t in psi_terms(reference, recent, epsilon))


# -- human exits and confidence (every minute) ---------------------------------------------------


def call_subject(pipeline: str, call_key: str | None) -> str:
    return pipeline if call_key is None else f"{pipeline} · llm {call_key}"


def _by_subject(
    counts: Mapping[tuple[str, str], CallCounts],
) -> dict[tuple[str, str | None], CallCounts]:
    """Per (pipeline, call key), plus per (pipeline, None) for pipelines with several call keys
    (one call's alert already says everything about a pipeline that makes one)."""
    found: dict[tuple[str, str | None], CallCounts] = dict(counts.items())
    keys_of: dict[str, list[str]] = {}
    for pipeline, key in counts:
        keys_of.setdefault(pipeline, []).append(key)
    for pipeline, keys in keys_of.items():
        if len(keys) > 1:
            total = CallCounts()
            for key in keys:
                total += counts[(pipeline, key)]
            found[(pipeline, None)] = total
    return found


def _exit_floor(t: Thresholds, window: CallCounts) -> bool:
    rate = window.human_exit_rate
    return (
        window.calls >= t.human_exit_min_volume
        and rate is not None
        and rate >= t.human_exit_min_rate - _EPSILON
    )


def _exits_spike(t: Thresholds, window: CallCounts, baseline_rate: float | None) -> bool:
    return (
        _exit_floor(t, window)
        and (window.human_exit_rate or 0.0)
        >= t.human_exit_factor * (baseline_rate or 0.0) - _EPSILON
    )


def _confidence_dropped(t: Thresholds, window: CallCounts, baseline_mean: float | None) -> bool:
    mean = window.mean_confidence
    return (
        window.confident >= t.confidence_min_volume
        and mean is not None
        and baseline_mean is not None
        and baseline_mean - mean > t.confidence_drop + _EPSILON
    )


def evaluate_call_rules(
    conn: Connection,
    policy: AlertPolicy,
    now: datetime,
    open_rows: Mapping[tuple[str, str], Any],
) -> list[AlertChange]:
    """The human-exit and confidence rules, inside the minute check's transaction."""
    since = now - policy.window
    window = _by_subject(store.llm_call_counts(conn, since=since, until=now))
    exit_candidates = []
    confidence_candidates = []
    for (pipeline, key), counts in sorted(window.items(), key=lambda i: (i[0][0], i[0][1] or "")):
        t = policy.for_pipeline(pipeline)
        subject = call_subject(pipeline, key)
        if (HUMAN_EXIT_RATE, subject) not in open_rows and _exit_floor(t, counts):
            exit_candidates.append((pipeline, key))
        mean = counts.mean_confidence
        # A mean within `confidence_drop` of 1 cannot have dropped that far: no baseline read.
        if (
            (CONFIDENCE_DROP, subject) not in open_rows
            and counts.confident >= t.confidence_min_volume
            and mean is not None
            and mean < 1 - t.confidence_drop
        ):
            confidence_candidates.append((pipeline, key))
    changes: list[AlertChange] = []
    if exit_candidates or confidence_candidates:
        baselines = _by_subject(hourly_baselines(conn, policy, since))
        for pipeline, key in exit_candidates:
            t = policy.for_pipeline(pipeline)
            counts, base = window[(pipeline, key)], baselines.get((pipeline, key), CallCounts())
            if _exits_spike(t, counts, base.human_exit_rate):
                change = _open(conn, HUMAN_EXIT_RATE, pipeline, key, counts, base, policy, t, now)
                changes += [change] if change else []
        for pipeline, key in confidence_candidates:
            t = policy.for_pipeline(pipeline)
            counts, base = window[(pipeline, key)], baselines.get((pipeline, key), CallCounts())
            if base.confident >= t.confidence_min_volume and _confidence_dropped(
                t, counts, base.mean_confidence
            ):
                change = _open(conn, CONFIDENCE_DROP, pipeline, key, counts, base, policy, t, now)
                changes += [change] if change else []
    for (rule, _subject), row in sorted(open_rows.items()):
        if rule not in (HUMAN_EXIT_RATE, CONFIDENCE_DROP):
            continue
        key = (row.details or {}).get("call_key")
        counts = window.get((row.pipeline, key), CallCounts())
        t = policy.for_pipeline(row.pipeline)
        if rule == HUMAN_EXIT_RATE:
            # Over while still k times the baseline it opened against (not a baseline the spike
            # itself has since raised), and over the floor.
            over = _exits_spike(t, counts, row.baseline)
            figure = counts.human_exit_rate
        else:
            over = _confidence_dropped(t, counts, row.baseline)
            figure = counts.mean_confidence
        recovered = follow_open_alert(
            conn,
            row,
            over=over,
            recover_after=policy.window,
            now=now,
            patch={"recovery_rate": figure, "recovery_runs": counts.calls},
        )
        if recovered is not None:
            changes.append(recovered)
    return changes


_BASELINES: dict[tuple[str, datetime, timedelta], dict[tuple[str, str], CallCounts]] = {}
_BASELINES_LOCK = threading.Lock()


def hourly_baselines(
    conn: Connection, policy: AlertPolicy, since: datetime
) -> dict[tuple[str, str], CallCounts]:
    """Every LLM call's baseline: the `policy.baseline` of whole hours before the hour the
    window starts in, read once an hour per process (and database), not every minute.

    A confidence near its usual level is under `1 - confidence_drop` for many calls, so the
    baseline is wanted most minutes; read live it is a day of runs joined to their calls (about
    50 ms a minute at a million runs a month), cached it is one read an hour. It ends up to an
    hour before the window: a baseline, not the last minutes."""
    until = since.replace(minute=0, second=0, microsecond=0)
    key = (str(conn.engine.url), until, policy.baseline)
    with _BASELINES_LOCK:
        found = _BASELINES.get(key)
    if found is None:
        found = store.llm_call_counts(
            conn, since=until - policy.baseline, until=until, until_inclusive=False
        )
        with _BASELINES_LOCK:
            if len(_BASELINES) >= 64:
                _BASELINES.clear()
            _BASELINES[key] = found
    return found


def _open(
    conn: Connection,
    rule: str,
    pipeline: str,
    key: str | None,
    window: CallCounts,
    baseline: CallCounts,
    policy: AlertPolicy,
    t: Thresholds,
    now: datetime,
) -> AlertChange | None:
    exits = rule == HUMAN_EXIT_RATE
    figures = {
        "calls": window.calls,
        "human_exits": window.human_exits,
        "confident": window.confident,
        "mean_confidence": window.mean_confidence,
        "human_exit_rate": window.human_exit_rate,
        "baseline_calls": baseline.calls,
        "baseline_human_exits": baseline.human_exits,
        "baseline_confident": baseline.confident,
        "baseline_mean_confidence": baseline.mean_confidence,
        "baseline_human_exit_rate": baseline.human_exit_rate,
    }
    details = {
        "call_key": key,
        "figures": figures,
        "window_minutes": policy.window.total_seconds() / 60,
        "baseline_hours": policy.baseline.total_seconds() / 3600,
        "baseline_runs": baseline.calls if exits else baseline.confident,
        "errors": window.human_exits if exits else 0,
        "threshold": t.human_exit_min_rate if exits else t.confidence_drop,
        "factor": t.human_exit_factor if exits else 1.0,
        "min_volume": t.human_exit_min_volume if exits else t.confidence_min_volume,
    }
    return open_alert(
        conn,
        rule=rule,
        subject=call_subject(pipeline, key),
        pipeline=pipeline,
        now=now,
        value=(window.human_exit_rate if exits else window.mean_confidence) or 0.0,
        baseline=baseline.human_exit_rate if exits else baseline.mean_confidence,
        volume=window.calls if exits else window.confident,
        details=details,
    )


# -- drift (hourly) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldDrift:
    """One categorical field's PSI, recent period against reference."""

    pipeline: str
    source: Source  # input, output (the pipeline's), llm (one call's answer)
    field: str
    call_key: str | None
    psi: float
    reference_count: int
    recent_count: int
    top_shifts: tuple[Shift, ...]

    @property
    def rule(self) -> str:
        return INPUT_DRIFT if self.source == "input" else OUTPUT_DRIFT

    @property
    def label(self) -> str:
        """`input.region`, `output.label`, `llm classify#1.kind`."""
        if self.source == "llm":
            return f"llm {self.call_key}.{self.field}"
        return f"{self.source}.{self.field}"

    @property
    def subject(self) -> str:
        return f"{self.pipeline} · {self.label}"

    def enough(self, t: Thresholds) -> bool:
        return min(self.reference_count, self.recent_count) >= t.drift_min_volume

    def drifted(self, t: Thresholds) -> bool:
        return self.enough(t) and self.psi > t.psi + _EPSILON

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "source": self.source,
            "field": self.field,
            "call_key": self.call_key,
            "label": self.label,
            "psi": self.psi,
            "reference_count": self.reference_count,
            "recent_count": self.recent_count,
            "top_shifts": [s.to_json() for s in self.top_shifts],
        }


def floor_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def watched_fields(
    conn: Connection, *, since: datetime, until: datetime
) -> list[tuple[str, Source, str, str | None]]:
    """(pipeline, source, field, call key) of every categorical field with values in the
    period: the input and output models of the registered pipelines that ran, and the LLM calls
    that recorded categorical output fields (`meta.categorical`)."""
    ran = store.pipelines_with_runs(conn, since=since, until=until)
    found: list[tuple[str, Source, str, str | None]] = []
    for name, registered in registered_pipelines().items():
        if name not in ran:
            continue
        found += [(name, "input", f, None) for f in categorical_fields(registered.input_model)]
        output = return_model(registered.fn)
        if output is not None:
            found += [(name, "output", f, None) for f in categorical_fields(output)]
    llm = store.llm_categorical_fields(conn, since=since, until=until)
    for (name, key), names in sorted(llm.items()):
        found += [(name, "llm", f, key) for f in names]
    return found


def roll_up_drift(
    rt: Runtime, policy: AlertPolicy, now: datetime, *, budget_seconds: float | None = None
) -> bool:
    """Count the values of every categorical field for each whole UTC day of the drift periods
    not yet counted, oldest first: one short transaction per pipeline and day (SQLite's write
    lock is held for one pipeline's day of runs, never for 35 days). Stops after
    `budget_seconds`; True when every day is counted. Safe on several replicas at once: a day
    counted twice inserts nothing the second time."""
    today = floor_day(now)
    first = floor_day(today - policy.drift_recent - policy.drift_reference)
    with rt.db.transaction() as conn:
        done = store.rolled_days(conn, since=first, until=today)
    started = time.monotonic()  # pacing only; the days follow `now`, the clock port
    day = first
    while day < today:
        if day not in done:
            if budget_seconds is not None and time.monotonic() - started > budget_seconds:
                log.info("drift.roll_up_paused", next_day=day.date().isoformat())
                return False
            _roll_day(rt, day, now)
        day += DAY
    return True


def _roll_day(rt: Runtime, day: datetime, now: datetime) -> None:
    with rt.db.transaction() as conn:
        watched = watched_fields(conn, since=day, until=day + DAY)
    by_pipeline: dict[str, list[tuple[Source, str, str | None]]] = {}
    for pipeline, source, field, key in watched:
        by_pipeline.setdefault(pipeline, []).append((source, field, key))
    for pipeline, fields in sorted(by_pipeline.items()):
        with rt.db.transaction() as conn:
            for source, field, key in fields:
                counts = store.value_counts(
                    conn,
                    pipeline=pipeline,
                    source=source,
                    field=field,
                    call_key=key,
                    since=day,
                    until=day + DAY,
                )
                store.add_day_counts(
                    conn,
                    day=day,
                    pipeline=pipeline,
                    source=source,
                    field=field,
                    call_key=key,
                    counts=counts,
                )
    with rt.db.transaction() as conn:
        store.mark_rolled(conn, day=day, now=now)


def _field_drift(key: store.FieldKey, values: Mapping[str, tuple[int, int]]) -> FieldDrift:
    pipeline, source, call_key, field = key
    reference = {v: ref for v, (ref, _) in values.items() if ref}
    recent = {v: new for v, (_, new) in values.items() if new}
    terms = psi_terms(reference, recent)
    return FieldDrift(
        pipeline=pipeline,
        source=source,  # type: ignore[arg-type]
        field=field,
        call_key=call_key or None,
        psi=sum(t.contribution for t in terms),
        reference_count=sum(reference.values()),
        recent_count=sum(recent.values()),
        top_shifts=tuple(terms[:TOP_SHIFTS]),
    )


def evaluate_drift(
    rt: Runtime,
    policy: AlertPolicy | Settings,
    now: datetime | None = None,
    *,
    budget_seconds: float | None = None,
) -> list[AlertChange]:
    """Count the days not yet counted (`roll_up_drift`), then compute every categorical field's
    PSI over whole UTC days (the last `drift_recent` before today against the
    `drift_reference` before that), open a drift alert where it is over the bar, follow the
    open ones (recovered one `drift_every` after the PSI went back under), and store the
    figures for the stats. The hourly job; opens once across replicas like every rule. While
    the first counts of a long history are still being made, it evaluates nothing."""
    if not isinstance(policy, AlertPolicy):
        policy = AlertPolicy.from_settings(policy)
    now = now if now is not None else rt.clock.now()
    if not roll_up_drift(rt, policy, now, budget_seconds=budget_seconds):
        return []
    today = floor_day(now)
    split = today - policy.drift_recent
    changes: list[AlertChange] = []
    with rt.db.transaction() as conn:
        periods = store.period_counts(
            conn, since=split - policy.drift_reference, split=split, until=today
        )
        drifts = [_field_drift(key, values) for key, values in periods.items()]
        store.save_figures(conn, [d.to_json() for d in drifts], now=now)
        open_rows = open_alerts_by_subject(conn)
        by_subject = {(d.rule, d.subject): d for d in drifts}
        for d in drifts:
            t = policy.for_pipeline(d.pipeline)
            if (d.rule, d.subject) in open_rows or not d.drifted(t):
                continue
            change = open_alert(
                conn,
                rule=d.rule,
                subject=d.subject,
                pipeline=d.pipeline,
                now=now,
                value=d.psi,
                baseline=None,
                volume=d.recent_count,
                details={
                    **d.to_json(),
                    "figures": d.to_json(),
                    "threshold": t.psi,
                    "min_volume": t.drift_min_volume,
                    "recent_days": policy.drift_recent.total_seconds() / 86400,
                    "reference_days": policy.drift_reference.total_seconds() / 86400,
                },
            )
            changes += [change] if change else []
        for (rule, subject), row in sorted(open_rows.items()):
            if rule not in (INPUT_DRIFT, OUTPUT_DRIFT):
                continue
            found = by_subject.get((rule, subject))  # None: the field is gone, or no values
            t = policy.for_pipeline(row.pipeline)
            recovered = follow_open_alert(
                conn,
                row,
                over=found is not None and found.drifted(t),
                recover_after=policy.drift_every,
                now=now,
                patch={
                    "recovery_rate": None if found is None else found.psi,
                    "recovery_runs": None if found is None else found.recent_count,
                },
            )
            if recovered is not None:
                changes.append(recovered)
    log_changes(changes)
    return changes


# -- figures for the stats -----------------------------------------------------------------------


@dataclass(frozen=True)
class DriftFigures:
    """One pipeline's quiet-failure figures: over its LLM calls in the window, the human-exit
    rate and mean confidence; from the last hourly drift evaluation, its largest PSI."""

    pipeline: str
    llm_calls: int = 0
    human_exit_rate: float | None = None
    mean_confidence: float | None = None
    max_psi: float | None = None
    max_psi_field: str | None = None
    drift_evaluated_at: datetime | None = None
    # Why there is no PSI although the drift check ran: "no earlier data to compare" (nothing
    # in the reference window), "no recent data".
    max_psi_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "llm_calls": self.llm_calls,
            "human_exit_rate": self.human_exit_rate,
            "mean_confidence": self.mean_confidence,
            "max_psi": self.max_psi,
            "max_psi_field": self.max_psi_field,
            "max_psi_reason": self.max_psi_reason,
            "drift_evaluated_at": (
                None if self.drift_evaluated_at is None else self.drift_evaluated_at.isoformat()
            ),
        }


def drift_figures(
    rt: Runtime, *, window: timedelta = timedelta(days=1), now: datetime | None = None
) -> dict[str, DriftFigures]:
    """Per pipeline with LLM calls in the window or drift figures stored."""
    now = now if now is not None else rt.clock.now()
    with rt.db.transaction() as conn:
        calls = store.llm_call_counts(conn, since=now - window, until=now)
        stored = store.max_psi_by_pipeline(conn)
        missing = store.psi_missing_by_pipeline(conn)
    per_pipeline: dict[str, CallCounts] = {}
    for (pipeline, _key), counts in calls.items():
        per_pipeline[pipeline] = per_pipeline.get(pipeline, CallCounts()) + counts
    found = {}
    for name in sorted(set(per_pipeline) | set(stored) | set(missing)):
        counts = per_pipeline.get(name, CallCounts())
        top = stored.get(name)
        why = missing.get(name)
        found[name] = DriftFigures(
            pipeline=name,
            llm_calls=counts.calls,
            human_exit_rate=counts.human_exit_rate,
            mean_confidence=counts.mean_confidence,
            max_psi=None if top is None else top[0],
            max_psi_field=None if top is None else top[1],
            drift_evaluated_at=top[2] if top is not None else why[1] if why else None,
            max_psi_reason=why[0] if top is None and why is not None else None,
        )
    return found
