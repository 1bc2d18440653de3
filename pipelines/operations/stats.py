"""Volume, error rate, latency, cost, tokens, approvals and human tasks per pipeline, over the
last 24 h and 7 d (or any windows), and every pipeline together (`StatsReport.overall`).

What each number counts is written once, in `storage.stats`. Here the windows end at the
engine's clock (or the `now` given), and every registered pipeline is listed even without runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from pipelines.pipeline import registered_pipelines
from pipelines.runtime import Runtime
from storage import stats as stats_queries
from storage import stats_rollups
from storage.latency import RELATIVE_ERROR as LATENCY_RELATIVE_ERROR
from storage.latency import percentile
from storage.stats import PERCENTILES, PendingCounts, WindowStats, overall_latencies

log = structlog.get_logger()

DAY = timedelta(days=1)
WEEK = timedelta(days=7)
DEFAULT_WINDOWS = (DAY, WEEK)
ALL_PIPELINES = "(all)"  # the name of `StatsReport.overall`'s row

__all__ = [
    "ALL_PIPELINES",
    "DAY",
    "DEFAULT_WINDOWS",
    "LATENCY_RELATIVE_ERROR",
    "WEEK",
    "PendingCounts",
    "PipelineStats",
    "StatsReport",
    "WindowStats",
    "pipeline_stats",
    "roll_up_stats",
]


@dataclass(frozen=True)
class PipelineStats:
    """One pipeline: its numbers per window (in the order asked) and what waits for people."""

    pipeline: str
    windows: tuple[WindowStats, ...]
    pending: PendingCounts = field(default_factory=PendingCounts)

    def window(self, length: timedelta) -> WindowStats | None:
        return next((w for w in self.windows if w.window == length), None)


@dataclass(frozen=True)
class StatsReport:
    """Every pipeline's numbers at one moment, `now` (the end of every window)."""

    now: datetime
    windows: tuple[timedelta, ...]
    pipelines: tuple[PipelineStats, ...]

    def get(self, pipeline: str) -> PipelineStats | None:
        return next((p for p in self.pipelines if p.pipeline == pipeline), None)

    def overall_stats(self) -> PipelineStats:
        """Every pipeline together, each window (named `ALL_PIPELINES`), and all that waits."""
        return PipelineStats(
            pipeline=ALL_PIPELINES,
            windows=tuple(self.overall(length) for length in self.windows),
            pending=PendingCounts(
                approvals=sum(p.pending.approvals for p in self.pipelines),
                tasks=sum(p.pending.tasks for p in self.pipelines),
            ),
        )

    def overall(self, length: timedelta) -> WindowStats:
        """Every pipeline together for one window: counts, cost and tokens summed; the
        percentiles and the median decision time over every pipeline's runs and approvals
        (their latencies and waits merged, not their percentiles averaged)."""
        found = [w for p in self.pipelines if (w := p.window(length)) is not None]
        latencies = overall_latencies(found)
        waits = tuple(sorted(wait for w in found for wait in w.decision_waits))
        by_status: dict[str, int] = {}
        for w in found:
            for status, n in w.by_status.items():
                by_status[status] = by_status.get(status, 0) + n
        return WindowStats(
            pipeline=ALL_PIPELINES,
            since=self.now - length,
            until=self.now,
            runs=sum(w.runs for w in found),
            finished=sum(w.finished for w in found),
            errors=sum(w.errors for w in found),
            by_status=dict(sorted(by_status.items())),
            p50_seconds=latencies.percentile(PERCENTILES[0]),
            p95_seconds=latencies.percentile(PERCENTILES[1]),
            llm_cost_usd=sum(w.llm_cost_usd for w in found),
            llm_calls=sum(w.llm_calls for w in found),
            priced_llm_calls=sum(w.priced_llm_calls for w in found),
            prompt_tokens=sum(w.prompt_tokens for w in found),
            completion_tokens=sum(w.completion_tokens for w in found),
            approvals_approved=sum(w.approvals_approved for w in found),
            approvals_rejected=sum(w.approvals_rejected for w in found),
            approvals_expired=sum(w.approvals_expired for w in found),
            median_decision_seconds=percentile(waits, 0.5),
            runs_with_task=sum(w.runs_with_task for w in found),
            latencies=latencies,
            decision_waits=waits,
        )


def pipeline_stats(
    rt: Runtime,
    *,
    now: datetime | None = None,
    windows: Sequence[timedelta] = DEFAULT_WINDOWS,
    pipeline: str | None = None,
) -> StatsReport:
    """Numbers per pipeline for each window ending at `now` (default: the engine's clock).

    Without `pipeline`: every registered pipeline, plus any other with runs in a window (a
    pipeline removed from the code still shows its recent history). With it: that one only.
    """
    if not windows:
        raise ValueError("pipeline_stats needs at least one window")
    if any(w <= timedelta(0) for w in windows):
        raise ValueError(f"windows must be positive durations, got {list(windows)}")
    end = now if now is not None else rt.clock.now()
    names = [pipeline] if pipeline is not None else list(registered_pipelines())
    per_window: list[dict[str, WindowStats]] = []
    with rt.db.transaction() as conn:
        for length in windows:
            per_window.append(
                stats_queries.window_stats(
                    conn,
                    since=end - length,
                    until=end,
                    pipelines=None if pipeline is None else names,
                )
            )
        pending = stats_queries.pending_counts(conn, None if pipeline is None else names)
    everyone = set(names).union(*per_window)
    if pipeline is None:
        everyone |= set(pending)
    return StatsReport(
        now=end,
        windows=tuple(windows),
        pipelines=tuple(
            PipelineStats(
                pipeline=name,
                windows=tuple(
                    found.get(name) or WindowStats(name, end - length, end)
                    for length, found in zip(windows, per_window, strict=True)
                ),
                pending=pending.get(name, PendingCounts()),
            )
            for name in sorted(everyone)
        ),
    )


def roll_up_stats(
    rt: Runtime,
    *,
    now: datetime | None = None,
    catch_up: bool = False,
    budget_seconds: float = 10.0,
) -> int:
    """Roll the stats of the hours that are due (`storage.stats_rollups`), a chunk of hours a
    transaction, for up to `budget_seconds` (the serve job's minute: a first roll-up over a
    long history goes on at the next one), or until nothing is left with `catch_up`. Safe on
    every replica at once: each range is claimed. Returns the hours rolled."""
    end = now if now is not None else rt.clock.now()
    started = time.monotonic()  # pacing only: the rolled hours follow `end`, the clock port
    hours = 0
    while True:
        with rt.db.transaction() as conn:
            done = stats_rollups.roll_up(conn, now=end, worker=rt.worker_id)
        if done.since is not None and done.until is not None:
            hours += int((done.until - done.since) / stats_rollups.HOUR)
        if not done.rolled:
            return hours
        if not catch_up and time.monotonic() - started > budget_seconds:
            log.info("stats.roll_up_paused", hours=hours, until=str(done.until))
            return hours
