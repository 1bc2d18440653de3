"""The scheduler inside `gatehouse serve` (and `gatehouse worker --scheduler`): APScheduler 3.

One job per cron/every trigger calls `pipelines.operations.schedules.fire` with the time the fire was
*due*, which the database claim is keyed on; system jobs (the weekly review, the alert check)
are added with `add_system_job`. APScheduler 3 does not hand a job its scheduled run time (4.x
does, 3.x never merged it), so jobs are added with the `FIRE_TIME` placeholder among their
arguments and `FireTimeExecutor` puts the time the fire was due in its place.

Jobs coalesce and never overlap themselves. Misfires of pipeline schedules are decided by the
claim logic in `pipelines.operations.schedules` (shared by every replica), not by APScheduler: its own
grace check is off for them, and `catch_up` handles fires missed while no process ran.
"""

from __future__ import annotations

import concurrent.futures
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from pipelines import Gatehouse, Settings
from pipelines.durations import parse_duration
from pipelines.fire_times import cron_trigger, interval_trigger, zone
from pipelines.operations.schedules import (
    FireResult,
    Schedule,
    ScheduleOptions,
    all_schedules,
    catch_up,
    claim_system_fire,
    fire,
)
from pipelines.retention import prune_runs
from pipelines.runtime import Runtime

log = structlog.get_logger()

SYSTEM_PREFIX = "system:"
RETENTION_JOB = "retention"
RETENTION_CRON = "30 3 * * *"  # daily, in GATEHOUSE_TIMEZONE, away from the hour's rollups


class _FireTime:
    def __repr__(self) -> str:
        return "<the fire time>"


FIRE_TIME: Any = _FireTime()
"""A job argument `FireTimeExecutor` replaces with the time the fire was due."""


def _run_with_fire_times(job: Any, jobstore: str, run_times: list[datetime]) -> list[Any]:
    """APScheduler's `run_job`, except that `FIRE_TIME` arguments become the due time."""
    events = []
    for run_time in run_times:
        grace = job.misfire_grace_time
        if grace is not None and datetime.now(UTC) - run_time > timedelta(seconds=grace):
            log.warning("scheduler.job_missed", job=job.id, fire_time=run_time.isoformat())
            events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, jobstore, run_time))
            continue
        try:
            args = [run_time if arg is FIRE_TIME else arg for arg in job.args]
            value = job.func(*args, **job.kwargs)
        except Exception as exc:
            log.exception("scheduler.job_failed", job=job.id, fire_time=run_time.isoformat())
            events.append(
                JobExecutionEvent(
                    EVENT_JOB_ERROR,
                    job.id,
                    jobstore,
                    run_time,
                    exception=exc,
                    traceback=traceback.format_exc(),
                )
            )
        else:
            events.append(
                JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, jobstore, run_time, retval=value)
            )
    return events


class FireTimeExecutor(BaseExecutor):  # type: ignore[misc]
    """A thread pool executor that passes each job the time its fire was due (`FIRE_TIME`)."""

    def __init__(self, max_workers: int = 4) -> None:
        super().__init__()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers, thread_name_prefix="gatehouse-scheduler"
        )

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def done(future: concurrent.futures.Future[list[Any]]) -> None:
            error = future.exception()
            if error is not None:
                self._run_job_error(job.id, error, error.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        # `_jobstore_alias` is what APScheduler's own pool executors pass to `run_job`.
        future = self._pool.submit(_run_with_fire_times, job, job._jobstore_alias, run_times)
        future.add_done_callback(done)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait)


def _fire_schedule(
    fire_time: datetime, rt: Runtime, schedule: Schedule, options: ScheduleOptions
) -> FireResult:
    return fire(rt, schedule, fire_time, options)


@dataclass
class SchedulerHandle:
    """A running scheduler: its jobs, the fires caught up at start, and how to stop it."""

    scheduler: BackgroundScheduler
    gatehouse: Gatehouse
    settings: Settings
    options: ScheduleOptions
    caught_up: list[FireResult] = field(default_factory=list)

    def job_names(self) -> list[str]:
        return sorted(job.id for job in self.scheduler.get_jobs())

    def next_fire(self, name: str) -> datetime | None:
        """When APScheduler will next call the job `name` (a schedule or `system:NAME`)."""
        job = self.scheduler.get_job(name)
        return None if job is None or job.next_run_time is None else job.next_run_time

    def add_system_job(
        self,
        name: str,
        when: str | timedelta,
        fn: Callable[[datetime], object],
        *,
        claim: bool = False,
    ) -> str:
        """Run `fn(fire_time)` on a schedule: `when` is a five-field cron expression (in
        GATEHOUSE_TIMEZONE, crontab weekdays) or an interval ("1m", a timedelta; fires at
        multiples of it). With `claim=True` each fire runs in one replica only (claimed as
        schedule `system:NAME`); without, every replica runs it, so `fn` must be idempotent.
        A fire missed by more than GATEHOUSE_MISFIRE_GRACE_SECONDS is dropped. Returns the
        job's id."""
        if isinstance(when, str) and len(when.split()) > 1:
            timetable = cron_trigger(when, self.options.timezone)
        else:
            timetable = interval_trigger(parse_duration(when), self.options.timezone)
        job_id = SYSTEM_PREFIX + name
        rt = self.gatehouse.rt

        def run(fire_time: datetime) -> object:
            if claim and not claim_system_fire(rt, job_id, fire_time):
                return None
            return fn(fire_time)

        self.scheduler.add_job(
            run,
            args=[FIRE_TIME],
            trigger=timetable,
            id=job_id,
            name=job_id,
            replace_existing=True,
            misfire_grace_time=max(1, int(self.options.misfire_grace.total_seconds())),
        )
        return job_id

    def shutdown(self, wait: bool = True) -> None:
        """Stop firing; with `wait`, let the fires in progress finish."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)


def start_scheduler(
    gatehouse: Gatehouse, settings: Settings, *, catch_up_missed: bool = True
) -> SchedulerHandle:
    """Start firing every cron/every trigger of the registered pipelines in this process.

    After the start, each schedule's latest fire missed while no scheduler ran is handled once
    (run late or skipped by its misfire policy); fires other replicas handled are left alone.
    """
    options = ScheduleOptions.from_settings(settings)
    scheduler = BackgroundScheduler(
        timezone=zone(settings.timezone),
        executors={"default": FireTimeExecutor()},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    schedules = all_schedules(options)
    for schedule in schedules.values():
        problem = schedule.input_problem()
        if problem:
            log.warning("schedule.invalid_input", schedule=schedule.name, problem=problem)
        scheduler.add_job(
            _fire_schedule,
            trigger=schedule.timetable,
            args=[FIRE_TIME, gatehouse.rt, schedule, options],
            id=schedule.name,
            name=schedule.name,
        )
    scheduler.start()
    handle = SchedulerHandle(scheduler, gatehouse, settings, options)
    try:
        if catch_up_missed:
            handle.caught_up = catch_up(gatehouse.rt, options)
    except BaseException:
        handle.shutdown(wait=False)
        raise
    log.info(
        "scheduler.started",
        schedules=len(schedules),
        caught_up=[r.to_json() for r in handle.caught_up if r.outcome != "taken"],
    )
    return handle


def add_retention_job(handle: SchedulerHandle) -> str | None:
    """With GATEHOUSE_RETENTION_DAYS set, prune the runs older than that once a day, in one
    replica a day (claimed as `system:retention`). Unset: no job (production never prunes
    unless told to). Returns the job's id."""
    days = handle.settings.retention_days
    if days is None:
        return None
    rt = handle.gatehouse.rt

    def prune(_fire_time: datetime) -> object:
        return prune_runs(rt, older_than=timedelta(days=days), actor=SYSTEM_PREFIX + RETENTION_JOB)

    return handle.add_system_job(RETENTION_JOB, RETENTION_CRON, prune, claim=True)
