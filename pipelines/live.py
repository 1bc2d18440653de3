"""The live mode's executor: what a run does with a call its record does not settle. It passes
the gates (`approvals`, `rate_limits`, `tasks`), runs the call, and records the outcome
through the run's journal; a tool runs at most once (its `started` row comes first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, NoReturn

import structlog
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import Connection

from pipelines import (
    approval_edits,
    approvals,
    budgets,
    call_outcomes,
    observations,
    pauses,
    rate_limits,
    run_operations,
    sensitive,
    tasks,
)
from pipelines.categorical import categorical_fields
from pipelines.context import ModelRequest
from pipelines.errors import NeedsAttention, StepFailed, ToolFailed
from pipelines.journal import CallRecord, Journal, NextCall, describe_args, record_value
from pipelines.llm import LLMResult
from pipelines.runtime import Runtime
from pipelines.tools import Tool, lookup_tool
from pipelines.validator import Judgement, Validator
from storage import calls as call_rows
from storage.boundaries import boundary_state
from storage.db import is_disconnect
from storage.models import CallStatus

log = structlog.get_logger()


DB_BLIP = "the database was unreachable when the outcome was recorded; written once it was back"


class Outcome(NamedTuple):
    """A tool's outcome as this process knows it, until the database has it."""

    status: CallStatus
    output: Any
    error: str | None
    latency_ms: float


class LiveExecutor:
    """Runs and records; see the module docstring."""

    def __init__(self, runtime: Runtime, journal: Journal) -> None:
        self._rt = runtime
        self._journal = journal

    def reused(self, call: NextCall, outcome: str, detail: Any) -> None:
        pass  # a live run reuses its record silently

    def _call_boundary(self) -> None:
        """Before a tool or model call the record does not settle: a cancelled run stops here
        (`pipelines.run_operations`), and a paused pipeline holds the run here
        (`pipelines.pauses`). Both are read in one statement."""
        journal = self._journal
        with journal.fast_read() as conn:  # no write lock: a read before every call
            state = boundary_state(conn, journal.run_id)
        if state is None:
            run_operations.stop_unless_ours(journal, None, None)
            return
        run_operations.stop_unless_ours(journal, state.status, state.claimed_by)
        if state.paused:
            pauses.hold(journal)

    # -- steps -----------------------------------------------------------------------------

    def step(
        self,
        call: NextCall,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        adapter: TypeAdapter[Any] | None,
    ) -> Any:
        started_at = self._rt.clock.now()
        try:
            result = fn(*args)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._journal.defer(
                call.record(
                    CallStatus.FAILED, input=_step_input(args), started_at=started_at, error=error
                )
            )
            raise StepFailed(call.name, error) from exc
        output = record_value(result, f"step {call.name!r}")
        self._journal.defer(
            call.record(
                CallStatus.SUCCEEDED, input=_step_input(args), started_at=started_at, output=output
            )
        )
        return result if adapter is not None else output

    # -- tools -----------------------------------------------------------------------------

    def validate(self, tool: Tool, rule: Validator, args_json: Any) -> Judgement:
        self._call_boundary()
        return approvals.consult_validator(self._journal, tool, rule, args_json)

    def tool(
        self,
        call: NextCall,
        tool: Tool,
        args: BaseModel,
        args_json: Any,
        judgement: Judgement | None,
    ) -> Any:
        journal = self._journal
        recorded = call.recorded
        # The call boundary is read in the transaction that starts the call when nothing comes
        # between them (an ungated call, or one this process approved just now): a transaction
        # fewer, and no cancel or pause commits between the check and the `started` row.
        gated = recorded is None and (judgement is not None or tool.needs_approval(args))
        at_start = (recorded is None and not gated) or (
            recorded is not None
            and recorded.status == CallStatus.AWAITING_APPROVAL
            and recorded.id in self._rt.approved_calls
        )
        if recorded is not None and recorded.status in (
            CallStatus.STARTED,
            CallStatus.OUTCOME_UNKNOWN,
        ):
            run_operations.stop_if_cancelled(journal)  # a cancelled run settles nothing more
        elif not at_start:
            self._call_boundary()  # not a call this process may have begun: those settle first
        if recorded is None:
            if judgement is not None:
                if judgement.outcome == "reject":
                    approvals.reject_by_validator(journal, tool, judgement, call, args_json)
                if judgement.outcome == "human":
                    approvals.request(journal, tool, call, args_json, judgement)
            elif gated:
                approvals.request(journal, tool, call, args_json)
            started = self._start(tool, call, args_json, at_start, validated=judgement)
            return self._execute(tool, args, started)
        # Approved with edits: the call runs with the approver's arguments (recorded by the
        # decision, which queued the run this replay loaded).
        args, args_json = approval_edits.effective_args(tool, recorded, args, args_json)
        if recorded.status == CallStatus.AWAITING_APPROVAL:
            approvals.settle(journal, tool, recorded.id)
        elif recorded.status == CallStatus.STARTED:
            return self._recover_started(tool, args, call, recorded)
        elif recorded.status == CallStatus.OUTCOME_UNKNOWN:
            raise NeedsAttention(recorded.error or f"the outcome of {tool.name} is unknown")
        started = self._start(tool, call, args_json, at_start, call_id=recorded.id)
        return self._execute(tool, args, started)

    def _start(
        self, tool: Tool, call: NextCall, args_json: Any, at_start: bool, **how: Any
    ) -> CallRecord:
        """`rate_limits.start`, with the call boundary read in its transaction (`at_start`)."""
        if not at_start:
            return rate_limits.start(self._journal, tool, call, args_json, **how)
        try:
            return rate_limits.start(
                self._journal, tool, call, args_json, boundary=self._boundary_in, **how
            )
        except _Paused:  # rolled back: hold the run as the boundary does, or go on if unpaused
            self._call_boundary()
            return rate_limits.start(self._journal, tool, call, args_json, **how)

    def _boundary_in(self, conn: Connection) -> None:
        """`_call_boundary` inside the starting transaction: stop a run that is no longer ours;
        a paused pipeline rolls it back (`_Paused`) to be held by `_call_boundary`."""
        state = boundary_state(conn, self._journal.run_id)
        if state is None:
            run_operations.stop_unless_ours(self._journal, None, None)
            return
        run_operations.stop_unless_ours(self._journal, state.status, state.claimed_by)
        if state.paused:
            raise _Paused()

    def _execute(self, tool: Tool, args: BaseModel, started: CallRecord) -> Any:
        """Run a started tool call once and record its outcome."""
        began = time.perf_counter()
        try:
            result = tool.fn(args, idempotency_key=started.idempotency_key)
            output = tool.result_adapter.dump_python(result, mode="json")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._finish_tool(tool, started, CallStatus.FAILED, None, error, began)
            raise ToolFailed(tool.name, error) from exc
        self._finish_tool(tool, started, CallStatus.SUCCEEDED, output, None, began)
        return result

    def _finish_tool(
        self,
        tool: Tool,
        started: CallRecord,
        status: CallStatus,
        output: Any,
        error: str | None,
        began: float,
    ) -> None:
        """Record a tool's outcome. The effect has happened (or the tool failed): whatever the
        database does now, the run must not end `failed` with the call left `started`, or an
        operator retries and the effect happens twice."""
        latency_ms = round((time.perf_counter() - began) * 1000, 3)
        output, error = sensitive.scrub((output, error))
        outcome = Outcome(status, output, error, latency_ms)
        try:
            self._write_outcome(self._journal.fast_transaction, started, outcome)
        except Exception as exc:
            if not is_disconnect(exc):
                self._outcome_unrecorded(tool, started, exc)
            # The database went away with the outcome in hand (the process did not die): write
            # it once the database is back, then let the runner treat the lost connection as it
            # does any (the run stays ours and is replayed; the call is settled by then).
            if not self._write_when_back(started, outcome):
                self._rt.unrecorded_outcomes[started.id] = outcome
            raise
        watcher = observations.observer()
        if watcher.active:
            watcher.tool_called(observations.tool_label(tool.name), str(status))
        log.info(
            "tool.finished",
            run_id=self._journal.run_id,
            tool=tool.name,
            status=str(status),
            latency_ms=latency_ms,
        )

    def _write_outcome(
        self,
        transaction: Callable[[], AbstractContextManager[Connection]],
        started: CallRecord,
        outcome: Outcome,
        *,
        late: str | None = None,
    ) -> None:
        now = self._rt.clock.now()
        succeeded = outcome.status == CallStatus.SUCCEEDED
        detail: dict[str, Any] = {
            "result": outcome.output,
            "error": outcome.error,
            "latency_ms": outcome.latency_ms,
        }
        if late is not None:
            detail["recorded_late"] = late
        approval_id = None
        with transaction() as conn:
            call_rows.update_call(
                conn,
                started.id,
                status=outcome.status,
                output=outcome.output,
                error=outcome.error,
                finished_at=now,
            )
            self._journal.audit(
                conn,
                started,
                "tool.succeeded" if succeeded else "tool.failed",
                at=now,
                actor=self._journal.trigger_user,
                detail=detail,
            )
            if _may_have_a_card(started):
                approval_id = call_outcomes.owe_card_update(self._rt, conn, started.id, now)
        call_outcomes.nudge_card(self._rt, approval_id)

    def _write_when_back(self, started: CallRecord, outcome: Outcome) -> bool:
        """Bounded retries, with backoff, on fresh connections (the run's own is gone)."""
        for delay in self._rt.outcome_retry_delays:
            if delay:
                time.sleep(delay)
            try:
                self._write_outcome(self._rt.db.transaction, started, outcome, late=DB_BLIP)
            except Exception as exc:
                if not is_disconnect(exc):
                    return False
                log.warning("tool.outcome_write_retry", call_id=started.id, error=str(exc))
                continue
            log.info("tool.outcome_recorded_late", call_id=started.id)
            return True
        return False

    def _outcome_unrecorded(self, tool: Tool, started: CallRecord, exc: Exception) -> NoReturn:
        """The database refused the outcome (not a lost connection): the call is
        `outcome_unknown` and the run needs a person, who can look the effect up by its key."""
        refused = sensitive.scrub(f"{type(exc).__name__}: {exc}".splitlines()[0])
        error = (
            f"{tool.name} ran, but the database refused to record its outcome ({refused}); it "
            f"was not run again. Check whether the effect with idempotency key "
            f"{started.idempotency_key} happened."
        )
        log.error("tool.outcome_unrecorded", tool=tool.name, call_id=started.id, error=refused)
        self._mark_unknown(started, error)
        raise NeedsAttention(error) from exc

    def _mark_unknown(self, started: CallRecord, error: str) -> None:
        now = self._rt.clock.now()
        approval_id = None
        with self._journal.transaction() as conn:
            call_rows.update_call(conn, started.id, status=CallStatus.OUTCOME_UNKNOWN, error=error)
            self._journal.audit(
                conn, started, "tool.outcome_unknown", at=now, detail={"error": error}
            )
            if _may_have_a_card(started):
                approval_id = call_outcomes.owe_card_update(self._rt, conn, started.id, now)
        call_outcomes.nudge_card(self._rt, approval_id)

    def _recover_started(
        self, tool: Tool, args: BaseModel, call: NextCall, recorded: CallRecord
    ) -> Any:
        """This call is `started` with no outcome: the database was lost while it ran (this
        process still knows the outcome, and writes it now), or the process stopped mid-call.
        Only idempotent tools run again."""
        now = self._rt.clock.now()
        # As it was started: the key the tool received then is the one it receives now.
        started = call.record(
            CallStatus.STARTED,
            input=recorded.input,
            started_at=recorded.started_at,
            call_id=recorded.id,
            idempotency_key=call.idempotency_key,
        )
        known = self._rt.unrecorded_outcomes.pop(recorded.id, None)
        if known is not None:
            try:
                self._write_outcome(self._journal.fast_transaction, started, known, late=DB_BLIP)
            except Exception as exc:
                if is_disconnect(exc):
                    self._rt.unrecorded_outcomes[recorded.id] = known
                    raise
                self._outcome_unrecorded(tool, started, exc)
            if known.status == CallStatus.SUCCEEDED:
                return tool.result_adapter.validate_python(known.output)
            raise ToolFailed(tool.name, known.error or "failed")
        if tool.idempotent:
            with self._journal.transaction() as conn:
                self._journal.audit(
                    conn,
                    started,
                    "tool.retried",
                    at=now,
                    detail={"why": "started without an outcome (crash); the tool is idempotent"},
                )
            return self._execute(tool, args, started)
        error = (
            f"{tool.name} was started at {recorded.started_at:%Y-%m-%d %H:%M:%S} UTC and its outcome "
            f"is unknown (the process stopped mid-call); it is not idempotent, so it was not run "
            f"again. Check whether the effect with idempotency key {call.idempotency_key} happened."
        )
        self._mark_unknown(started, error)
        raise NeedsAttention(error)

    # -- model calls and people ------------------------------------------------------------

    def reused_answer(self, call: NextCall, request: ModelRequest, recorded: CallRecord) -> None:
        pass

    def collect_answer(self, call: NextCall, request: ModelRequest, recorded: CallRecord) -> Any:
        return tasks.collect(self._journal, request.output, recorded)

    def ask_model(self, call: NextCall, request: ModelRequest) -> LLMResult:
        self._call_boundary()
        reservation = budgets.before_model_call(self._journal, call, request)
        if isinstance(reservation, LLMResult):
            return reservation  # over budget: not sent
        if reservation is None:
            result = request.send(self._rt)
        else:
            try:
                result = request.send(self._rt)
            except BaseException:
                budgets.after_model_call(self._journal, reservation, 0.0)
                raise
            budgets.after_model_call(self._journal, reservation, result.cost)
        watcher = observations.observer()
        if watcher.active:
            watcher.model_called(
                observations.pipeline_label(self._journal.pipeline),
                observations.model_label(self._rt.llm_config.prices, result.model),
                result.failure or "answered",
                result.latency_ms / 1000,
                result.cost,
            )
        log.info(
            "llm.called",
            run_id=self._journal.run_id,
            call=call.key,
            model=result.model,
            failure=result.failure,
            attempts=len(result.attempts),
            latency_ms=result.latency_ms,
        )
        return result

    def answered(self, call: NextCall, request: ModelRequest, result: LLMResult) -> None:
        assert result.value is not None
        meta = _model_meta(request, result, answered_by="model")
        self._journal.record(
            call.record(
                CallStatus.SUCCEEDED,
                input=_model_input(request, result),
                started_at=request.requested_at,
                output=result.value.model_dump(mode="json"),
                meta=meta,
            )
        )

    def cannot_answer(
        self, call: NextCall, request: ModelRequest, result: LLMResult, message: str
    ) -> None:
        self._journal.record(
            call.record(
                CallStatus.FAILED,
                input=_model_input(request, result),
                started_at=request.requested_at,
                error=message,
                meta=_model_meta(request, result),
            )
        )

    def human_exit(
        self, call: NextCall, request: ModelRequest, result: LLMResult, reason: str
    ) -> NoReturn:
        suggestion = result.value.model_dump(mode="json") if result.value is not None else None
        tasks.open_task(
            self._journal,
            call,
            f"The model could not {request.task} this: {reason}. Please answer in its place.",
            request.output,
            context={
                "task": request.task,
                "input": request.prompt,
                "model": result.model,
                "model_said": result.last_raw,
                "suggestion": suggestion,
                "reason": reason,
            },
            assignees=request.assignees,
            call_input=_model_input(request, result),
            meta=_model_meta(request, result, human_exit=True),
        )

    def ask_human(
        self,
        call: NextCall,
        question: str,
        output: type[BaseModel],
        context: Any,
        assignees: list[str] | None,
    ) -> Any:
        if call.recorded is not None:
            return tasks.collect(self._journal, output, call.recorded)
        described = describe_args(context)
        tasks.open_task(
            self._journal,
            call,
            question,
            output,
            context=described,
            assignees=assignees,
            call_input={"question": question, "context": described},
        )


class _Paused(Exception):
    """The pipeline was read paused in the transaction that would start a call."""


def _may_have_a_card(started: CallRecord) -> bool:
    """Could a person have approved this call (so its card shows the outcome)? Only a gated
    tool's; an ungated one is never looked up, keeping the hot path one write."""
    tool = lookup_tool(started.name)
    return tool is None or tool.gated


def _step_input(args: tuple[Any, ...]) -> Any:
    return describe_args(list(args)) if args else None


def _model_input(request: ModelRequest, result: LLMResult) -> dict[str, Any]:
    return {
        "task": request.task,
        "model": result.model,
        "system": result.system,
        "prompt": request.prompt,
        "min_confidence": request.min_confidence,
        "max_attempts": request.max_attempts,
    }


def _model_meta(
    request: ModelRequest,
    result: LLMResult,
    *,
    answered_by: str | None = None,
    human_exit: bool = False,
) -> dict[str, Any]:
    meta = result.meta()
    # Read by the drift rules (pipelines.operations.drift): the human exit, and which output fields are
    # categorical (their values are in the recorded output).
    meta["human_exit"] = human_exit
    if categorical := categorical_fields(request.output):
        meta["categorical"] = list(categorical)
    if answered_by is not None:
        meta["answered_by"] = answered_by
    return meta
