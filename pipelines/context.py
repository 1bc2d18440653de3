"""`Context`: the `ctx` a pipeline receives. Every call is recorded under a stable key, so a
resumed run re-executes the function from the top and completed calls return their recorded
results instead of running again.

Each verb is short: ask the journal (`pipelines.journal`) for the call's place and record, reuse
what the record settled, and hand the rest to the mode's `Executor`. A live run's executor
(`pipelines.live`) passes the gates (`approvals`, `rate_limits`, `tasks`: each with both of its
ends in one module) and executes; a replay's (`pipelines.replay`) reports and runs no side
effect; an eval's (`pipelines.evaluation.context`) runs in memory. The verbs are written once.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, Protocol, TypeVar, cast

from pydantic import BaseModel, TypeAdapter

from pipelines import tracing, versions
from pipelines.errors import ActionRejected, CannotAnswer, StepFailed, ToolFailed
from pipelines.journal import CallRecord, Journal, NextCall
from pipelines.llm import TASKS, LLMResult, has_confidence
from pipelines.runtime import Runtime
from pipelines.tools import Tool
from pipelines.validator import Judgement, Validator
from storage.models import CallKind, CallStatus

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


@functools.lru_cache(maxsize=1024)
def return_adapter(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    """The validator of a step function's declared return type (None: undeclared or Any)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    if "return" not in hints or hints["return"] is Any:
        return None
    return TypeAdapter(hints["return"])


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


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What a `ctx.llm` call asks for, handed whole to the mode's executor."""

    name: str
    task: str
    prompt: str
    output: type[BaseModel]
    system: str | None
    model: str | None
    min_confidence: float | None
    max_attempts: int
    assignees: list[str] | None
    requested_at: datetime

    def send(self, rt: Runtime) -> LLMResult:
        return tracing.model_call(rt, self, lambda: self._send(rt))

    def _send(self, rt: Runtime) -> LLMResult:
        return rt.llm.call(
            task=self.task,
            prompt=self.prompt,
            output=self.output,
            system=self.system,
            model=self.model,
            min_confidence=self.min_confidence,
            max_attempts=self.max_attempts,
            name=self.name,
        )


class Executor(Protocol):
    """What a mode does with the calls the record does not settle.

    `call.recorded`, when an executor sees it, is a record still open (awaiting approval or a
    person, started, rate-limited); the verbs reuse what is settled and tell `reused`."""

    def reused(self, call: NextCall, outcome: str, detail: Any) -> None:
        """A settled call came back from the record (`outcome`: "reused", "reused (failed)"…)."""

    def step(
        self,
        call: NextCall,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        adapter: TypeAdapter[Any] | None,
    ) -> Any:
        """Run a step the record lacks; returns what the pipeline gets."""

    def validate(self, tool: Tool, rule: Validator, args_json: Any) -> Judgement | None:
        """The validator model's judgement of a tool call, before the tool's own call."""

    def tool(
        self,
        call: NextCall,
        tool: Tool,
        args: BaseModel,
        args_json: Any,
        judgement: Judgement | None,
    ) -> Any:
        """A tool call the record lacks (or left open)."""

    def reused_answer(self, call: NextCall, request: ModelRequest, recorded: CallRecord) -> None:
        """A model call the record settled (answered or raised) is about to be reused."""

    def collect_answer(self, call: NextCall, request: ModelRequest, recorded: CallRecord) -> Any:
        """A model call whose record waits for a person's answer."""

    def ask_model(self, call: NextCall, request: ModelRequest) -> LLMResult:
        """Call the model for a call the record lacks."""

    def answered(self, call: NextCall, request: ModelRequest, result: LLMResult) -> None:
        """The model gave a usable answer; the pipeline gets `result.value` next."""

    def cannot_answer(
        self, call: NextCall, request: ModelRequest, result: LLMResult, message: str
    ) -> None:
        """No usable answer, with `on_fail="raise"`: `CannotAnswer(message)` comes next."""

    def human_exit(
        self, call: NextCall, request: ModelRequest, result: LLMResult, reason: str
    ) -> NoReturn:
        """No usable answer: a person answers in the model's place."""

    def ask_human(
        self,
        call: NextCall,
        question: str,
        output: type[BaseModel],
        context: Any,
        assignees: list[str] | None,
    ) -> Any:
        """`ctx.ask_human` the record has no answer to."""


class Context:
    """The `ctx` of a run, a replay or an eval case: the same verbs over a mode's journal and
    executor."""

    def __init__(self, runtime: Runtime, journal: Journal, executor: Executor) -> None:
        self.run_id = journal.run_id
        self.pipeline = journal.pipeline
        self.trigger_user = journal.trigger_user
        self.journal = journal
        self.executor = executor
        self._rt = runtime

    @property
    def calls_made(self) -> int:
        return self.journal.calls_made

    @property
    def recorded_count(self) -> int:
        return self.journal.recorded_count

    @tracing.traced_call("step")
    def step(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """Run deterministic code once and record its result; replays return the record."""
        call = self.journal.next(CallKind.STEP, name)
        adapter = return_adapter(fn)
        if (recorded := call.recorded) is not None:
            if recorded.status == CallStatus.SUCCEEDED:
                self.executor.reused(call, "reused", recorded.output)
                value = recorded.output
                return cast(T, adapter.validate_python(value) if adapter is not None else value)
            if recorded.status == CallStatus.FAILED:
                self.executor.reused(call, "reused (failed)", recorded.error)
                raise StepFailed(name, recorded.error or "")
        return cast(T, self.executor.step(call, fn, args, adapter))

    @tracing.traced_call("tool")
    def tool(self, tool: Tool, args: Any) -> Any:
        """Call a tool through its gates: approval, rate limit, at-most-once execution."""
        if not isinstance(tool, Tool):
            raise TypeError(f"ctx.tool() takes a @tool-declared function, got {tool!r}")
        checked = tool.coerce_args(args)
        args_json = checked.model_dump(mode="json")
        judgement = None
        if isinstance(tool.approval, Validator):
            # Its own recorded call, just before the tool's: replays read the verdict.
            judgement = self.executor.validate(tool, tool.approval, args_json)
        call = self.journal.next(CallKind.TOOL, tool.name)
        if (recorded := call.recorded) is not None:
            if recorded.status == CallStatus.SUCCEEDED:
                self.executor.reused(call, "reused", recorded.output)
                return tool.result_adapter.validate_python(recorded.output)
            if recorded.status == CallStatus.FAILED:
                self.executor.reused(call, "reused (failed)", recorded.error)
                raise ToolFailed(tool.name, recorded.error or "")
            if recorded.status == CallStatus.REJECTED:
                self.executor.reused(call, "reused (rejected)", recorded.error)
                raise ActionRejected(tool.name, recorded.error or "rejected")
        return self.executor.tool(call, tool, checked, args_json, judgement)

    def version(self, change: str) -> bool:
        """True when this run is on the new side of `change` (a new run, or one recorded with
        its marker), False for a run recorded without it: keep the old path under `else` for
        the runs that were waiting when the change was deployed. The exact rule is in
        `pipelines.versions`; the marker is recorded as a `version` call."""
        return versions.version(self, change)

    @tracing.traced_call("human")
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
        call = self.journal.next(CallKind.HUMAN, name)
        if (recorded := call.recorded) is not None and recorded.status == CallStatus.SUCCEEDED:
            self.executor.reused(call, "reused", recorded.output)
            return output.model_validate(recorded.output)
        return cast(M, self.executor.ask_human(call, question, output, context, assignees))

    @tracing.traced_call("llm")
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
        call = self.journal.next(CallKind.LLM, name)
        request = ModelRequest(
            name,
            task,
            prompt,
            output,
            system,
            model,
            min_confidence,
            max_attempts,
            assignees,
            requested_at=self._rt.clock.now(),
        )
        if (recorded := call.recorded) is not None:
            if recorded.status in (CallStatus.SUCCEEDED, CallStatus.FAILED):
                self.executor.reused_answer(call, request, recorded)
                if recorded.status == CallStatus.SUCCEEDED:
                    return output.model_validate(recorded.output)
                raise CannotAnswer(recorded.error or f"{name}: no usable answer")
            return cast(M, self.executor.collect_answer(call, request, recorded))
        result = self.executor.ask_model(call, request)
        if result.failure is None and result.value is not None:
            self.executor.answered(call, request, result)
            return cast(M, result.value)
        reason = result.reason or "no usable answer"
        if on_fail == "raise":
            # Recorded as raised: a resume or replay re-raises the recorded text, and the
            # pipeline must see the same message it saw live.
            message = f"{name}: {reason}"
            self.executor.cannot_answer(call, request, result, message)
            raise CannotAnswer(message)
        self.executor.human_exit(call, request, result, reason)
