"""The pipeline pause (a circuit breaker), both ends: the switch (`pause_pipeline`,
`resume_pipeline`, audited, in the database so every replica sees it) and the gate it works
through — a paused pipeline takes no new run (`refuse_if_paused`, called by every trigger), and
a running run stops before its next tool or model call (`hold_if_paused`, at the live
executor's call boundary), waits durably, and is queued again by the resume.

Who may switch is checked by the callers that act for a person (the CLI, Slack, `Gatehouse`);
the engine's own callers (an alert rule, a budget) pause with `source` naming themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import structlog
from sqlalchemy import Connection

from pipelines import sensitive
from pipelines.errors import GatehouseError, ReasonRequired, Suspend
from pipelines.journal import Journal
from pipelines.pipeline import get_pipeline
from pipelines.runtime import Runtime
from pipelines.views import Run, iso
from storage import pauses as pause_rows
from storage import runs as run_rows
from storage.audit import append_audit
from storage.models import RunStatus
from storage.rows import PipelinePauseRow

log = structlog.get_logger()

SOURCES = ("manual", "alert:error_rate", "budget:day", "budget:rate")
"""What may pause a pipeline: a person, the error-rate alert, a day budget, a run-rate budget."""


class PipelinePaused(GatehouseError):
    """A trigger of a paused pipeline: no run was created (`pause`: who paused it and why;
    None when it was resumed between the refusal and reading the pause)."""

    def __init__(self, message: str, pause: PauseView | None) -> None:
        super().__init__(message)
        self.pause = pause


class UnknownPauseSource(GatehouseError):
    pass


@dataclass(frozen=True)
class PauseView:
    """A paused pipeline: who paused it, why, from what (`SOURCES`), since when."""

    pipeline: str
    by: str
    reason: str | None
    source: str
    at: datetime

    @classmethod
    def of(cls, row: PipelinePauseRow) -> PauseView:
        return cls(row.pipeline, row.changed_by, row.reason, row.source, row.changed_at)

    def describe(self) -> str:
        """ "paused by U0OPS since 2026-12-04 01:50 UTC (manual): deploy going out" """
        text = f"paused by {self.by} since {self.at:%Y-%m-%d %H:%M} UTC"
        if self.source != "manual":
            text += f" ({self.source})"
        return text + (f": {self.reason}" if self.reason else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "by": self.by,
            "reason": self.reason,
            "source": self.source,
            "at": iso(self.at),
        }


def pause_pipeline(
    rt: Runtime, pipeline: str, *, by: str, reason: str, source: str = "manual"
) -> bool:
    """Pause `pipeline` in every replica: True if it was running and is now paused (audited as
    `pipeline.paused`); False if it was paused already (nothing changes, the first pause stands)."""
    get_pipeline(pipeline)
    if not (reason and reason.strip()):
        raise ReasonRequired(f'pausing {pipeline} needs a reason (--reason "...")')
    with rt.db.transaction() as conn:
        return pause_in(conn, pipeline, by=by, reason=reason, source=source, now=rt.clock.now())


def pause_in(
    conn: Connection, pipeline: str, *, by: str, reason: str, source: str, now: datetime
) -> bool:
    """`pause_pipeline` inside the caller's transaction (an alert pauses in the transaction
    that opens it, so its message always knows)."""
    if source not in SOURCES:
        raise UnknownPauseSource(f"unknown pause source {source!r}; sources: {', '.join(SOURCES)}")
    reason = sensitive.scrub(reason.strip())
    paused = pause_rows.pause(conn, pipeline, by=by, reason=reason, source=source, now=now)
    if paused:
        append_audit(
            conn,
            event="pipeline.paused",
            at=now,
            actor=by,
            detail={"pipeline": pipeline, "reason": reason, "source": source},
        )
        log.warning("pipeline.paused", pipeline=pipeline, user=by, source=source)
    return paused


def resume_pipeline(rt: Runtime, pipeline: str, *, by: str, reason: str | None = None) -> bool:
    """Resume `pipeline`: True if it was paused (audited as `pipeline.resumed`); the runs its
    pause held are queued again in the same transaction, so a worker carries them on."""
    get_pipeline(pipeline)
    reason = sensitive.scrub(reason.strip()) if reason and reason.strip() else None
    now = rt.clock.now()
    woken: list[str] = []
    with rt.db.transaction() as conn:
        resumed = pause_rows.resume(conn, pipeline, by=by, reason=reason, now=now)
        if resumed:
            for run_id in pause_rows.runs_held_by_pause(conn, pipeline):
                if run_rows.requeue_waiting(
                    conn, run_id, now=now, detail=f"pipeline resumed by {by}"
                ):
                    woken.append(run_id)
            append_audit(
                conn,
                event="pipeline.resumed",
                at=now,
                actor=by,
                detail={"pipeline": pipeline, "reason": reason, "queued_runs": woken},
            )
    if resumed:
        log.info("pipeline.resumed", pipeline=pipeline, user=by, queued_runs=len(woken))
    return resumed


def pipeline_pause(rt: Runtime, pipeline: str) -> PauseView | None:
    """The pipeline's pause, or None while it runs."""
    with rt.db.transaction() as conn:
        row = pause_rows.fetch_pause(conn, pipeline)
    return None if row is None else PauseView.of(row)


def paused_pipelines(rt: Runtime) -> dict[str, PauseView]:
    """Every paused pipeline's pause, by name."""
    with rt.db.transaction() as conn:
        rows = pause_rows.paused_pipelines(conn)
    return {row.pipeline: PauseView.of(row) for row in rows}


def is_paused(conn: Connection, pipeline: str) -> bool:
    """Whether `pipeline` is paused, read in the caller's transaction."""
    return pause_rows.is_paused(conn, pipeline)


def is_held_by_pause(run: Run) -> bool:
    """Whether a waiting run waits for its pipeline's resume (not a person or a timer)."""
    return run.status == RunStatus.WAITING and (run.waiting_reason or "").startswith(
        pause_rows.HELD_BY_PAUSE
    )


# -- the gate ----------------------------------------------------------------------------------


def refusal_message(pause: PauseView, what: str = "no run was created") -> str:
    return (
        f"{pause.pipeline} is {pause.describe()}; {what}. An operator resumes it with "
        f"`gatehouse resume {pause.pipeline} --as USER` or `/gatehouse resume {pause.pipeline}`"
    )


def refuse_if_paused(rt: Runtime, pipeline: str, what: str = "no run was created") -> None:
    """Raise `PipelinePaused` when `pipeline` is paused (a manual or webhook trigger)."""
    pause = pipeline_pause(rt, pipeline)
    if pause is not None:
        log.info("pipeline.trigger_refused", pipeline=pipeline, paused_by=pause.by)
        raise PipelinePaused(refusal_message(pause, what), pause)


def paused_here(conn: Connection, pipeline: str) -> bool:
    """Whether `pipeline` is paused, read in the caller's transaction (the one creating a run;
    the driver's or SQLAlchemy's): one indexed read, no transaction of its own."""
    return pause_rows.paused_on_driver(conn, pipeline)


def refuse_paused(rt: Runtime, pipeline: str, what: str = "no run was created") -> NoReturn:
    """Raise `PipelinePaused` for a trigger refused because `pipeline` was paused when its run
    would have been created (with who paused it and why, if the pause still holds)."""
    refuse_if_paused(rt, pipeline, what)
    raise PipelinePaused(f"{pipeline} was paused: {what}; trigger it again", None)


def hold_if_paused(journal: Journal) -> None:
    """At a live run's call boundary: if its pipeline is paused, move the run to `waiting`
    (detail "pipeline paused by …") and suspend it; `resume_pipeline` queues it again."""
    with journal.fast_read() as conn:
        if not pause_rows.paused_on_driver(conn, journal.pipeline):
            return
    hold(journal)


def hold(journal: Journal) -> None:
    """The pipeline was read paused (a cheap read outside a transaction): read it again in the
    transaction that suspends the run, and suspend it if the pause still holds."""
    with journal.transaction() as conn:
        if not pause_rows.is_paused(conn, journal.pipeline):
            return
        row = pause_rows.fetch_pause(conn, journal.pipeline)
        pause = PauseView.of(row) if row is not None else None
        why = f"{pause_rows.HELD_BY_PAUSE} by {pause.by}" if pause else pause_rows.HELD_BY_PAUSE
        if pause is not None and pause.reason:
            why += f": {pause.reason}"
        journal.suspend(conn, journal.rt.clock.now(), why)
    log.info("run.held_by_pause", run_id=journal.run_id, pipeline=journal.pipeline)
    raise Suspend(why)
