"""`Context`: the `ctx` a pipeline receives. Every call is recorded under a stable key, so a
resumed run re-executes the function from the top and completed calls return their recorded
results instead of running again.

A call that must wait (approval, human, rate-limit window) writes what it waits for and moves
the run to `waiting` in one transaction, then raises `Suspend`: no thread is held, and a decision
arriving a millisecond later finds the run already waiting.
"""

from __future__ import annotations

import functools
import time
import typing
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, TypeVar, cast

import structlog
from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticSerializationError, to_jsonable_python
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from pipelines import sensitive
from pipelines import validator as validation
from pipelines.categorical import categorical_fields
from pipelines.errors import (
    ActionRejected,
    CancelRun,
    CannotAnswer,
    LostClaim,
    NeedsAttention,
    PipelineChanged,
    StepFailed,
    Suspend,
    ToolFailed,
)
from pipelines.llm import TASKS, LLMConfigurationError, has_confidence
from pipelines.runtime import Runtime
from pipelines.tools import Tool
from pipelines.views import ApprovalView, TaskView
from storage import approvals as approval_rows
from storage import calls as call_rows
from storage import runs as run_rows
from storage.audit import append_audit
from storage.calls import CallRecord
from storage.db import Database
from storage.fastsql import driver_transaction
from storage.ids import new_id
from storage.models import ApprovalStatus, CallKind, CallStatus, RunStatus, TaskStatus

log = structlog.get_logger()
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def describe_args(value: Any) -> Any:
    """Best-effort JSON for display (call inputs); never fails."""
    return to_jsonable_python(value, fallback=repr)


def record_value(value: Any, what: str) -> Any:
    """JSON for a value a replay must get back exactly; refuses what cannot round-trip."""
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise TypeError(
            f"{what} returned a {type(value).__name__}, which cannot be recorded; "
            "return JSON-compatible values or pydantic models"
        ) from exc


@functools.lru_cache(maxsize=1024)
def _return_adapter(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    if "return" not in hints or hints["return"] is Any:
        return None
    return TypeAdapter(hints["return"])


def model_path(model: type[BaseModel]) -> str:
    if "<locals>" in model.__qualname__:
        raise TypeError(
            f"{model.__qualname__} is defined inside a function; define human-task output "
            "models at module level so an answer can be validated by another process"
        )
    return f"{model.__module__}:{model.__qualname__}"


def check_llm_args(
    task: str,
    output: type[BaseModel],
    on_fail: str,
    max_attempts: int,
    min_confidence: float | None,
) -> None:
    """A `ctx.llm` call the engine can't honour fails at the call, the same in a run, a replay
    and an eval."""
    if task not in TASKS:
        raise ValueError(f"ctx.llm task={task!r}: use one of {', '.join(TASKS)}")
    if on_fail not in ("human", "raise"):
        raise ValueError(f"ctx.llm on_fail={on_fail!r}: use 'human' or 'raise'")
    if max_attempts < 1:
        raise ValueError("ctx.llm max_attempts must be at least 1")
    if min_confidence is not None and not has_confidence(output):
        raise TypeError(
            f"ctx.llm min_confidence needs a `confidence: float` field in {output.__name__}"
        )


class Context:
    """The live context: records every call and runs what the record does not have yet."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        run_id: str,
        pipeline: str,
        trigger_user: str | None,
        recorded: list[CallRecord],
        conn: Connection | None = None,
    ) -> None:
        self.run_id = run_id
        self._conn = conn
        self.pipeline = pipeline
        self.trigger_user = trigger_user
        self._rt = runtime
        self._recorded = recorded
        self._seq = 0
        self._name_counts: dict[str, int] = {}

    # -- keys and the record ------------------------------------------------------------

    @property
    def calls_made(self) -> int:
        return self._seq

    @property
    def recorded_count(self) -> int:
        return len(self._recorded)

    def _next(self, kind: CallKind, name: str) -> tuple[int, str, CallRecord | None]:
        seq = self._seq
        self._seq += 1
        count = self._name_counts.get(name, 0) + 1
        self._name_counts[name] = count
        key = f"{name}#{count}"
        recorded = self._recorded[seq] if seq < len(self._recorded) else None
        if recorded is not None and (recorded.kind != kind or recorded.key != key):
            self._diverged(seq, kind, key, recorded)
        return seq, key, recorded

    def _diverged(
        self, seq: int, kind: CallKind, key: str, recorded: CallRecord
    ) -> typing.NoReturn:
        """Today's code makes a different call than the record at this position."""
        raise PipelineChanged(
            f"pipeline changed under a running run: call {seq + 1} of run {self.run_id} was "
            f"recorded as {recorded.kind} {recorded.key!r} but today's code calls {kind} "
            f"{key!r}; finish or cancel runs started with the old code before changing a "
            "pipeline's call sequence (`gatehouse replay RUN_ID` shows the difference)"
        )

    def _suspend_run(
        self, conn: Connection, now: datetime, reason: str, wake_at: datetime | None = None
    ) -> None:
        moved = run_rows.transition(
            conn,
            self.run_id,
            from_statuses=[RunStatus.RUNNING],
            to_status=RunStatus.WAITING,
            now=now,
            claimed_by=self._rt.worker_id,
            detail=reason,
            wake_at=wake_at,
        )
        if not moved:
            raise LostClaim(self.run_id)

    def _transaction(self) -> AbstractContextManager[Connection]:
        """One transaction, on the run's held connection when there is one."""
        if self._conn is not None:
            return Database.transaction_on(self._conn)
        return self._rt.db.transaction()

    def _fast_transaction(self) -> AbstractContextManager[Connection]:
        """For writes made only through `storage.fastsql` (step records, tool outcomes)."""
        if self._conn is not None:
            return driver_transaction(self._conn)
        return self._rt.db.transaction()

    # -- ctx.step --------------------------------------------------------------------------

    def step(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """Run deterministic code once and record its result; replays return the record."""
        seq, key, recorded = self._next(CallKind.STEP, name)
        adapter = _return_adapter(fn)
        if recorded is not None:
            if recorded.status == CallStatus.SUCCEEDED:
                value = recorded.output
                return cast(T, adapter.validate_python(value) if adapter is not None else value)
            if recorded.status == CallStatus.FAILED:
                raise StepFailed(name, recorded.error or "")
        started_at = self._rt.clock.now()
        try:
            result = fn(*args)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._record_step(seq, key, name, args, started_at, CallStatus.FAILED, None, error)
            raise StepFailed(name, error) from exc
        output = record_value(result, f"step {name!r}")
        self._record_step(seq, key, name, args, started_at, CallStatus.SUCCEEDED, output, None)
        return result if adapter is not None else cast(T, output)

    def _record_step(
        self,
        seq: int,
        key: str,
        name: str,
        args: tuple[Any, ...],
        started_at: datetime,
        status: CallStatus,
        output: Any,
        error: str | None,
    ) -> None:
        call_input = describe_args(list(args)) if args else None
        self._record_finished(
            seq, key, CallKind.STEP, name, call_input, started_at, status, output, error
        )

    def _record_finished(
        self,
        seq: int,
        key: str,
        kind: CallKind,
        name: str,
        call_input: Any,
        started_at: datetime,
        status: CallStatus,
        output: Any,
        error: str | None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """One write for a call that is over by the time it is recorded (a step, a model call)."""
        # Free text (a prompt, step arguments, the model's raw answers, an error) may quote a
        # sensitive value; the output is a model dump, sealed already, and must round-trip.
        call_input, error, meta = sensitive.scrub((call_input, error, meta))
        try:
            with self._fast_transaction() as conn:
                call_rows.insert_call(
                    conn,
                    CallRecord(
                        id=new_id("call"),
                        run_id=self.run_id,
                        seq=seq,
                        key=key,
                        kind=kind,
                        name=name,
                        status=status,
                        input=call_input,
                        output=output,
                        error=error,
                        started_at=started_at,
                        finished_at=self._rt.clock.now(),
                        meta=meta,
                    ),
                )
        except IntegrityError as exc:  # another worker recorded this position: it owns the run
            raise LostClaim(self.run_id) from exc

    # -- ctx.tool --------------------------------------------------------------------------

    def tool(self, tool: Tool, args: Any) -> Any:
        """Call a tool through its gates: approval, rate limit, at-most-once execution."""
        if not isinstance(tool, Tool):
            raise TypeError(f"ctx.tool() takes a @tool-declared function, got {tool!r}")
        checked = tool.coerce_args(args)
        args_json = checked.model_dump(mode="json")
        judgement = None
        if isinstance(tool.approval, validation.Validator):
            # Its own recorded call, just before the tool's: replays read the verdict.
            judgement = self._validate(tool, tool.approval, args_json)
        seq, key, recorded = self._next(CallKind.TOOL, tool.name)
        idempotency_key = f"{self.run_id}:{key}"
        if recorded is None:
            call_id = new_id("call")
            if judgement is not None:
                if judgement.outcome == "reject":
                    self._reject_by_validator(tool, judgement, call_id, seq, key, args_json)
                if judgement.outcome == "human":
                    self._request_approval(
                        tool, call_id, seq, key, args_json, idempotency_key, judgement
                    )
            elif tool.needs_approval(checked):
                self._request_approval(tool, call_id, seq, key, args_json, idempotency_key)
            return self._start_and_execute(
                tool,
                checked,
                call_id,
                seq,
                key,
                args_json,
                idempotency_key,
                fresh=True,
                validated=judgement,
            )

        call_id = recorded.id
        status = recorded.status
        if status == CallStatus.SUCCEEDED:
            return tool.result_adapter.validate_python(recorded.output)
        if status == CallStatus.FAILED:
            raise ToolFailed(tool.name, recorded.error or "")
        if status == CallStatus.REJECTED:
            raise ActionRejected(tool.name, recorded.error or "rejected")
        if status == CallStatus.AWAITING_APPROVAL:
            self._settle_approval(tool, call_id)
        elif status == CallStatus.STARTED:
            return self._recover_started(tool, checked, recorded, idempotency_key)
        elif status == CallStatus.OUTCOME_UNKNOWN:
            raise NeedsAttention(recorded.error or f"the outcome of {tool.name} is unknown")
        return self._start_and_execute(
            tool, checked, call_id, seq, key, args_json, idempotency_key, fresh=False
        )

    def _request_approval(
        self,
        tool: Tool,
        call_id: str,
        seq: int,
        key: str,
        args_json: Any,
        idempotency_key: str,
        judgement: validation.Judgement | None = None,
    ) -> typing.NoReturn:
        now = self._rt.clock.now()
        approval_id = new_id("approval")
        with self._transaction() as conn:
            call_rows.insert_call(
                conn,
                CallRecord(
                    id=call_id,
                    run_id=self.run_id,
                    seq=seq,
                    key=key,
                    kind=CallKind.TOOL,
                    name=tool.name,
                    status=CallStatus.AWAITING_APPROVAL,
                    input=args_json,
                    idempotency_key=idempotency_key,
                    started_at=now,
                ),
            )
            values = {
                "id": approval_id,
                "run_id": self.run_id,
                "call_id": call_id,
                "call_key": key,
                "tool": tool.name,
                "tool_kind": tool.kind,
                "args": args_json,
                "approvers": list(tool.approvers),
                "four_eyes": tool.four_eyes,
                "trigger_user": self.trigger_user,
                "status": ApprovalStatus.PENDING,
                "requested_at": now,
                "expires_at": now + tool.expires if tool.expires is not None else None,
                "validator": judgement.to_json() if judgement is not None else None,
            }
            approval_rows.insert_approval(conn, **values)
            append_audit(
                conn,
                event="approval.requested",
                at=now,
                actor=self.trigger_user,
                run_id=self.run_id,
                call_id=call_id,
                tool=tool.name,
                approval_id=approval_id,
                idempotency_key=idempotency_key,
                detail={
                    "args": args_json,
                    **({"validator": values["validator"]} if judgement else {}),
                },
            )
            self._suspend_run(conn, now, f"approval {approval_id}")
            self._rt.enqueue(conn, "approval_requested", approval_id, now)
        view = ApprovalView.of(
            _Record(values, decided_by=None, decided_at=None, reason=None), pipeline=self.pipeline
        )
        log.info("approval.requested", run_id=self.run_id, approval_id=approval_id, tool=tool.name)
        self._rt.notify("approval_requested", view)
        raise Suspend(f"waiting for approval {approval_id}", waiting_for=approval_id)

    def _validate(
        self, tool: Tool, rule: validation.Validator, args_json: Any
    ) -> validation.Judgement:
        """The validation model's verdict on this call, recorded as an LLM call of the run just
        before the tool's own; a resume or a replay judges the recorded verdict again."""
        name = validation.call_name(tool.name)
        seq, key, recorded = self._next(CallKind.LLM, name)
        if recorded is not None:
            was = recorded.meta or {}
            if recorded.status == CallStatus.SUCCEEDED:
                verdict = validation.ValidatorVerdict.model_validate(recorded.output)
                return validation.judge(rule, model=was.get("model"), verdict=verdict)
            return validation.judge(
                rule,
                model=was.get("model"),
                verdict=None,
                failure=was.get("failure"),
                failure_reason=recorded.error,
            )
        started_at = self._rt.clock.now()
        with self._transaction() as conn:
            run = run_rows.fetch_run(conn, self.run_id)
            earlier = [
                (str(c.kind), str(c.name), c.output)
                for c in call_rows.recorded_calls(conn, self.run_id)
                if c.seq is not None and c.seq < seq
            ]
        prompt = validation.prompt(
            tool_name=tool.name,
            kind=tool.kind,
            description=tool.description,
            args=args_json,
            pipeline=self.pipeline,
            run_input=run.input if run is not None else None,
            earlier=earlier,
        )
        system = validation.system_text(rule)
        call_input = {
            "task": validation.VALIDATOR_TASK,
            "model": rule.model or self._rt.llm.config.model,
            "system": system,
            "prompt": prompt,
            "min_confidence": rule.min_confidence,
            "max_attempts": 2,
            "validates": tool.name,
        }
        try:
            result = self._rt.llm.call(
                task=validation.VALIDATOR_TASK,
                prompt=prompt,
                output=validation.ValidatorVerdict,
                system=system,
                model=rule.model,
                max_attempts=2,
            )
        except LLMConfigurationError as exc:
            # The gate stays closed either way: a person (or `then="reject"`) decides instead.
            reason = str(exc)
            meta: dict[str, Any] = {
                "model": call_input["model"],
                "failure": "model_error",
                "reason": reason,
                "validator": True,
            }
            self._record_finished(
                seq,
                key,
                CallKind.LLM,
                name,
                call_input,
                started_at,
                CallStatus.FAILED,
                None,
                reason,
                meta,
            )
            return validation.judge(
                rule,
                model=meta["model"],
                verdict=None,
                failure="model_error",
                failure_reason=reason,
            )
        meta = {**result.meta(), "validator": True}
        call_input["model"] = result.model
        log.info(
            "validator.called",
            run_id=self.run_id,
            call=key,
            model=result.model,
            failure=result.failure,
            latency_ms=result.latency_ms,
        )
        value = result.value
        if result.failure is None and isinstance(value, validation.ValidatorVerdict):
            meta["answered_by"] = "model"
            output = sensitive.scrub(value.model_dump(mode="json"))
            self._record_finished(
                seq,
                key,
                CallKind.LLM,
                name,
                call_input,
                started_at,
                CallStatus.SUCCEEDED,
                output,
                None,
                meta,
            )
            verdict = validation.ValidatorVerdict.model_validate(output)
            return validation.judge(rule, model=result.model, verdict=verdict)
        reason = result.reason or "no usable verdict"
        self._record_finished(
            seq,
            key,
            CallKind.LLM,
            name,
            call_input,
            started_at,
            CallStatus.FAILED,
            None,
            reason,
            meta,
        )
        return validation.judge(
            rule, model=result.model, verdict=None, failure=result.failure, failure_reason=reason
        )

    def _reject_by_validator(
        self,
        tool: Tool,
        judgement: validation.Judgement,
        call_id: str,
        seq: int,
        key: str,
        args_json: Any,
    ) -> typing.NoReturn:
        """The validator said no (or could not say, with `then="reject"`): the call is recorded
        rejected, as a person's rejection would be, and the pipeline gets `ActionRejected`."""
        now = self._rt.clock.now()
        reason = f"rejected by {judgement.actor}: {judgement.reason}"
        if judgement.outcome == "reject" and (
            judgement.verdict != "reject" or (judgement.confidence or 0) < judgement.min_confidence
        ):
            reason = f"rejected: {judgement.summary} (the validator's fallback is to reject)"
        reason = sensitive.scrub(reason)
        idempotency_key = f"{self.run_id}:{key}"
        with self._transaction() as conn:
            call_rows.insert_call(
                conn,
                CallRecord(
                    id=call_id,
                    run_id=self.run_id,
                    seq=seq,
                    key=key,
                    kind=CallKind.TOOL,
                    name=tool.name,
                    status=CallStatus.REJECTED,
                    input=args_json,
                    idempotency_key=idempotency_key,
                    started_at=now,
                    finished_at=now,
                    error=reason,
                ),
            )
            append_audit(
                conn,
                event="validator.rejected",
                at=now,
                actor=judgement.actor,
                run_id=self.run_id,
                call_id=call_id,
                tool=tool.name,
                idempotency_key=idempotency_key,
                detail={"decision": reason, **judgement.to_json()},
            )
        log.info("validator.rejected", run_id=self.run_id, tool=tool.name, model=judgement.model)
        raise ActionRejected(tool.name, reason, by=judgement.actor)

    def _settle_approval(self, tool: Tool, call_id: str) -> None:
        """Replaying a call that waited for approval: go on, wait again, or raise the rejection."""
        with self._transaction() as conn:
            approval = approval_rows.approval_for_call(conn, call_id)
            if approval is None:
                raise NeedsAttention(f"tool call {call_id} awaits an approval that does not exist")
            if approval.status == ApprovalStatus.APPROVED:
                return
            now = self._rt.clock.now()
            if approval.status == ApprovalStatus.PENDING:
                self._suspend_run(conn, now, f"approval {approval.id}")
                waiting = approval.id
            else:
                if approval.status == ApprovalStatus.EXPIRED:
                    reason = f"approval {approval.id} expired at {approval.decided_at:%Y-%m-%d %H:%M} UTC without a decision"
                else:
                    reason = f"rejected by {approval.decided_by}: {approval.reason}"
                call_rows.update_call(
                    conn, call_id, status=CallStatus.REJECTED, error=reason, finished_at=now
                )
                waiting = None
        if waiting is not None:
            raise Suspend(f"waiting for approval {waiting}", waiting_for=waiting)
        if approval.status == ApprovalStatus.EXPIRED and tool.on_expiry == "cancel":
            raise CancelRun(reason)
        raise ActionRejected(tool.name, reason, by=approval.decided_by)

    def _start_and_execute(
        self,
        tool: Tool,
        args: BaseModel,
        call_id: str,
        seq: int,
        key: str,
        args_json: Any,
        idempotency_key: str,
        *,
        fresh: bool,
        validated: validation.Judgement | None = None,
    ) -> Any:
        now = self._rt.clock.now()
        rejected: str | None = None
        with self._transaction() as conn:
            if fresh and validated is not None:
                append_audit(
                    conn,
                    event="validator.approved",
                    at=now,
                    actor=validated.actor,
                    run_id=self.run_id,
                    call_id=call_id,
                    tool=tool.name,
                    idempotency_key=idempotency_key,
                    detail={"decision": f"approved by {validated.actor}", **validated.to_json()},
                )
            decision = call_rows.check_rate_limit(
                conn, tool=tool.name, now=now, limit=tool.rate_limit
            )
            if decision.started:
                status = CallStatus.STARTED
                wake_at = None
            elif tool.on_rate_limit == "reject":
                status = CallStatus.REJECTED
                wake_at = None
                rejected = f"rate limit {tool.rate_limit_text} reached ({decision.used} calls in the window)"
            else:
                status = CallStatus.RATE_LIMITED
                wake_at = decision.retry_at
            if fresh:
                call_rows.insert_call(
                    conn,
                    CallRecord(
                        id=call_id,
                        run_id=self.run_id,
                        seq=seq,
                        key=key,
                        kind=CallKind.TOOL,
                        name=tool.name,
                        status=status,
                        input=args_json,
                        idempotency_key=idempotency_key,
                        started_at=now,
                        wake_at=wake_at,
                        error=rejected,
                        finished_at=now if rejected else None,
                    ),
                )
            else:
                call_rows.update_call(
                    conn,
                    call_id,
                    status=status,
                    wake_at=wake_at,
                    error=rejected,
                    finished_at=now if rejected else None,
                )
            if decision.started:
                event, detail = "tool.started", {"args": args_json, "kind": tool.kind}
            elif rejected is not None:
                event, detail = "tool.rate_limited", {"rejected": True, "used": decision.used}
            else:
                event = "tool.rate_limited"
                detail = {
                    "retry_at": wake_at.isoformat() if wake_at else None,
                    "used": decision.used,
                }
            append_audit(
                conn,
                event=event,
                at=now,
                actor=self.trigger_user,
                run_id=self.run_id,
                call_id=call_id,
                tool=tool.name,
                idempotency_key=idempotency_key,
                detail=detail,
            )
            if not decision.started and rejected is None:
                self._suspend_run(conn, now, f"rate limit of {tool.name}", wake_at=wake_at)
        if rejected is not None:
            raise ActionRejected(tool.name, rejected)
        if not decision.started:
            log.info("tool.rate_limited", run_id=self.run_id, tool=tool.name, retry_at=str(wake_at))
            raise Suspend(f"rate limit of {tool.name} until {wake_at}", wake_at=wake_at)
        return self._execute(tool, args, call_id, idempotency_key, now)

    def _execute(
        self, tool: Tool, args: BaseModel, call_id: str, idempotency_key: str, started: datetime
    ) -> Any:
        began = time.perf_counter()
        try:
            result = tool.fn(args, idempotency_key=idempotency_key)
            output = tool.result_adapter.dump_python(result, mode="json")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._finish_tool(tool, call_id, idempotency_key, CallStatus.FAILED, None, error, began)
            raise ToolFailed(tool.name, error) from exc
        self._finish_tool(tool, call_id, idempotency_key, CallStatus.SUCCEEDED, output, None, began)
        return result

    def _finish_tool(
        self,
        tool: Tool,
        call_id: str,
        idempotency_key: str,
        status: CallStatus,
        output: Any,
        error: str | None,
        began: float,
    ) -> None:
        latency_ms = round((time.perf_counter() - began) * 1000, 3)
        error = sensitive.scrub(error)
        now = self._rt.clock.now()
        with self._fast_transaction() as conn:
            call_rows.update_call(
                conn, call_id, status=status, output=output, error=error, finished_at=now
            )
            append_audit(
                conn,
                event="tool.succeeded" if status == CallStatus.SUCCEEDED else "tool.failed",
                at=now,
                actor=self.trigger_user,
                run_id=self.run_id,
                call_id=call_id,
                tool=tool.name,
                idempotency_key=idempotency_key,
                detail={"result": output, "error": error, "latency_ms": latency_ms},
            )
        log.info(
            "tool.finished",
            run_id=self.run_id,
            tool=tool.name,
            status=str(status),
            latency_ms=latency_ms,
        )

    def _recover_started(
        self, tool: Tool, args: BaseModel, recorded: CallRecord, idempotency_key: str
    ) -> Any:
        """A crash left this call `started` with no outcome. Only idempotent tools run again."""
        now = self._rt.clock.now()
        if tool.idempotent:
            with self._transaction() as conn:
                append_audit(
                    conn,
                    event="tool.retried",
                    at=now,
                    run_id=self.run_id,
                    call_id=recorded.id,
                    tool=tool.name,
                    idempotency_key=idempotency_key,
                    detail={"why": "started without an outcome (crash); the tool is idempotent"},
                )
            return self._execute(tool, args, recorded.id, idempotency_key, now)
        error = (
            f"{tool.name} was started at {recorded.started_at:%Y-%m-%d %H:%M:%S} UTC and its outcome "
            f"is unknown (the process stopped mid-call); it is not idempotent, so it was not run "
            f"again. Check whether the effect with idempotency key {idempotency_key} happened."
        )
        with self._transaction() as conn:
            call_rows.update_call(conn, recorded.id, status=CallStatus.OUTCOME_UNKNOWN, error=error)
            append_audit(
                conn,
                event="tool.outcome_unknown",
                at=now,
                run_id=self.run_id,
                call_id=recorded.id,
                tool=tool.name,
                idempotency_key=idempotency_key,
                detail={"error": error},
            )
        raise NeedsAttention(error)

    # -- ctx.ask_human ---------------------------------------------------------------------

    def ask_human(
        self,
        name: str,
        question: str,
        output: type[M],
        *,
        context: Any = None,
        assignees: list[str] | None = None,
    ) -> M:
        """Wait for a person's answer, validated by `output`; the answer becomes the result."""
        seq, key, recorded = self._next(CallKind.HUMAN, name)
        if recorded is not None:
            if recorded.status == CallStatus.SUCCEEDED:
                return output.model_validate(recorded.output)
            return self._collect_answer(output, recorded)
        described = describe_args(context)
        self._open_human_task(
            seq,
            key,
            CallKind.HUMAN,
            name,
            question,
            output,
            context=described,
            assignees=assignees,
            call_input={"question": question, "context": described},
        )

    # -- ctx.llm ---------------------------------------------------------------------------

    def llm(
        self,
        name: str,
        *,
        task: str,
        prompt: str,
        output: type[M],
        system: str | None = None,
        model: str | None = None,
        min_confidence: float | None = None,
        max_attempts: int = 3,
        on_fail: str = "human",
        assignees: list[str] | None = None,
    ) -> M:
        """One scoped model call: `task` (classify, extract, draft, summarize) on `prompt`, parsed
        into `output`. No usable answer (no model, refusal, invalid after `max_attempts`,
        confidence under `min_confidence`, model unreachable) takes the human exit: a task whose
        answer, validated by `output`, becomes the result; or, with `on_fail="raise"`,
        `CannotAnswer`. Replays return the recorded result without calling the model."""
        check_llm_args(task, output, on_fail, max_attempts, min_confidence)
        seq, key, recorded = self._next(CallKind.LLM, name)
        if recorded is not None:
            if recorded.status == CallStatus.SUCCEEDED:
                return output.model_validate(recorded.output)
            if recorded.status == CallStatus.FAILED:
                raise CannotAnswer(recorded.error or f"{name}: no usable answer")
            return self._collect_answer(output, recorded)
        started_at = self._rt.clock.now()
        result = self._rt.llm.call(
            task=task,
            prompt=prompt,
            output=output,
            system=system,
            model=model,
            min_confidence=min_confidence,
            max_attempts=max_attempts,
        )
        call_input = {
            "task": task,
            "model": result.model,
            "system": result.system,
            "prompt": prompt,
            "min_confidence": min_confidence,
            "max_attempts": max_attempts,
        }
        meta = result.meta()
        log.info(
            "llm.called",
            run_id=self.run_id,
            call=key,
            model=result.model,
            failure=result.failure,
            attempts=len(result.attempts),
            latency_ms=result.latency_ms,
        )
        # Read by the drift rules (pipelines.drift): the human exit, and which output fields
        # are categorical (their values are in the recorded output).
        meta["human_exit"] = False
        if categorical := categorical_fields(output):
            meta["categorical"] = list(categorical)
        if result.failure is None and result.value is not None:
            meta["answered_by"] = "model"
            output_json = result.value.model_dump(mode="json")
            self._record_finished(
                seq,
                key,
                CallKind.LLM,
                name,
                call_input,
                started_at,
                CallStatus.SUCCEEDED,
                output_json,
                None,
                meta,
            )
            return cast(M, result.value)
        reason = result.reason or "no usable answer"
        if on_fail == "raise":
            # Recorded as raised: a resume or replay re-raises the recorded text, and the
            # pipeline must see the same message it saw live.
            message = f"{name}: {reason}"
            self._record_finished(
                seq,
                key,
                CallKind.LLM,
                name,
                call_input,
                started_at,
                CallStatus.FAILED,
                None,
                message,
                meta,
            )
            raise CannotAnswer(message)
        meta["human_exit"] = True
        suggestion = result.value.model_dump(mode="json") if result.value is not None else None
        self._open_human_task(
            seq,
            key,
            CallKind.LLM,
            name,
            f"The model could not {task} this: {reason}. Please answer in its place.",
            output,
            context={
                "task": task,
                "input": prompt,
                "model": result.model,
                "model_said": result.last_raw,
                "suggestion": suggestion,
                "reason": reason,
            },
            assignees=assignees,
            call_input=call_input,
            meta=meta,
        )

    # -- human tasks -----------------------------------------------------------------------

    def _open_human_task(
        self,
        seq: int,
        key: str,
        kind: CallKind,
        name: str,
        question: str,
        output: type[BaseModel],
        *,
        context: Any,
        assignees: list[str] | None,
        call_input: Any,
        meta: dict[str, Any] | None = None,
    ) -> typing.NoReturn:
        """Record the call as waiting for a person, open the task, suspend the run."""
        question, context, call_input, meta = sensitive.scrub((question, context, call_input, meta))
        path = model_path(output)
        now = self._rt.clock.now()
        call_id = new_id("call")
        task_id = new_id("task")
        values = {
            "id": task_id,
            "run_id": self.run_id,
            "call_id": call_id,
            "call_key": key,
            "name": name,
            "question": question,
            "output_model": path,
            "output_schema": output.model_json_schema(),
            "context": context,
            "assignees": list(assignees or []),
            "status": TaskStatus.OPEN,
            "opened_at": now,
        }
        with self._transaction() as conn:
            call_rows.insert_call(
                conn,
                CallRecord(
                    id=call_id,
                    run_id=self.run_id,
                    seq=seq,
                    key=key,
                    kind=kind,
                    name=name,
                    status=CallStatus.AWAITING_HUMAN,
                    input=call_input,
                    started_at=now,
                    meta=meta,
                ),
            )
            approval_rows.insert_task(conn, **values)
            append_audit(
                conn,
                event="task.opened",
                at=now,
                run_id=self.run_id,
                call_id=call_id,
                detail={"task_id": task_id},
            )
            self._suspend_run(conn, now, f"human task {task_id}")
            self._rt.enqueue(conn, "task_opened", task_id, now)
        log.info("task.opened", run_id=self.run_id, task_id=task_id, name=name)
        self._rt.notify(
            "task_opened",
            TaskView.of(
                _Record(values, answered_by=None, answered_at=None, answer=None),
                pipeline=self.pipeline,
            ),
        )
        raise Suspend(f"waiting for human task {task_id}", waiting_for=task_id)

    def _collect_answer(self, output: type[M], recorded: CallRecord) -> M:
        now = self._rt.clock.now()
        with self._transaction() as conn:
            task = approval_rows.task_for_call(conn, recorded.id)
            if task is None or task.status != TaskStatus.ANSWERED:
                self._suspend_run(conn, now, f"human task {task.id if task else '?'}")
                waiting = task.id if task is not None else None
            else:
                answer = output.model_validate(task.answer)
                values: dict[str, Any] = {
                    "status": CallStatus.SUCCEEDED,
                    "output": answer.model_dump(mode="json"),
                    "finished_at": now,
                    "error": None,
                }
                if recorded.kind == CallKind.LLM:
                    values["meta"] = {
                        **(recorded.meta or {}),
                        "answered_by": "human",
                        "answered_by_user": task.answered_by,
                    }
                call_rows.update_call(conn, recorded.id, **values)
                return answer
        raise Suspend(f"waiting for human task {waiting}", waiting_for=waiting)


class _Record:
    """Attribute access over a dict, so a view can be built from values just written."""

    def __init__(self, values: dict[str, Any], **extra: Any) -> None:
        self.__dict__.update(values)
        self.__dict__.update(extra)
