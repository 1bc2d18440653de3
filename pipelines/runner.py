"""The durable runner: create runs, execute them by replay, and finish them.

A run is executed by calling its pipeline function from the top with a `Context` holding the
recorded calls. The function returns (the run succeeded), raises `Suspend` (its state is already
`waiting`), or raises (the run ends rejected, failed or needing attention). Only the worker
holding the claim writes the final state; a run whose claim was taken over writes nothing.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection

from pipelines import budgets, observations, pauses, run_notices, sensitive, task_outcomes
from pipelines.attention import ATTENTION_EVENT, notify_attention
from pipelines.authorization import authorize_trigger
from pipelines.context import Context
from pipelines.errors import (
    ActionRejected,
    CancelRun,
    LostClaim,
    NeedsAttention,
    PipelineChanged,
    RunNotRunnable,
    Suspend,
    UnknownPipeline,
    UnknownRun,
)
from pipelines.journal import CallRecord, Journal, describe_args, record_value
from pipelines.live import LiveExecutor
from pipelines.pipeline import Pipeline, get_pipeline
from pipelines.runtime import Runtime, running_in
from pipelines.tracing import run_ended, run_slice, trigger_detail
from pipelines.validation import format_validation_errors
from pipelines.views import Run
from storage import calls as call_rows
from storage import runs as run_rows
from storage.db import Database, is_disconnect
from storage.fastsql import driver_transaction
from storage.ids import new_id
from storage.models import RunStatus

log = structlog.get_logger()


@dataclass(frozen=True)
class Outcome:
    status: RunStatus
    output: Any = None
    error: str | None = None
    waiting_for: str | None = None
    run_id: str | None = None


def trigger(
    rt: Runtime,
    name: str,
    input: Any,
    *,
    user: str | None = None,
    source: str = "api",
    run_here: bool = True,
) -> Run:
    """Create a run of `name` and (by default) execute it here until it finishes or waits.

    Input that fails the pipeline's model is recorded as an `invalid_input` run with the field
    errors, before any step runs; the returned `Run` says so.
    """
    pipeline = get_pipeline(name)
    authorize_trigger(rt, user, name)
    now = rt.clock.now()
    run_id = new_id("run")
    try:
        model = (
            input
            if isinstance(input, pipeline.input_model)
            else pipeline.input_model.model_validate(input)
        )
    except ValidationError as exc:
        # Pydantic quotes the refused value: a pasted token must not land in the record.
        error = sensitive.scrub(f"invalid input for {name}: {format_validation_errors(exc)}")
        recorded_input = sensitive.redact_fields(pipeline.input_model, describe_args(input))
        pauses.refuse_if_paused(rt, name)  # a paused pipeline records no run, not even this
        with rt.db.transaction() as conn:
            run_rows.insert_run(
                conn,
                run_id=run_id,
                pipeline=name,
                status=RunStatus.INVALID_INPUT,
                input=recorded_input,
                now=now,
                trigger_user=user,
                trigger=source,
                error=error,
            )
        log.info("run.invalid_input", run_id=run_id, pipeline=name)
        watcher = observations.observer()
        if watcher.active:  # refused on arrival: finished when it was created
            watcher.run_finished(observations.pipeline_label(name), RunStatus.INVALID_INPUT, 0.0)
        return Run(
            run_id, name, RunStatus.INVALID_INPUT, recorded_input, None, error, user, now, now
        )

    input_json = model.model_dump(mode="json")
    if not run_here:
        with rt.db.transaction() as conn:
            paused, refused = _admission(rt, conn, name, now)
            if not paused and refused is None:
                run_rows.insert_run(
                    conn,
                    run_id=run_id,
                    pipeline=name,
                    status=RunStatus.QUEUED,
                    input=input_json,
                    now=now,
                    trigger_user=user,
                    trigger=source,
                    detail=trigger_detail(),
                )
        _refuse_unless_admitted(rt, name, paused, refused)
        return Run(run_id, name, RunStatus.QUEUED, input_json, None, None, user, now, None)
    # A run-rate limit is counted in the transaction that creates the run (SQLAlchemy's, for
    # its lock and count); without one, the driver's own transaction is enough.
    rated = budgets.limits_runs(rt, name)
    with rt.db.connection() as held:
        with Database.transaction_on(held) if rated else driver_transaction(held) as conn:
            paused, refused = _admission(rt, conn, name, now)
            if not paused and refused is None:
                run_rows.insert_run(
                    conn,
                    run_id=run_id,
                    pipeline=name,
                    status=RunStatus.RUNNING,
                    input=input_json,
                    now=now,
                    trigger_user=user,
                    trigger=source,
                    claimed_by=rt.worker_id,
                    lease_until=now + rt.lease,
                )
        _refuse_unless_admitted(rt, name, paused, refused)
        outcome = _execute(
            rt,
            held,
            pipeline,
            run_id,
            model,
            user,
            recorded=[],
            source=source,
            created_at=now,
            fresh=True,
        )
    finished = rt.clock.now() if outcome.status != RunStatus.WAITING else None
    return Run(
        run_id,
        name,
        outcome.status,
        input_json,
        outcome.output,
        outcome.error,
        user,
        now,
        finished,
        waiting_for=[outcome.waiting_for] if outcome.waiting_for else [],
    )


def _admission(
    rt: Runtime, conn: Connection, name: str, now: datetime
) -> tuple[bool, budgets.RunRateExceeded | None]:
    """In the transaction that creates the run, so no run slips past a pause or a run rate:
    (paused, the run rate's refusal or None)."""
    if pauses.paused_here(conn, name):
        return True, None
    return False, budgets.admit_run(rt, conn, name, now)


def _refuse_unless_admitted(
    rt: Runtime, name: str, paused: bool, refused: budgets.RunRateExceeded | None
) -> None:
    """After that transaction committed (a run-rate refusal keeps its alert): raise the
    refusal, if there was one."""
    if paused:
        pauses.refuse_paused(rt, name)
    if refused is not None:
        budgets.after_run_refused(rt, name, refused)


def execute_claimed(rt: Runtime, run_id: str) -> Outcome:
    """Execute a run this process has claimed (status `running`, `claimed_by` us)."""
    with rt.db.connection() as held:
        outcome = _load_and_execute(rt, held, run_id, claim=False)
    assert outcome is not None
    return replace(outcome, run_id=run_id)


def _load_and_execute(rt: Runtime, held: Connection, run_id: str, *, claim: bool) -> Outcome | None:
    """Load the run and its record (claiming it first, in the same transaction, if asked)."""
    with driver_transaction(held) as conn:  # fastsql statements only
        if claim:
            run = run_rows.claim_fetched_run(
                conn, run_id, worker=rt.worker_id, now=rt.clock.now(), lease=rt.lease
            )
            if run is None:
                return None
        else:
            run = run_rows.fetch_run(conn, run_id)
        if run is None:
            raise UnknownRun(f"no run {run_id}")
        if run.status != RunStatus.RUNNING or run.claimed_by != rt.worker_id:
            raise RunNotRunnable(f"run {run_id} is {run.status} and not claimed by this process")
        recorded = call_rows.recorded_calls(conn, run_id)
    try:
        pipeline = get_pipeline(run.pipeline)
        model = pipeline.input_model.model_validate(run.input)
    except (UnknownPipeline, ValidationError) as exc:
        message = (
            f"cannot resume: {exc}"
            if isinstance(exc, UnknownPipeline)
            else f"cannot resume: the recorded input no longer fits {run.pipeline}'s input model: "
            f"{format_validation_errors(exc)}"
        )
        tell = run_notices.tells_triggerer(rt, run.trigger, run.trigger_user)
        failed = Outcome(RunStatus.FAILED, error=message)
        return _finish(rt, held, run_id, failed, tell=tell, seen=(run.pipeline, run.created_at))
    return _execute(
        rt,
        held,
        pipeline,
        run_id,
        model,
        run.trigger_user,
        recorded=recorded,
        source=run.trigger,
        created_at=run.created_at,
    )


def _execute(
    rt: Runtime,
    held: Connection,
    pipeline: Pipeline,
    run_id: str,
    model: BaseModel,
    trigger_user: str | None,
    *,
    recorded: list[CallRecord],
    source: str | None = None,
    created_at: datetime | None = None,
    fresh: bool = False,
) -> Outcome:
    """`fresh`: the run was created just now, in this call, with no caller's traceparent (its
    first slice; nothing to read back for its trace)."""
    tell = run_notices.tells_triggerer(rt, source, trigger_user)
    journal = Journal(
        rt,
        run_id=run_id,
        pipeline=pipeline.name,
        trigger_user=trigger_user,
        recorded=recorded,
        conn=held,
        tells_triggerer=tell,
    )
    ctx = Context(rt, journal, LiveExecutor(rt, journal))
    with (
        rt.leases.hold(run_id),
        running_in(rt),
        structlog.contextvars.bound_contextvars(run_id=run_id, pipeline=pipeline.name),
        sensitive.tracking(),
        run_slice(rt, held, run_id, pipeline.name, fresh=fresh),
    ):
        sensitive.remember_model(model)
        try:
            result = pipeline.fn(ctx, model)
            if ctx.calls_made < ctx.recorded_count:
                raise PipelineChanged(
                    f"pipeline changed under a running run: run {run_id} recorded "
                    f"{ctx.recorded_count} calls but today's code finished after {ctx.calls_made}; "
                    "`gatehouse replay RUN_ID` shows the difference"
                )
            outcome = Outcome(
                RunStatus.SUCCEEDED, output=record_value(result, f"pipeline {pipeline.name!r}")
            )
        except Suspend as suspended:
            log.info("run.waiting", reason=suspended.reason)
            if tell:
                run_notices.nudge(rt, run_id)  # its notice was owed when it suspended
            return Outcome(RunStatus.WAITING, waiting_for=suspended.waiting_for)
        except LostClaim:
            log.warning("run.claim_lost", worker=rt.worker_id)
            return Outcome(RunStatus.RUNNING, error="claim lost to another worker")
        except NeedsAttention as exc:
            outcome = Outcome(RunStatus.NEEDS_ATTENTION, error=str(exc))
        except ActionRejected as exc:
            outcome = Outcome(RunStatus.REJECTED, error=str(exc))
        except CancelRun as exc:
            outcome = Outcome(RunStatus.CANCELLED, error=str(exc))
        except Exception as exc:
            if is_disconnect(exc):
                # The database went away (a restart): nothing here can be written, and the run
                # did not fail. It stays `running` under our claim; the worker carries on with
                # it once the database is back, replaying from its record.
                log.warning("run.database_lost", error=str(exc))
                raise
            log.warning("run.failed", error=str(exc), traceback=traceback.format_exc())
            outcome = Outcome(RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        seen = None if created_at is None else (pipeline.name, created_at)
        return _finish(rt, held, run_id, outcome, tell=tell, journal=journal, seen=seen)


def _finish(
    rt: Runtime,
    held: Connection,
    run_id: str,
    outcome: Outcome,
    *,
    tell: bool = False,
    journal: Journal | None = None,
    seen: tuple[str, datetime] | None = None,
) -> Outcome:
    """Record the run's end; `seen` (its pipeline and creation time) feeds the metrics port."""
    # An exception's text may quote a secret or a sensitive value the run holds, and so may
    # what the pipeline returned (sealed fields stay whole and resume).
    outcome = replace(
        outcome, error=sensitive.scrub(outcome.error), output=sensitive.scrub(outcome.output)
    )
    now = rt.clock.now()
    written = 0
    try:
        with driver_transaction(held) as conn:
            moved = run_rows.transition(
                conn,
                run_id,
                from_statuses=[RunStatus.RUNNING],
                to_status=outcome.status,
                now=now,
                claimed_by=rt.worker_id,
                output=outcome.output,
                error=outcome.error,
                finished_at=now,
            )
            if moved and journal is not None:
                # The run's end is a durable boundary: the steps since the last one go with it
                # (and only if this worker still owns the run).
                written = journal.write_pending(conn)
            if moved and outcome.status == RunStatus.NEEDS_ATTENTION:
                rt.enqueue(conn, ATTENTION_EVENT, run_id, now)  # its notice, with the way out
            if moved and tell:
                run_notices.owe_notice(rt, conn, run_id, now)
            # The cards of tasks people answered say how the run ended (task_outcomes).
            task_cards = journal.owe_task_cards(conn, now) if moved and journal is not None else []
    except LostClaim:
        moved = False
        task_cards = []
    if journal is not None and moved:
        journal.pending_written(written)
    if not moved:
        log.warning("run.claim_lost", run_id=run_id, worker=rt.worker_id)
        return Outcome(RunStatus.RUNNING, error="claim lost to another worker")
    run_ended(str(outcome.status), outcome.error)
    log.info("run.finished", run_id=run_id, status=str(outcome.status))
    watcher = observations.observer()
    if watcher.active and seen is not None:
        watcher.run_finished(
            observations.pipeline_label(seen[0]),
            str(outcome.status),
            max((now - seen[1]).total_seconds(), 0.0),
        )
    if outcome.status == RunStatus.NEEDS_ATTENTION:
        notify_attention(rt, run_id)
    if tell:
        run_notices.nudge(rt, run_id)
    task_outcomes.nudge_task_cards(rt, task_cards)
    return outcome


def claim_and_execute(rt: Runtime, run_id: str) -> Outcome | None:
    """Claim a specific queued run and execute it here (None when somebody else has it)."""
    with rt.db.connection() as held:
        outcome = _load_and_execute(rt, held, run_id, claim=True)
    return None if outcome is None else replace(outcome, run_id=run_id)
