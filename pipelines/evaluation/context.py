"""The eval mode of `ctx` (`eval_context`): the same `Context` verbs over a memory-only journal
and the `EvalExecutor`. It runs the pipeline for real, with no side effects.

Why a mode of its own and not the durable runner on a flag: a case is never resumed, so it
needs no record at all, and an eval that writes nothing cannot reach production state, metrics,
alerts or the weekly review (they all read `runs`, `calls` and `audit_log`). So:

- `step` runs the code and keeps the result in memory;
- `tool`: a `read` tool no approval rule stops runs (on the read-only database, see
  `evaluation.readonly`); any other call — `write`, `send`, `spend`, or gated — is never
  executed: it is recorded as "would call TOOL(args)" and the case stops there, unless the tool
  declares `simulate=fn(args) -> result`, on which the pipeline goes on. No approval card, no
  outbox row, no rate-limit count;
- `llm` calls the configured model (that is the point: test prompts and models); the human exit
  (no model, low confidence, no valid answer) ends the case as "needs a human";
- `ask_human` ends the case as "needs a human".

The case's journal is a `MemoryJournal`: positions and keys, no record, and every transaction
it is asked for raises `JournalWriteRefused`; the database handle itself is read-only too. So an
engine path added later that this executor does not handle fails the case, it never writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pydantic import BaseModel, TypeAdapter

from pipelines.context import Context, ModelRequest
from pipelines.errors import StepFailed, ToolFailed
from pipelines.journal import CallRecord, Journal, MemoryJournal, NextCall, record_value
from pipelines.llm import LLMResult
from pipelines.runtime import Runtime
from pipelines.tools import Tool
from pipelines.validator import Judgement, Validator


class CaseStopped(BaseException):
    """The case ends here: a would-call without `simulate`, or a human exit. A BaseException so
    that a pipeline's own `except Exception` cannot swallow it."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome  # "would_call" | "human"
        self.reason = reason


@dataclass
class CaseTrace:
    """What one case did: its calls in order, the would-calls, the model's cost and time."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    would_calls: list[dict[str, Any]] = field(default_factory=list)
    llm_calls: int = 0
    cost_usd: float | None = None
    llm_ms: float = 0.0
    tokens: int = 0
    model: str | None = None


class EvalExecutor:
    """An eval case's executor: runs each call in memory, keeps the case's trace, and stops the
    case where a run would have a side effect or wait for a person."""

    def __init__(self, runtime: Runtime, journal: Journal) -> None:
        self._rt = runtime
        self._journal = journal
        self.trace = CaseTrace()

    def _line(self, call: NextCall, outcome: str) -> None:
        self.trace.calls.append({"kind": call.kind.value, "key": call.key, "outcome": outcome})

    def reused(self, call: NextCall, outcome: str, detail: Any) -> None:
        raise AssertionError("an eval case has no record to reuse")

    def reused_answer(self, call: NextCall, request: ModelRequest, recorded: CallRecord) -> None:
        raise AssertionError("an eval case has no record to reuse")

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
            self._line(call, "failed")
            raise StepFailed(call.name, f"{type(exc).__name__}: {exc}") from exc
        self._line(call, "ran")
        if adapter is not None:
            return result
        # As live: without a return annotation the pipeline gets the JSON form back.
        return record_value(result, f"step {call.name!r}")

    def validate(self, tool: Tool, rule: Validator, args_json: Any) -> None:
        """Not asked: a gated tool never runs in an eval (`Tool.runs_in_eval`)."""

    def tool(
        self,
        call: NextCall,
        tool: Tool,
        args: BaseModel,
        args_json: Any,
        judgement: Judgement | None,
    ) -> Any:
        if tool.runs_in_eval(args):
            try:
                result = tool.fn(args, idempotency_key=call.idempotency_key)
                tool.result_adapter.dump_python(result, mode="json")
            except Exception as exc:
                self._line(call, "failed")
                raise ToolFailed(tool.name, f"{type(exc).__name__}: {exc}") from exc
            self._line(call, "ran (read)")
            return result
        self.trace.would_calls.append({"tool": tool.name, "kind": tool.kind, "args": args_json})
        if tool.simulate is None:
            self._line(call, "would call")
            raise CaseStopped("would_call", f"would call {tool.name}")
        try:
            simulated = tool.simulate(args)
            # The simulated result must be what the tool would return: same validation.
            result = tool.result_adapter.validate_python(
                tool.result_adapter.dump_python(simulated, mode="json")
            )
        except Exception as exc:
            self._line(call, "simulate failed")
            raise ToolFailed(tool.name, f"simulate: {type(exc).__name__}: {exc}") from exc
        self._line(call, "would call (simulated)")
        return result

    def collect_answer(self, call: NextCall, request: ModelRequest, recorded: CallRecord) -> Any:
        raise AssertionError("an eval case has no record to collect from")

    def ask_model(self, call: NextCall, request: ModelRequest) -> LLMResult:
        began = time.perf_counter()
        result = request.send(self._rt)
        trace = self.trace
        trace.llm_calls += 1
        trace.llm_ms += (time.perf_counter() - began) * 1000
        trace.tokens += result.prompt_tokens + result.completion_tokens
        trace.model = trace.model or result.model
        if result.cost is not None:
            trace.cost_usd = (trace.cost_usd or 0.0) + result.cost
        return result

    def answered(self, call: NextCall, request: ModelRequest, result: LLMResult) -> None:
        self._line(call, "answered")

    def cannot_answer(
        self, call: NextCall, request: ModelRequest, result: LLMResult, message: str
    ) -> None:
        self._line(call, "no usable answer (raised)")

    def human_exit(
        self, call: NextCall, request: ModelRequest, result: LLMResult, reason: str
    ) -> NoReturn:
        self._line(call, "human exit")
        raise CaseStopped("human", f"{call.key}: {reason}")

    def ask_human(
        self,
        call: NextCall,
        question: str,
        output: type[BaseModel],
        context: Any,
        assignees: list[str] | None,
    ) -> NoReturn:
        self._line(call, "would ask a human")
        raise CaseStopped("human", f"{call.key}: would ask a human ({question})")


def eval_context(runtime: Runtime, *, case_id: str, pipeline: str) -> tuple[Context, CaseTrace]:
    """The `ctx` of one case, and the trace it fills."""
    journal = MemoryJournal(runtime, run_id=case_id, pipeline=pipeline)
    executor = EvalExecutor(runtime, journal)
    return Context(runtime, journal, executor), executor.trace
