"""The minute check: the error-rate rule here, and the LLM-call rules of
`pipelines.operations.drift`, run through the machinery of `pipelines.operations.alerting`.

A pipeline *spikes* when, over the last window (default 15 min), its error rate (failed +
needs_attention over finished) is at least the threshold (20%), at least `factor` times its
baseline (3 times; the baseline is the rate over the 24 h before the window, 0 when nothing
finished then), and at least `min_volume` runs (10) finished in the window. A spike opens an
alert (once across replicas); while it is open the pipeline is quiet. The alert recovers once the
window's rate has stayed under the threshold for a full window, counted from the first
evaluation that saw it under (`below_since`); a window with no finished runs counts as under.
`evaluate` returns what it changed, for the bot to post. Drift (PSI) is hourly, not here.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection

from pipelines.config import Settings
from pipelines.operations import alert_pauses
from pipelines.operations.alerting import (
    AlertChange,
    AlertPolicy,
    Thresholds,
    follow_open_alert,
    log_changes,
    open_alert,
    open_alerts_by_subject,
)
from pipelines.operations.drift import evaluate_call_rules
from pipelines.runtime import Runtime
from storage import alerts as store
from storage.alerts import ERROR_RATE, ErrorCounts

log = structlog.get_logger()

TOP_ERRORS = 3
SAMPLE_RUNS = 5
ERROR_MESSAGE_LIMIT = 300
NO_MESSAGE = "(no error message)"


# -- views ---------------------------------------------------------------------------------------


# -- the evaluation ------------------------------------------------------------------------------


def evaluate(
    rt: Runtime, policy: AlertPolicy | Settings, now: datetime | None = None
) -> list[AlertChange]:
    """Open alerts on spikes and recover the ones back under their bar; return the changes.

    One transaction: a GROUP BY over the window (covering index), the open alerts, and only for
    pipelines already over the threshold with enough volume, a GROUP BY over their baseline;
    then the per-minute LLM-call rules (`pipelines.operations.drift.evaluate_call_rules`), the same way.
    Drift (PSI) is not evaluated here: `pipelines.operations.drift.evaluate_drift`, hourly.
    """
    if not isinstance(policy, AlertPolicy):
        policy = AlertPolicy.from_settings(policy)
    now = now if now is not None else rt.clock.now()
    since = now - policy.window
    changes: list[AlertChange] = []
    with rt.db.transaction() as conn:
        window = store.error_counts(conn, since=since, until=now)
        open_rows = open_alerts_by_subject(conn)
        candidates = [
            name
            for name, counts in sorted(window.items())
            if (ERROR_RATE, name) not in open_rows
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
                change = open_alert(
                    conn,
                    rule=ERROR_RATE,
                    subject=name,
                    pipeline=name,
                    now=now,
                    value=window[name].rate or 0.0,
                    baseline=baseline.rate,
                    volume=window[name].finished,
                    details=details,
                )
                if change is not None:
                    alert_pauses.pause_for_alert(conn, change, now)
                    changes.append(change)
        for (rule, _subject), row in sorted(open_rows.items()):
            if rule != ERROR_RATE:
                continue
            counts = window.get(row.pipeline, ErrorCounts())
            recovered = follow_open_alert(
                conn,
                row,
                over=policy.for_pipeline(row.pipeline).over_threshold(counts),
                recover_after=policy.window,
                now=now,
                patch={
                    "recovery_rate": counts.rate,
                    "recovery_runs": counts.finished,
                    "recovery_errors": counts.errors,
                },
            )
            if recovered is not None:
                changes.append(recovered)
        changes += evaluate_call_rules(conn, policy, now, open_rows)
    log_changes(changes)
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


# -- reading -------------------------------------------------------------------------------------


# -- posting -------------------------------------------------------------------------------------
