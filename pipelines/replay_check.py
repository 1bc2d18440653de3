"""`gatehouse replay --since 7d --check`: replay many runs on today's code, with no side effects,
and say which of them today's code no longer reproduces (a deploy check for CI).

Each run is replayed as `gatehouse replay RUN` does (`pipelines.replay`), from records read in a
few queries for the whole set (`storage.replay_sets`, `storage.calls.recorded_calls_of`), and
judged:

- **same**: today's code makes the recorded calls in order and ends as the run did: a finished
  run with the recorded output, a run that failed or was rejected raising at its last recorded
  call, and a waiting (or cancelled, needs-attention) run stopping at the call it waits on;
- **diverged**: a call differs from the record, today's code ends earlier, raises where the run
  went on, or returns another output;
- **would call**: a finished run's replay reaches a tool, model or person the record lacks
  (today's code does more than the run did);
- **failed to replay**: the pipeline is gone or the recorded input no longer fits its model.

A waiting run that diverged or failed to replay is one the deploy would break: when it resumes
it fails with "pipeline changed under a running run".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pipelines.authorization import authorize_operator
from pipelines.pipeline import get_pipeline
from pipelines.replay import ReplayReport, replay_recorded
from pipelines.runtime import Runtime
from storage import calls as call_rows
from storage.calls import CallRecord
from storage.models import RunStatus
from storage.replay_sets import finished_runs, waiting_runs
from storage.rows import RunRow

_ENDED_IN_ERROR = (RunStatus.FAILED, RunStatus.REJECTED)
_ENDED = (RunStatus.SUCCEEDED, *_ENDED_IN_ERROR)


class Verdict(StrEnum):
    SAME = "same"
    DIVERGED = "diverged"
    WOULD_CALL = "would call"
    FAILED = "failed to replay"


@dataclass(frozen=True)
class RunCheck:
    """One run's replay, judged. `where`: what differs and at which call (None when same)."""

    run_id: str
    pipeline: str
    recorded_status: str
    verdict: Verdict
    where: str | None
    position: int | None
    seconds: float

    @property
    def breaks_waiting_run(self) -> bool:
        return self.recorded_status == RunStatus.WAITING and self.verdict in (
            Verdict.DIVERGED,
            Verdict.FAILED,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "recorded_status": self.recorded_status,
            "verdict": str(self.verdict),
            "where": self.where,
            "position": self.position,
            "seconds": round(self.seconds, 6),
        }


@dataclass
class ReplayCheck:
    """A replay check's runs, in the order read: finished ones newest first, then waiting ones."""

    since: datetime | None
    pipeline: str | None
    runs: list[RunCheck] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, verdict: Verdict) -> int:
        return sum(1 for r in self.runs if r.verdict == verdict)

    @property
    def ok(self) -> bool:
        return all(r.verdict == Verdict.SAME for r in self.runs)

    @property
    def breaking(self) -> list[RunCheck]:
        """The waiting runs today's code would break when they resume."""
        return [r for r in self.runs if r.breaks_waiting_run]

    def summary(self) -> dict[str, int]:
        return {
            "checked": len(self.runs),
            "same": self.count(Verdict.SAME),
            "diverged": self.count(Verdict.DIVERGED),
            "would_call": self.count(Verdict.WOULD_CALL),
            "failed_to_replay": self.count(Verdict.FAILED),
            "waiting_runs_broken": len(self.breaking),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "since": self.since.isoformat() if self.since else None,
            "pipeline": self.pipeline,
            "summary": self.summary(),
            "seconds": round(self.seconds, 3),
            "breaking_waiting_runs": [r.run_id for r in self.breaking],
            "runs": [r.to_json() for r in self.runs],
        }


def judge(report: ReplayReport) -> tuple[Verdict, str | None, int | None]:
    """A replay's verdict, what differs and at which call (see the module's docstring)."""
    status = report.recorded_status
    stop = report.lines[-1] if report.lines else None
    if report.divergence is not None:
        position = stop.position if stop and stop.outcome == "diverged" else report.calls_made
        return Verdict.DIVERGED, report.divergence, position
    if not report.ran:
        return Verdict.FAILED, report.error or "today's code cannot replay it", None
    if report.finished:
        if status == RunStatus.SUCCEEDED and not report.output_matches:
            return Verdict.DIVERGED, "today's code returns another output than the record", None
        if status in _ENDED_IN_ERROR:
            where = f"today's code finishes after {report.calls_made} calls; the run ended {status}"
            return Verdict.DIVERGED, where, report.calls_made
        return Verdict.SAME, None, None
    if report.error is not None:
        if status in _ENDED_IN_ERROR and report.calls_made >= report.recorded_calls:
            return Verdict.SAME, None, None  # it raises where the run did
        where = f"call {report.calls_made}: today's code raises {report.error}"
        if report.calls_made < report.recorded_calls:
            where += f" ({report.recorded_calls} calls in the record, the run {status})"
        return Verdict.DIVERGED, where, report.calls_made
    # Stopped at a call it may not make (a tool, the model, a person).
    if report.calls_made <= report.recorded_calls or status not in _ENDED:
        return Verdict.SAME, None, None  # the call the run waits on, or past a wait point
    assert stop is not None
    where = (
        f"call {stop.position}: today's code {stop.outcome} {stop.key!r}, which the record "
        f"lacks (the run ended {status} after {report.recorded_calls} calls)"
    )
    return Verdict.WOULD_CALL, where, stop.position


def check_replays(
    rt: Runtime,
    *,
    since: datetime | None,
    pipeline: str | None = None,
    limit: int | None = None,
    user: str | None = None,
) -> ReplayCheck:
    """Replay the runs that finished since `since` (at most `limit`, newest first; none when
    `since` is None) and every waiting run, of `pipeline` or of all; `user` as for `replay`."""
    authorize_operator(rt, user, "replay", f"the runs of {pipeline or 'every pipeline'}")
    if pipeline is not None:
        get_pipeline(pipeline)  # a misspelt name is an error, not "0 runs, all the same"
    names = [pipeline] if pipeline is not None else None
    started = time.perf_counter()
    with rt.db.transaction() as conn:
        runs = []
        if since is not None and limit != 0:
            runs = finished_runs(conn, since=since, pipelines=names, limit=limit)
        runs += waiting_runs(conn, pipelines=names)
        records = call_rows.recorded_calls_of(conn, [run.id for run in runs])
    check = ReplayCheck(since, pipeline)
    check.runs = [_check_run(rt, run, records[run.id]) for run in runs]
    check.seconds = time.perf_counter() - started
    return check


def breaking_waiting_runs(rt: Runtime, pipelines: list[str] | None = None) -> list[RunCheck]:
    """The waiting runs (of `pipelines`, or all) today's code would break (`gatehouse ready`)."""
    with rt.db.transaction() as conn:
        runs = waiting_runs(conn, pipelines=pipelines)
        records = call_rows.recorded_calls_of(conn, [run.id for run in runs])
    checked = [_check_run(rt, run, records[run.id]) for run in runs]
    return [r for r in checked if r.breaks_waiting_run]


def _check_run(rt: Runtime, run: RunRow, recorded: list[CallRecord]) -> RunCheck:
    began = time.perf_counter()
    verdict, where, position = judge(replay_recorded(rt, run, recorded))
    seconds = time.perf_counter() - began
    return RunCheck(run.id, run.pipeline, run.status, verdict, where, position, seconds)
