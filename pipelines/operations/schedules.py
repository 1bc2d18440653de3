"""Schedules: the engine side of `cron(...)` and `every(...)` triggers.

Each cron/every trigger of a pipeline is a *schedule* with a stable name: the pipeline's name
for its first one, `NAME#2`, `NAME#3`, … for the next. The bot's scheduler calls `fire()` with
the time a fire was due; `fire()` claims that (schedule, fire time) in the database and, if this
process won, queues the run in the same transaction for a worker. Several replicas running the
same scheduler therefore create exactly one run per fire.

Misfires: a fire handled more than `LATE_AFTER` after its time is *late*. With the trigger's
`misfire="run_late"` (the default) a late fire still runs when it is within the grace period
(GATEHOUSE_MISFIRE_GRACE_SECONDS); otherwise, or with `misfire="skip"`, it is recorded as
skipped. `catch_up()` (at scheduler start) looks only at each schedule's latest missed fire,
and a late fire older than one already recorded is dropped, so there is never a burst.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from apscheduler.triggers.base import BaseTrigger
from pydantic import ValidationError
from sqlalchemy import Connection

from pipelines import pauses
from pipelines.config import Settings
from pipelines.errors import GatehouseError
from pipelines.fire_times import (
    cron_trigger,
    interval_trigger,
    latest_fire_time,
    next_fire_time,
)
from pipelines.journal import describe_args
from pipelines.pipeline import Pipeline, get_pipeline, registered_pipelines
from pipelines.runtime import Runtime
from pipelines.triggers import Cron, Every, Misfire
from pipelines.validation import format_validation_errors
from pipelines.views import iso
from storage import pauses as pause_rows
from storage import runs as run_rows
from storage import schedules as schedule_rows
from storage.ids import new_id
from storage.models import RunStatus

log = structlog.get_logger()

LATE_AFTER = timedelta(seconds=30)
"""A fire handled within this long of its time is on time (scheduler thread, slow database)."""

FireOutcome = Literal["fired", "late", "skipped", "paused", "taken", "superseded"]


class UnknownSchedule(GatehouseError):
    pass


@dataclass(frozen=True)
class ScheduleOptions:
    """What the settings say about schedules: the default time zone and the misfire grace."""

    timezone: str = "UTC"
    misfire_grace: timedelta = timedelta(seconds=300)

    @classmethod
    def from_settings(cls, settings: Settings) -> ScheduleOptions:
        return cls(
            timezone=settings.timezone,
            misfire_grace=timedelta(seconds=settings.misfire_grace_seconds),
        )


@dataclass(frozen=True)
class Schedule:
    name: str
    pipeline: str
    trigger: Cron | Every
    timezone: str
    timetable: BaseTrigger = field(compare=False, repr=False)

    @property
    def input(self) -> dict[str, Any]:
        return dict(self.trigger.input) if self.trigger.input is not None else {}

    @property
    def misfire(self) -> Misfire:
        return self.trigger.misfire

    @property
    def source(self) -> str:
        """What a run created by this schedule records as its trigger."""
        return f"schedule:{self.name}"

    def describe(self) -> str:
        return self.trigger.describe()

    def input_problem(self) -> str | None:
        """Why this schedule's input does not fit the pipeline's model (None when it does)."""
        try:
            get_pipeline(self.pipeline).input_model.model_validate(self.input)
        except ValidationError as exc:
            return (
                f"input {self.input!r} does not fit {self.pipeline}'s input model: "
                f"{format_validation_errors(exc)}; give the trigger input={{...}}"
            )
        return None


def pipeline_schedules(pipeline: Pipeline, options: ScheduleOptions) -> list[Schedule]:
    """The schedules of one pipeline, named `NAME`, `NAME#2`, … in declaration order."""
    found: list[Schedule] = []
    for trigger in pipeline.triggers:
        if not isinstance(trigger, Cron | Every):
            continue
        name = pipeline.name if not found else f"{pipeline.name}#{len(found) + 1}"
        if isinstance(trigger, Cron):
            timezone = trigger.tz or options.timezone
            timetable = cron_trigger(trigger.expression, timezone)
        else:
            timezone = options.timezone
            timetable = interval_trigger(trigger.interval, timezone)
        found.append(Schedule(name, pipeline.name, trigger, timezone, timetable))
    return found


def all_schedules(options: ScheduleOptions) -> dict[str, Schedule]:
    """Every schedule of every registered pipeline, by name."""
    return {
        schedule.name: schedule
        for pipeline in registered_pipelines().values()
        for schedule in pipeline_schedules(pipeline, options)
    }


def get_schedule(name: str, options: ScheduleOptions) -> Schedule:
    found = all_schedules(options)
    if name not in found:
        known = ", ".join(found) or "none"
        raise UnknownSchedule(
            f"no schedule named {name!r}; schedules: {known} (`gatehouse schedules`)"
        )
    return found[name]


@dataclass(frozen=True)
class FireResult:
    """What one call of `fire()` did. `taken`: another process handled this fire;
    `superseded`: a later fire is already recorded; `paused`: nothing was recorded."""

    schedule: str
    fire_time: datetime
    outcome: FireOutcome
    run_id: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "fire_time": iso(self.fire_time),
            "outcome": self.outcome,
            "run_id": self.run_id,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class FireRecord:
    """A recorded fire: `fired` (on time), `late` (ran late) or `skipped` (missed)."""

    schedule: str
    fire_time: datetime
    outcome: str
    run_id: str | None
    claimed_by: str
    claimed_at: datetime
    reason: str | None = None

    @classmethod
    def of(cls, row: Any) -> FireRecord:
        return cls(
            row.schedule,
            row.fire_time,
            row.outcome,
            row.run_id,
            row.claimed_by,
            row.claimed_at,
            getattr(row, "reason", None),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "fire_time": iso(self.fire_time),
            "outcome": self.outcome,
            "run_id": self.run_id,
            "claimed_by": self.claimed_by,
            "claimed_at": iso(self.claimed_at),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ScheduleInfo:
    name: str
    pipeline: str
    trigger: str
    timezone: str
    misfire: Misfire
    paused: bool
    paused_by: str | None
    changed_at: datetime | None
    next_fire: datetime | None
    last_fire: FireRecord | None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pipeline": self.pipeline,
            "trigger": self.trigger,
            "timezone": self.timezone,
            "misfire": self.misfire,
            "paused": self.paused,
            "paused_by": self.paused_by,
            "changed_at": iso(self.changed_at),
            "next_fire": iso(self.next_fire),
            "last_fire": self.last_fire.to_json() if self.last_fire else None,
            "problem": self.problem,
        }


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"fire time {moment} is naive; give a timezone-aware datetime")
    return moment.astimezone(UTC)


def fire(
    rt: Runtime,
    schedule: str | Schedule,
    fire_time: datetime,
    options: ScheduleOptions | None = None,
) -> FireResult:
    """Handle the fire of `schedule` due at `fire_time`: claim it and queue its run, once."""
    options = options or ScheduleOptions()
    found = schedule if isinstance(schedule, Schedule) else get_schedule(schedule, options)
    fire_time = _utc(fire_time)
    now = rt.clock.now()
    lateness = now - fire_time
    late = lateness > LATE_AFTER
    runs = not late or (found.misfire == "run_late" and lateness <= options.misfire_grace)
    outcome: FireOutcome = ("late" if late else "fired") if runs else "skipped"
    run_id = new_id("run") if runs else None

    def result(what: FireOutcome, run: str | None = None) -> FireResult:
        return FireResult(found.name, fire_time, what, run)

    with rt.db.transaction() as conn:
        state = schedule_rows.schedule_states(conn, [found.name]).get(found.name)
        if state is not None and state.paused:
            return result("paused")
        if late and state is not None and state.changed_at > fire_time:
            return result("paused")  # resumed after this fire was due: it fell in the pause
        if late and schedule_rows.has_later_fire(conn, found.name, fire_time):
            return result("superseded")
        if (held := pause_rows.fetch_pause(conn, found.pipeline)) is not None:
            return _skip_paused(conn, rt, found, fire_time, now, pauses.PauseView.of(held))
        claimed = schedule_rows.claim_fire(
            conn,
            schedule=found.name,
            fire_time=fire_time,
            worker=rt.worker_id,
            now=now,
            outcome=outcome,
            run_id=run_id,
        )
        if not claimed:
            return result("taken")
        if run_id is not None:
            _queue_run(conn, found, run_id, now)
    (log.info if outcome == "fired" else log.warning)(
        "schedule.fired" if outcome == "fired" else "schedule.misfired",
        schedule=found.name,
        fire_time=fire_time.isoformat(),
        outcome=outcome,
        run_id=run_id,
        late_seconds=round(lateness.total_seconds(), 3),
    )
    return result(outcome, run_id)


def _skip_paused(
    conn: Connection,
    rt: Runtime,
    schedule: Schedule,
    fire_time: datetime,
    now: datetime,
    pause: pauses.PauseView,
) -> FireResult:
    """The fire of a paused pipeline: recorded as skipped, with why (a pipeline's pause, unlike
    a schedule's, keeps a record: the pipeline was meant to run and did not)."""
    reason = f"pipeline {pause.pipeline} {pause.describe()}"
    claimed = schedule_rows.claim_fire(
        conn,
        schedule=schedule.name,
        fire_time=fire_time,
        worker=rt.worker_id,
        now=now,
        outcome="skipped",
        reason=reason,
    )
    if not claimed:
        return FireResult(schedule.name, fire_time, "taken")
    log.warning(
        "schedule.skipped_paused",
        schedule=schedule.name,
        fire_time=fire_time.isoformat(),
        paused_by=pause.by,
    )
    return FireResult(schedule.name, fire_time, "skipped", reason=reason)


def _queue_run(conn: Connection, schedule: Schedule, run_id: str, now: datetime) -> None:
    """Insert the fire's run as `queued` (or `invalid_input`, like any trigger with bad input),
    in the claim's transaction: a claimed fire always has its run."""
    pipeline = get_pipeline(schedule.pipeline)
    try:
        model = pipeline.input_model.model_validate(schedule.input)
    except ValidationError as exc:
        error = (
            f"invalid input for {pipeline.name}: {format_validation_errors(exc)} "
            f"(schedule {schedule.name} fires with input={schedule.input!r})"
        )
        run_rows.insert_run(
            conn,
            run_id=run_id,
            pipeline=pipeline.name,
            status=RunStatus.INVALID_INPUT,
            input=describe_args(schedule.input),
            now=now,
            trigger=schedule.source,
            error=error,
        )
        log.warning("run.invalid_input", run_id=run_id, pipeline=pipeline.name, error=error)
        return
    run_rows.insert_run(
        conn,
        run_id=run_id,
        pipeline=pipeline.name,
        status=RunStatus.QUEUED,
        input=model.model_dump(mode="json"),
        now=now,
        trigger=schedule.source,
    )


def catch_up(rt: Runtime, options: ScheduleOptions | None = None) -> list[FireResult]:
    """Handle each schedule's latest fire that may have been missed while no scheduler ran
    (call it when a scheduler starts): at most one fire per schedule, late or skipped by its
    policy, or `taken` when another process handled it."""
    options = options or ScheduleOptions()
    now = rt.clock.now()
    lookback = max(options.misfire_grace, LATE_AFTER)
    results = []
    for schedule in all_schedules(options).values():
        missed = latest_fire_time(schedule.timetable, now, lookback)
        if missed is not None:
            results.append(fire(rt, schedule, missed, options))
    return results


def schedules_overview(rt: Runtime, options: ScheduleOptions | None = None) -> list[ScheduleInfo]:
    """Every schedule with its pause state, next fire time and last recorded fire."""
    options = options or ScheduleOptions()
    found = all_schedules(options)
    now = rt.clock.now()
    with rt.db.transaction() as conn:
        states = schedule_rows.schedule_states(conn, found)
        last = {name: schedule_rows.latest_fire(conn, name) for name in found}
    overview = []
    for name, schedule in found.items():
        state = states.get(name)
        row = last[name]
        overview.append(
            ScheduleInfo(
                name=name,
                pipeline=schedule.pipeline,
                trigger=schedule.describe(),
                timezone=schedule.timezone,
                misfire=schedule.misfire,
                paused=bool(state is not None and state.paused),
                paused_by=state.changed_by if state is not None and state.paused else None,
                changed_at=state.changed_at if state is not None else None,
                next_fire=next_fire_time(schedule.timetable, now),
                last_fire=FireRecord.of(row) if row is not None else None,
                problem=schedule.input_problem(),
            )
        )
    return overview


def schedule_info(rt: Runtime, name: str, options: ScheduleOptions | None = None) -> ScheduleInfo:
    get_schedule(name, options or ScheduleOptions())
    return next(info for info in schedules_overview(rt, options) if info.name == name)


def _set_paused(
    rt: Runtime, name: str, user: str, paused: bool, options: ScheduleOptions | None
) -> ScheduleInfo:
    get_schedule(name, options or ScheduleOptions())
    with rt.db.transaction() as conn:
        schedule_rows.set_paused(conn, name, paused=paused, user=user, now=rt.clock.now())
    log.info("schedule.paused" if paused else "schedule.resumed", schedule=name, user=user)
    return schedule_info(rt, name, options)


def pause(
    rt: Runtime, name: str, user: str, options: ScheduleOptions | None = None
) -> ScheduleInfo:
    """Stop the schedule's fires (in every process) until `resume`; fires due meanwhile are
    not run later."""
    return _set_paused(rt, name, user, True, options)


def resume(
    rt: Runtime, name: str, user: str, options: ScheduleOptions | None = None
) -> ScheduleInfo:
    return _set_paused(rt, name, user, False, options)


def list_fires(rt: Runtime, schedule: str | None = None, *, limit: int = 20) -> list[FireRecord]:
    """Recorded fires, newest first (one schedule's, or all)."""
    with rt.db.transaction() as conn:
        rows = schedule_rows.list_fires(conn, schedule=schedule, limit=limit)
    return [FireRecord.of(row) for row in rows]


def claim_system_fire(rt: Runtime, name: str, fire_time: datetime) -> bool:
    """Claim one fire of a system job (the weekly review, the alert check) for this process:
    True in exactly one of the replicas that try."""
    with rt.db.transaction() as conn:
        claimed = schedule_rows.claim_fire(
            conn,
            schedule=name,
            fire_time=_utc(fire_time),
            worker=rt.worker_id,
            now=rt.clock.now(),
            outcome="fired",
        )
    return claimed
