"""`EvalContext`: the `ctx` of an eval case. It runs the pipeline for real, with no side effects.

Why a context of its own and not the durable runner on a flag: a case is never resumed, so it
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

Every path of the base class that would write (`_transaction`, `_fast_transaction`) raises
`EvalWriteRefused` instead, and the database handle itself is read-only: a ctx method added to
the engine later and not overridden here fails the case, it never writes.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy import Connection

from pipelines.context import Context, _return_adapter, check_llm_args, record_value
from pipelines.errors import CannotAnswer, GatehouseError, StepFailed, ToolFailed
from pipelines.runtime import Runtime
from pipelines.tools import Tool
from storage.models import CallKind

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class EvalWriteRefused(GatehouseError):
    """Something in an eval case tried to write to the database."""


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


class EvalContext(Context):
    def __init__(self, runtime: Runtime, *, case_id: str, pipeline: str) -> None:
        super().__init__(runtime, run_id=case_id, pipeline=pipeline, trigger_user=None, recorded=[])
        self.trace = CaseTrace()

    # -- nothing is written ------------------------------------------------------------------

    def _transaction(self) -> AbstractContextManager[Connection]:
        raise EvalWriteRefused(
            f"an eval never writes: {self.pipeline} reached an engine path that records "
            "(report this: the eval context should override it)"
        )

    _fast_transaction = _transaction

    def _line(self, kind: str, key: str, outcome: str) -> None:
        self.trace.calls.append({"kind": kind, "key": key, "outcome": outcome})

    # -- the calls ---------------------------------------------------------------------------

    def step(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        _, key, _ = self._next(CallKind.STEP, name)
        try:
            result = fn(*args)
        except Exception as exc:
            self._line("step", key, "failed")
            raise StepFailed(name, f"{type(exc).__name__}: {exc}") from exc
        self._line("step", key, "ran")
        if _return_adapter(fn) is not None:
            return result
        # As live: without a return annotation the pipeline gets the JSON form back.
        return cast(T, record_value(result, f"step {name!r}"))

    def tool(self, tool: Tool, args: Any) -> Any:
        if not isinstance(tool, Tool):
            raise TypeError(f"ctx.tool() takes a @tool-declared function, got {tool!r}")
        checked = tool.coerce_args(args)
        _, key, _ = self._next(CallKind.TOOL, tool.name)
        if tool.runs_in_eval(checked):
            try:
                result = tool.fn(checked, idempotency_key=f"{self.run_id}:{key}")
                tool.result_adapter.dump_python(result, mode="json")
            except Exception as exc:
                self._line("tool", key, "failed")
                raise ToolFailed(tool.name, f"{type(exc).__name__}: {exc}") from exc
            self._line("tool", key, "ran (read)")
            return result
        args_json = checked.model_dump(mode="json")
        self.trace.would_calls.append({"tool": tool.name, "kind": tool.kind, "args": args_json})
        if tool.simulate is None:
            self._line("tool", key, "would call")
            raise CaseStopped("would_call", f"would call {tool.name}")
        try:
            simulated = tool.simulate(checked)
            # The simulated result must be what the tool would return: same validation.
            result = tool.result_adapter.validate_python(
                tool.result_adapter.dump_python(simulated, mode="json")
            )
        except Exception as exc:
            self._line("tool", key, "simulate failed")
            raise ToolFailed(tool.name, f"simulate: {type(exc).__name__}: {exc}") from exc
        self._line("tool", key, "would call (simulated)")
        return result

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
        check_llm_args(task, output, on_fail, max_attempts, min_confidence)
        _, key, _ = self._next(CallKind.LLM, name)
        began = time.perf_counter()
        result = self._rt.llm.call(
            task=task,
            prompt=prompt,
            output=output,
            system=system,
            model=model,
            min_confidence=min_confidence,
            max_attempts=max_attempts,
        )
        trace = self.trace
        trace.llm_calls += 1
        trace.llm_ms += (time.perf_counter() - began) * 1000
        trace.tokens += result.prompt_tokens + result.completion_tokens
        trace.model = trace.model or result.model
        if result.cost is not None:
            trace.cost_usd = (trace.cost_usd or 0.0) + result.cost
        if result.failure is None and result.value is not None:
            self._line("llm", key, "answered")
            return cast(M, result.value)
        reason = result.reason or "no usable answer"
        if on_fail == "raise":
            self._line("llm", key, "no usable answer (raised)")
            raise CannotAnswer(f"{name}: {reason}")
        self._line("llm", key, "human exit")
        raise CaseStopped("human", f"{key}: {reason}")

    def ask_human(
        self,
        name: str,
        question: str,
        output: type[M],
        *,
        context: Any = None,
        assignees: list[str] | None = None,
    ) -> M:
        _, key, _ = self._next(CallKind.HUMAN, name)
        self._line("human", key, "would ask a human")
        raise CaseStopped("human", f"{key}: would ask a human ({question})")

    def _diverged(self, seq: int, kind: CallKind, key: str, recorded: Any) -> typing.NoReturn:
        raise AssertionError("an eval case has no record to diverge from")
