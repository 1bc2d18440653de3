"""`replay`: re-execute a run's pipeline (today's code) on its recorded input, with no side effects.

Recorded results are reused; a tool call the record lacks is reported as "would call" and never
executed; the first point where today's code diverges from the record is shown. Nothing is
written to the database: the replay's journal is read-only (`ReadOnlyJournal`), and its
executor reports where the live one would run and record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pydantic import BaseModel, TypeAdapter, ValidationError

from pipelines import sensitive
from pipelines.authorization import authorize_operator
from pipelines.context import Context, ModelRequest
from pipelines.errors import GatehouseError, StepFailed
from pipelines.journal import CallRecord, Journal, NextCall, ReadOnlyJournal, record_value
from pipelines.llm import LLMResult, diff_outputs
from pipelines.pipeline import get_pipeline
from pipelines.pruned import missing_run
from pipelines.runtime import Runtime
from pipelines.tools import Tool
from pipelines.validation import format_validation_errors
from pipelines.validator import Judgement, Validator
from pipelines.validator import call_name as validator_call_name
from storage import calls as call_rows
from storage import runs as run_rows
from storage.models import FINISHED_RUN_STATUSES, CallKind, CallStatus
from storage.rows import RunRow


class _StopReplay(BaseException):
    pass


@dataclass
class ReplayLine:
    position: int
    kind: str
    key: str
    outcome: str
    detail: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "kind": self.kind,
            "key": self.key,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass
class ReplayReport:
    run_id: str
    pipeline: str
    recorded_status: str
    recorded_output: Any
    lines: list[ReplayLine] = field(default_factory=list)
    would_call: list[dict[str, Any]] = field(default_factory=list)
    divergence: str | None = None
    finished: bool = False
    output: Any = None
    error: str | None = None
    calls_made: int = 0  # how far today's code got (the calls it reached, stop included)
    recorded_calls: int = 0
    ran: bool = False  # today's pipeline function was called (its input still fits)

    @property
    def output_matches(self) -> bool | None:
        return self.output == self.recorded_output if self.finished else None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "recorded_status": self.recorded_status,
            "recorded_output": self.recorded_output,
            "calls": [line.to_json() for line in self.lines],
            "would_call": self.would_call,
            "divergence": self.divergence,
            "finished": self.finished,
            "output": self.output,
            "output_matches": self.output_matches,
            "error": self.error,
            "calls_made": self.calls_made,
            "recorded_calls": self.recorded_calls,
        }


class ReplayExecutor:
    """A replay's executor: reports each call against the record and never writes or runs a
    tool; the first call it cannot answer without a side effect stops the replay."""

    def __init__(
        self, runtime: Runtime, journal: Journal, report: ReplayReport, *, fresh: bool
    ) -> None:
        self._rt = runtime
        self._journal = journal
        self.report = report
        self.fresh = fresh

    def _line(self, call: NextCall, outcome: str, detail: Any) -> ReplayLine:
        line = ReplayLine(call.position, call.kind.value, call.key, outcome, detail)
        self.report.lines.append(line)
        return line

    def _stop(self, call: NextCall, outcome: str, detail: Any) -> NoReturn:
        self._line(call, outcome, detail)
        raise _StopReplay

    def diverged(self, call: NextCall, recorded: CallRecord) -> NoReturn:
        """Report the first difference from the record and stop, instead of failing a run."""
        self.report.divergence = (
            f"call {call.position}: the record has {recorded.kind} {recorded.key!r}, "
            f"today's code calls {call.kind} {call.key!r}"
        )
        self._stop(call, "diverged", self.report.divergence)

    def reused(self, call: NextCall, outcome: str, detail: Any) -> None:
        self._line(call, outcome, detail)

    def step(
        self,
        call: NextCall,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        adapter: TypeAdapter[Any] | None,
    ) -> Any:
        try:
            result = fn(*args)
        except Exception as exc:
            self._line(call, "ran (not in the record): failed", str(exc))
            raise StepFailed(call.name, f"{type(exc).__name__}: {exc}") from exc
        output = record_value(result, f"step {call.name!r}")
        self._line(call, "ran (not in the record)", output)
        return result if adapter is not None else output

    def validate(self, tool: Tool, rule: Validator, args_json: Any) -> None:
        """Its verdict is the call before the tool's: shown as recorded, never asked again."""
        call = self._journal.next(CallKind.LLM, validator_call_name(tool.name))
        if (verdict := call.recorded) is not None:
            failed = verdict.status != CallStatus.SUCCEEDED
            self._line(
                call,
                "reused (failed)" if failed else "reused",
                verdict.error if failed else verdict.output,
            )

    def tool(
        self,
        call: NextCall,
        tool: Tool,
        args: BaseModel,
        args_json: Any,
        judgement: Judgement | None,
    ) -> NoReturn:
        self.report.would_call.append({"tool": tool.name, "kind": tool.kind, "args": args_json})
        self._stop(call, "would call", {"tool": tool.name, "args": args_json})

    def reused_answer(self, call: NextCall, request: ModelRequest, recorded: CallRecord) -> None:
        """With `fresh`, also ask the model again and report how the new answer differs (the
        replay goes on with the recorded one, to follow the record)."""
        fresh = request.send(self._rt) if self.fresh else None
        if recorded.status == CallStatus.SUCCEEDED:
            line = self._line(call, "reused", recorded.output)
            if fresh is not None:
                line.outcome, line.detail = _compare_fresh(recorded.output, fresh)
            return
        line = self._line(call, "reused (failed)", recorded.error)
        if fresh is not None:
            line.outcome, line.detail = _compare_fresh(None, fresh)
            if line.outcome == "fresh: differs" and fresh.value is not None:
                fresh_value = fresh.value.model_dump(mode="json")
                line.detail = {"recorded": f"failed: {recorded.error}", "fresh": fresh_value}

    def collect_answer(self, call: NextCall, request: ModelRequest, recorded: CallRecord) -> Any:
        if self.fresh:
            fresh = request.send(self._rt)
            if fresh.failure is None and fresh.value is not None:
                self.answered(call, request, fresh)
                return fresh.value
        self._stop(call, "would ask a human", request.prompt)

    def ask_model(self, call: NextCall, request: ModelRequest) -> LLMResult:
        if not self.fresh:
            self._stop(call, "would call the model", request.prompt)
        return request.send(self._rt)

    def answered(self, call: NextCall, request: ModelRequest, result: LLMResult) -> None:
        assert result.value is not None
        self._line(call, "fresh (not in the record)", result.value.model_dump(mode="json"))

    def cannot_answer(
        self, call: NextCall, request: ModelRequest, result: LLMResult, message: str
    ) -> NoReturn:
        self._stop(call, "would call the model", request.prompt)

    def human_exit(
        self, call: NextCall, request: ModelRequest, result: LLMResult, reason: str
    ) -> NoReturn:
        self._stop(call, "would call the model", request.prompt)

    def ask_human(
        self,
        call: NextCall,
        question: str,
        output: type[BaseModel],
        context: Any,
        assignees: list[str] | None,
    ) -> NoReturn:
        self._stop(call, "would ask a human", question)


def _compare_fresh(recorded: Any, fresh: LLMResult) -> tuple[str, Any]:
    if fresh.value is None or fresh.failure is not None:
        return "fresh: no usable answer", {"recorded": recorded, "fresh": fresh.reason}
    # Sealed values differ on every dump (a fresh IV): compared as ••••, a sensitive field
    # never shows up as a difference, nor in clear.
    recorded = sensitive.mask(recorded)
    differences = diff_outputs(recorded, sensitive.mask(fresh.value.model_dump(mode="json")))
    if not differences:
        return "fresh: same", recorded
    return "fresh: differs", differences


def replay(
    rt: Runtime, run_id: str, *, fresh: bool = False, user: str | None = None
) -> ReplayReport:
    """`user`: who asks (checked against the operators); None for a local operator (the CLI).

    The report shows sensitive values as a view does: sealed ones as ••••, and the plain values
    the replay opened scrubbed from what today's code produced (step results, errors)."""
    authorize_operator(rt, user, "replay", run_id, run_id=run_id)
    with rt.db.transaction() as conn:
        run = run_rows.fetch_run(conn, run_id)
        if run is None:
            raise missing_run(conn, run_id)
        recorded = call_rows.recorded_calls(conn, run_id)
    get_pipeline(run.pipeline)  # one run: an unknown pipeline is an error, not a report
    return replay_recorded(rt, run, recorded, fresh=fresh)


def replay_recorded(
    rt: Runtime, run: RunRow, recorded: list[CallRecord], *, fresh: bool = False
) -> ReplayReport:
    """`replay` of a run already read with its record (a replay check reads many at once);
    the caller has checked who asks."""
    with sensitive.tracking():
        report = _replay(rt, run, recorded, fresh=fresh)
        for line in report.lines:
            line.detail = sensitive.mask(sensitive.scrub(line.detail))
        report.would_call = sensitive.mask(sensitive.scrub(report.would_call))
        report.recorded_output = sensitive.mask(report.recorded_output)
        report.output = sensitive.mask(sensitive.scrub(report.output))
        report.error = sensitive.scrub(report.error)
        report.divergence = sensitive.scrub(report.divergence)
    return report


def _replay(
    rt: Runtime, run: RunRow, recorded: list[CallRecord], *, fresh: bool = False
) -> ReplayReport:
    report = ReplayReport(run.id, run.pipeline, run.status, run.output)
    report.recorded_calls = len(recorded)
    try:
        pipeline = get_pipeline(run.pipeline)
    except GatehouseError as exc:
        report.error = str(exc)
        return report
    try:
        model = pipeline.input_model.model_validate(run.input)
    except ValidationError as exc:
        report.error = f"the recorded input no longer fits {run.pipeline}'s input model: {format_validation_errors(exc)}"
        return report
    journal = ReadOnlyJournal(
        rt,
        run_id=run.id,
        pipeline=run.pipeline,
        trigger_user=run.trigger_user,
        recorded=recorded,
        on_divergence=lambda call, was: executor.diverged(call, was),
    )
    journal.record_closed = run.status in FINISHED_RUN_STATUSES
    executor = ReplayExecutor(rt, journal, report, fresh=fresh)
    ctx = Context(rt, journal, executor)
    report.ran = True
    try:
        result = pipeline.fn(ctx, model)
    except _StopReplay:
        return report
    except GatehouseError as exc:
        report.error = str(exc)
        return report
    except Exception as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        return report
    finally:
        report.calls_made = ctx.calls_made
    report.finished = True
    report.output = record_value(result, f"pipeline {run.pipeline!r}")
    if ctx.calls_made < len(recorded):
        extra = recorded[ctx.calls_made]
        report.divergence = (
            f"today's code finished after {ctx.calls_made} calls; the record goes on with "
            f"{extra.kind} {extra.key!r} ({len(recorded)} calls in all)"
        )
    return report
