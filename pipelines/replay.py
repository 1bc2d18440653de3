"""`replay`: re-execute a run's pipeline (today's code) on its recorded input, with no side effects.

Recorded results are reused; a tool call the record lacks is reported as "would call" and never
executed; the first point where today's code diverges from the record is shown. Nothing is
written to the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar, cast

from pydantic import BaseModel, ValidationError

from pipelines import sensitive
from pipelines.authorization import authorize_operator
from pipelines.context import Context, _return_adapter, record_value
from pipelines.errors import (
    ActionRejected,
    CannotAnswer,
    GatehouseError,
    StepFailed,
    ToolFailed,
    UnknownRun,
)
from pipelines.llm import LLMResult, diff_outputs
from pipelines.pipeline import get_pipeline
from pipelines.runtime import Runtime
from pipelines.tools import Tool
from pipelines.validation import format_validation_errors
from pipelines.validator import Validator
from pipelines.validator import call_name as validator_call_name
from storage import calls as call_rows
from storage import runs as run_rows
from storage.models import CallKind, CallStatus

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


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
        }


class ReplayContext(Context):
    """A context that never writes and never runs a tool."""

    def __init__(
        self, runtime: Runtime, report: ReplayReport, *, fresh: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(runtime, **kwargs)
        self.report = report
        self.fresh = fresh

    def _diverged(self, seq: int, kind: CallKind, key: str, recorded: Any) -> NoReturn:
        """Report the first difference from the record and stop, instead of failing a run."""
        self.report.divergence = (
            f"call {seq + 1}: the record has {recorded.kind} {recorded.key!r}, "
            f"today's code calls {kind} {key!r}"
        )
        self.report.lines.append(ReplayLine(seq + 1, kind, key, "diverged", self.report.divergence))
        raise _StopReplay

    def step(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        seq, key, recorded = self._next(CallKind.STEP, name)
        if recorded is not None and recorded.status == CallStatus.SUCCEEDED:
            self.report.lines.append(ReplayLine(seq + 1, "step", key, "reused", recorded.output))
            adapter = _return_adapter(fn)
            value = adapter.validate_python(recorded.output) if adapter else recorded.output
            return cast(T, value)
        if recorded is not None and recorded.status == CallStatus.FAILED:
            self.report.lines.append(
                ReplayLine(seq + 1, "step", key, "reused (failed)", recorded.error)
            )
            raise StepFailed(name, recorded.error or "")
        try:
            result = fn(*args)
        except Exception as exc:
            self.report.lines.append(
                ReplayLine(seq + 1, "step", key, "ran (not in the record): failed", str(exc))
            )
            raise StepFailed(name, f"{type(exc).__name__}: {exc}") from exc
        output = record_value(result, f"step {name!r}")
        self.report.lines.append(
            ReplayLine(seq + 1, "step", key, "ran (not in the record)", output)
        )
        return result if _return_adapter(fn) is not None else cast(T, output)

    def tool(self, tool: Tool, args: Any) -> Any:
        checked = tool.coerce_args(args)
        if isinstance(tool.approval, Validator):  # its verdict is the call before the tool's
            vseq, vkey, verdict = self._next(CallKind.LLM, validator_call_name(tool.name))
            if verdict is not None:
                failed = verdict.status != CallStatus.SUCCEEDED
                self.report.lines.append(
                    ReplayLine(
                        vseq + 1,
                        "llm",
                        vkey,
                        "reused (failed)" if failed else "reused",
                        verdict.error if failed else verdict.output,
                    )
                )
        seq, key, recorded = self._next(CallKind.TOOL, tool.name)
        args_json = checked.model_dump(mode="json")
        if recorded is not None:
            if recorded.status == CallStatus.SUCCEEDED:
                self.report.lines.append(
                    ReplayLine(seq + 1, "tool", key, "reused", recorded.output)
                )
                return tool.result_adapter.validate_python(recorded.output)
            if recorded.status == CallStatus.FAILED:
                self.report.lines.append(
                    ReplayLine(seq + 1, "tool", key, "reused (failed)", recorded.error)
                )
                raise ToolFailed(tool.name, recorded.error or "")
            if recorded.status == CallStatus.REJECTED:
                self.report.lines.append(
                    ReplayLine(seq + 1, "tool", key, "reused (rejected)", recorded.error)
                )
                raise ActionRejected(tool.name, recorded.error or "rejected")
        self.report.would_call.append({"tool": tool.name, "kind": tool.kind, "args": args_json})
        self.report.lines.append(
            ReplayLine(seq + 1, "tool", key, "would call", {"tool": tool.name, "args": args_json})
        )
        raise _StopReplay

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
        """Reuse the recorded answer; with `fresh`, also ask the model again and report how the
        new answer differs (the replay goes on with the recorded one, to follow the record)."""
        seq, key, recorded = self._next(CallKind.LLM, name)
        fresh_result = None
        if self.fresh:
            fresh_result = self._rt.llm.call(
                task=task,
                prompt=prompt,
                output=output,
                system=system,
                model=model,
                min_confidence=min_confidence,
                max_attempts=max_attempts,
            )
        if recorded is not None and recorded.status == CallStatus.SUCCEEDED:
            line = ReplayLine(seq + 1, "llm", key, "reused", recorded.output)
            if fresh_result is not None:
                line.outcome, line.detail = _compare_fresh(recorded.output, fresh_result)
            self.report.lines.append(line)
            return output.model_validate(recorded.output)
        if recorded is not None and recorded.status == CallStatus.FAILED:
            line = ReplayLine(seq + 1, "llm", key, "reused (failed)", recorded.error)
            if fresh_result is not None:
                line.outcome, line.detail = _compare_fresh(None, fresh_result)
                if line.outcome == "fresh: differs" and fresh_result.value is not None:
                    fresh_value = fresh_result.value.model_dump(mode="json")
                    line.detail = {"recorded": f"failed: {recorded.error}", "fresh": fresh_value}
            self.report.lines.append(line)
            raise CannotAnswer(recorded.error or f"{name}: no usable answer")
        if (
            fresh_result is not None
            and fresh_result.value is not None
            and fresh_result.failure is None
        ):
            value = fresh_result.value.model_dump(mode="json")
            self.report.lines.append(
                ReplayLine(seq + 1, "llm", key, "fresh (not in the record)", value)
            )
            return cast(M, fresh_result.value)
        outcome = "would ask a human" if recorded is not None else "would call the model"
        self.report.lines.append(ReplayLine(seq + 1, "llm", key, outcome, prompt))
        raise _StopReplay

    def ask_human(
        self,
        name: str,
        question: str,
        output: type[M],
        *,
        context: Any = None,
        assignees: list[str] | None = None,
    ) -> M:
        seq, key, recorded = self._next(CallKind.HUMAN, name)
        if recorded is not None and recorded.status == CallStatus.SUCCEEDED:
            self.report.lines.append(ReplayLine(seq + 1, "human", key, "reused", recorded.output))
            return output.model_validate(recorded.output)
        self.report.lines.append(ReplayLine(seq + 1, "human", key, "would ask a human", question))
        raise _StopReplay


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
    with sensitive.tracking():
        report = _replay(rt, run_id, fresh=fresh, user=user)
        for line in report.lines:
            line.detail = sensitive.mask(sensitive.scrub(line.detail))
        report.would_call = sensitive.mask(sensitive.scrub(report.would_call))
        report.recorded_output = sensitive.mask(report.recorded_output)
        report.output = sensitive.mask(sensitive.scrub(report.output))
        report.error = sensitive.scrub(report.error)
        report.divergence = sensitive.scrub(report.divergence)
    return report


def _replay(
    rt: Runtime, run_id: str, *, fresh: bool = False, user: str | None = None
) -> ReplayReport:
    authorize_operator(rt, user, "replay", run_id, run_id=run_id)
    with rt.db.transaction() as conn:
        run = run_rows.fetch_run(conn, run_id)
        if run is None:
            raise UnknownRun(f"no run {run_id}; `gatehouse runs` lists recent runs")
        recorded = call_rows.recorded_calls(conn, run_id)
    report = ReplayReport(run_id, run.pipeline, run.status, run.output)
    pipeline = get_pipeline(run.pipeline)
    try:
        model = pipeline.input_model.model_validate(run.input)
    except ValidationError as exc:
        report.error = f"the recorded input no longer fits {run.pipeline}'s input model: {format_validation_errors(exc)}"
        return report
    ctx = ReplayContext(
        rt,
        report,
        fresh=fresh,
        run_id=run_id,
        pipeline=run.pipeline,
        trigger_user=run.trigger_user,
        recorded=recorded,
    )
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
    report.finished = True
    report.output = record_value(result, f"pipeline {run.pipeline!r}")
    if ctx.calls_made < len(recorded):
        extra = recorded[ctx.calls_made]
        report.divergence = (
            f"today's code finished after {ctx.calls_made} calls; the record goes on with "
            f"{extra.kind} {extra.key!r} ({len(recorded)} calls in all)"
        )
    return report
