"""Test your pipelines with pytest: real runs on a temporary database, a scripted model, fake
tools, and approvals decided in code.

    from pipelines.testing import Harness

    def test_a_refund_over_100_waits_for_finance() -> None:
        with Harness(pipelines=["mypackage.refunds"], groups={"finance-leads": ["alice"]}) as h:
            h.model.answer("classify_ticket", {"kind": "refund", "confidence": 0.95})
            result = h.run("ticket_triage", {...}, user="carol")
            assert result.status == "waiting"
            done = result.approve(user="alice")
            assert done.status == "succeeded"
            assert done.trail() == [("llm", "classify_ticket", "succeeded"), ...]

Everything under test is the engine itself (`Gatehouse`: the durable runner, the gates, the
record), on a SQLite file of its own, migrated (or `database=` a URL you give). The model is the
real `openai` client talking to an in-process transport that answers in the Chat Completions
wire format, by the `ctx.llm` call's name; a call nothing was scripted for fails the run with
`UnscriptedModelCall`, so a test never passes on an answer it did not write. `model=False`: no
model at all, every `ctx.llm` takes the human exit (a task `answer()` settles).
"""

from __future__ import annotations

import atexit
import contextvars
import json
import shutil
import tempfile
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from pipelines import Gatehouse, LLMConfig, StaticDirectory, discover
from pipelines.errors import GatehouseError
from pipelines.llm import LLMCaller, LLMResult
from pipelines.pipeline import Pipeline, get_pipeline, pipeline
from pipelines.tools import Tool
from pipelines.views import ApprovalView, CallView, Run, TaskView
from storage.db import Database

if TYPE_CHECKING:
    import httpx2
    import openai

    from pipelines.evaluation import Dataset, EvalReport

SCRIPTED_MODEL = "gpt-4o-mini"  # a name in the price table, so cost is recorded as in production
_BASE_URL = "http://scripted-model.invalid/v1"  # never resolved: the transport answers in-process
STEP_PIPELINE = "gatehouse.testing.step"


class UnscriptedModelCall(GatehouseError):
    """A `ctx.llm` call asked the model for an answer no test scripted."""


class NothingToDecide(GatehouseError):
    """`approve`/`reject`/`answer` found no (or more than one) pending approval or open task."""


# -- the clock -----------------------------------------------------------------------------------


class ManualClock:
    """The engine's clock in a harness: still until you `advance()` it (expiry, rate limits,
    reminders without sleeping)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        with self._lock:
            self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
            return self._now


# -- the scripted model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One scripted model answer: JSON `content` (or raw text), a refusal, or an HTTP error."""

    content: str | None = None
    refusal: str | None = None
    status: int = 200
    prompt_tokens: int = 40
    completion_tokens: int = 12


@dataclass(frozen=True)
class ModelRequestSeen:
    """What one request to the scripted model carried (for asserting on prompts)."""

    name: str
    model: str
    system: str
    prompt: str
    response_format: Any
    messages: list[dict[str, Any]]


_current_call: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gatehouse_testing_call", default=None
)


class ScriptedModel:
    """Answers by call name (`ctx.llm("classify_ticket", ...)` reads the replies scripted for
    "classify_ticket", in order; the last one repeats when `always=True`). A validator's call is
    named `validator:TOOL`."""

    def __init__(self) -> None:
        self._replies: dict[str, deque[Reply]] = defaultdict(deque)
        self._always: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self.requests: list[ModelRequestSeen] = []
        self.unscripted: list[UnscriptedModelCall] = []

    def answer(
        self, name: str, *answers: Mapping[str, Any] | BaseModel, always: bool = False
    ) -> None:
        """The model answers these JSON objects, one per request of the call `name`."""
        replies = [
            Reply(content=a.model_dump_json() if isinstance(a, BaseModel) else json.dumps(a))
            for a in answers
        ]
        self.script(name, *replies, always=always)

    def script(self, name: str, *replies: Reply, always: bool = False) -> None:
        """Queue raw replies (`Reply(content="not json")`, `Reply(refusal=...)`, `Reply(status=503)`)."""
        with self._lock:
            if always and replies:
                self._replies[name].extend(replies[:-1])
                self._always[name] = replies[-1]
            else:
                self._replies[name].extend(replies)

    def requests_for(self, name: str) -> list[ModelRequestSeen]:
        return [r for r in self.requests if r.name == name]

    def _next(self, name: str) -> Reply | None:
        with self._lock:
            queue = self._replies.get(name)
            if queue:
                return queue.popleft()
            return self._always.get(name)

    def has_reply(self, name: str) -> bool:
        with self._lock:
            return bool(self._replies.get(name)) or name in self._always

    def respond(self, request: httpx2.Request) -> httpx2.Response:
        import httpx2

        name = _current_call.get() or "(unnamed)"
        body = json.loads(request.content)
        messages = list(body.get("messages", []))
        self.requests.append(
            ModelRequestSeen(
                name=name,
                model=str(body.get("model")),
                system=str(messages[0].get("content", "")) if messages else "",
                prompt=str(messages[1].get("content", "")) if len(messages) > 1 else "",
                response_format=body.get("response_format"),
                messages=messages,
            )
        )
        reply = self._next(name)
        if reply is None:
            # The SDK retries a 500; never reached: `ScriptedCaller.call` checks first.
            missing = {"message": f"nothing scripted for {name}", "type": "server_error"}
            return httpx2.Response(500, json={"error": missing})
        if reply.status != 200:
            kind = "invalid_request_error" if reply.status < 500 else "server_error"
            failure = {"message": "scripted error", "type": kind, "param": None, "code": None}
            return httpx2.Response(reply.status, json={"error": failure})
        message = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        completion = {
            "id": f"chatcmpl-scripted{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage,
        }
        return httpx2.Response(200, json=completion)


class ScriptedCaller(LLMCaller):
    """The engine's model caller, unchanged, with its SDK client pointed at a `ScriptedModel`."""

    def __init__(self, model: ScriptedModel) -> None:
        super().__init__(
            LLMConfig(model=SCRIPTED_MODEL, base_url=_BASE_URL, api_key="scripted", max_retries=0)
        )
        self.scripted = model
        self._scripted_client: openai.OpenAI | None = None

    @property
    def client(self) -> openai.OpenAI:
        if self._scripted_client is None:
            import httpx2
            import openai

            self._scripted_client = openai.OpenAI(
                base_url=_BASE_URL,
                api_key="scripted",
                max_retries=0,
                http_client=httpx2.Client(transport=httpx2.MockTransport(self.scripted.respond)),
            )
        return self._scripted_client

    def call(self, *, name: str | None = None, **request: Any) -> LLMResult:
        label = name or "(unnamed)"
        if not self.scripted.has_reply(label):
            problem = UnscriptedModelCall(
                f"ctx.llm {label!r} asked the model and nothing is scripted for it: "
                f"h.model.answer({label!r}, {{...}}) before the run (or Harness(model=False) "
                "for no model: every ctx.llm becomes a human task)"
            )
            self.scripted.unscripted.append(problem)
            raise problem
        token = _current_call.set(label)
        try:
            return super().call(name=name, **request)
        finally:
            _current_call.reset(token)


# -- fake tools ------------------------------------------------------------------------------------


@dataclass
class FakeTool:
    """A tool whose function a test replaced: its gates still apply; `calls` are the arguments
    it received, in order."""

    tool: Tool
    calls: list[BaseModel] = field(default_factory=list)
    reversed: list[BaseModel] = field(default_factory=list)


# -- results ---------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """A run as it stands after the harness drove it, with the record's calls, approvals and
    tasks (the engine's own views), and the decisions to move it on."""

    run: Run
    harness: Harness

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def status(self) -> str:
        return str(self.run.status)

    @property
    def output(self) -> Any:
        return self.run.output

    @property
    def error(self) -> str | None:
        return self.run.error

    @property
    def calls(self) -> list[CallView]:
        return self.run.calls

    @property
    def approvals(self) -> list[ApprovalView]:
        return self.run.approvals

    @property
    def tasks(self) -> list[TaskView]:
        return self.run.tasks

    def trail(self) -> list[tuple[str, str, str]]:
        """(kind, name, status) of each recorded call, in order."""
        return [(str(c.kind), c.name, str(c.status)) for c in self.calls]

    def call(self, name: str, *, kind: str | None = None) -> CallView:
        """The one recorded call named `name` (of `kind`: llm, tool, step, reversal…);
        AssertionError when there are none or several."""
        found = [c for c in self.calls if c.name == name and kind in (None, str(c.kind))]
        if len(found) != 1:
            raise AssertionError(f"{len(found)} calls named {name!r}; the run's: {self.trail()}")
        return found[0]

    def pending_approval(self) -> ApprovalView:
        pending = [a for a in self.approvals if a.status == "pending"]
        if len(pending) != 1:
            raise NothingToDecide(
                f"run {self.id} ({self.status}) has {len(pending)} pending approvals"
            )
        return pending[0]

    def open_task(self) -> TaskView:
        open_tasks = [t for t in self.tasks if t.status == "open"]
        if len(open_tasks) != 1:
            raise NothingToDecide(f"run {self.id} ({self.status}) has {len(open_tasks)} open tasks")
        return open_tasks[0]

    def approve(self, *, user: str, reason: str | None = None) -> RunResult:
        """Approve the run's one pending approval as `user`, and carry the run on."""
        return self.harness.approve(self.pending_approval().id, user=user, reason=reason)

    def reject(self, *, user: str, reason: str) -> RunResult:
        return self.harness.reject(self.pending_approval().id, user=user, reason=reason)

    def answer(self, answer: Mapping[str, Any] | BaseModel, *, user: str = "tester") -> RunResult:
        """Answer the run's one open human task as `user`, and carry the run on."""
        return self.harness.answer(self.open_task().id, answer, user=user)


# -- the harness ---------------------------------------------------------------------------------


class Harness:
    """A Gatehouse engine for one test: a migrated temporary database, a manual clock, the
    scripted model, approver groups, and fake tools restored on `close()`."""

    def __init__(
        self,
        *,
        pipelines: Iterable[str] = (),
        groups: Mapping[str, list[str]] | None = None,
        model: bool = True,
        database: str | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        discover(list(pipelines))
        self._dir: Path | None = None
        if database is None:
            self._dir = Path(tempfile.mkdtemp(prefix="gatehouse-test-"))
            target = self._dir / "gatehouse.db"
            shutil.copy(_migrated_template(), target)
            database = f"sqlite:///{target}"
        self.db = Database(database)
        if self._dir is None:
            self.db.upgrade()  # yours: migrated like `gatehouse db upgrade` (safe to repeat)
        self.clock = clock or ManualClock()
        self.model = ScriptedModel()
        self.gatehouse = Gatehouse(
            self.db, clock=self.clock, directory=StaticDirectory(dict(groups or {}))
        )
        if model:
            caller = ScriptedCaller(self.model)
            self.gatehouse.rt.llm_config = caller.config
            self.gatehouse.rt._llm_caller = caller
        self._restore: list[Callable[[], None]] = []

    # lifecycle

    def close(self) -> None:
        for restore in reversed(self._restore):
            restore()
        self._restore.clear()
        self.db.dispose()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Harness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # runs

    def run(self, name: str, input: Any, *, user: str | None = None) -> RunResult:
        """Trigger `name` and execute it here until it finishes or waits for a person."""
        started = self.gatehouse.trigger(name, input, user=user, source="test")
        return self.result(started.id)

    def _raise_unscripted(self) -> None:
        """A run that failed on an unscripted model call fails the test, not only the run."""
        if self.model.unscripted:
            raise self.model.unscripted.pop(0)

    def run_step(self, fn: Callable[..., Any], *args: Any, user: str | None = None) -> RunResult:
        """Run one step function `fn(ctx, *args)` as a run of its own (the pipeline
        `gatehouse.testing.step`): its ctx calls are recorded, gated and scripted as in a
        pipeline, and `output` is what `fn` returned, as recorded (JSON)."""
        _register_step_pipeline()
        ref = f"{fn.__module__}.{fn.__qualname__}#{len(_STEPS) + 1}"
        _STEPS[ref] = (fn, args)
        self._restore.append(lambda: _forget_step(ref))
        return self.run(STEP_PIPELINE, {"step": ref}, user=user)

    def result(self, run_id: str) -> RunResult:
        self._raise_unscripted()
        return RunResult(self.gatehouse.run(run_id), self)

    def approve(self, approval_id: str, *, user: str, reason: str | None = None) -> RunResult:
        decided = self.gatehouse.approve(approval_id, user=user, reason=reason)
        return self._carry_on(decided.run_id)

    def reject(self, approval_id: str, *, user: str, reason: str) -> RunResult:
        decided = self.gatehouse.reject(approval_id, user=user, reason=reason)
        return self._carry_on(decided.run_id)

    def answer(
        self, task_id: str, answer: Mapping[str, Any] | BaseModel, *, user: str = "tester"
    ) -> RunResult:
        payload = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
        answered = self.gatehouse.answer(task_id, user=user, answer=payload)
        return self._carry_on(answered.run_id)

    def undo(self, call_id: str, *, user: str) -> CallView:
        return self.gatehouse.undo(call_id, user=user)

    def expire_due(self) -> list[ApprovalView]:
        """Reject the approvals whose deadline the clock passed (what a worker does)."""
        return self.gatehouse.expire_due()

    def resume_queued(self) -> int:
        """Execute every queued run here (after `expire_due`, a decision made elsewhere)."""
        return self.gatehouse.worker().run_until_idle()

    def evaluate(self, name: str, dataset: str | Path | Dataset, **options: Any) -> EvalReport:
        """`gatehouse eval` on this database with the scripted model (no side effects)."""
        return self.gatehouse.evaluate(name, dataset, **options)

    def _carry_on(self, run_id: str) -> RunResult:
        self.gatehouse.resume(run_id)  # None when it still waits (a quorum's next vote)
        return self.result(run_id)

    # tools

    def fake(
        self,
        tool: Tool,
        returns: Callable[[Any], Any] | Any,
        *,
        reverse: Callable[[Any, Any], None] | None = None,
    ) -> FakeTool:
        """Replace `tool`'s function until the harness closes: `returns` is the result, or a
        function of the arguments giving it. Approval rules, rate limits and the record apply
        as to the real tool; its `reverse` becomes `reverse(args, result)` (or a no-op)."""
        fake = FakeTool(tool)

        def fn(args: Any, *, idempotency_key: str) -> Any:
            fake.calls.append(args)
            # Validated as the real tool's result would be: a dict becomes the result model.
            return tool.result_adapter.validate_python(
                returns(args) if callable(returns) else returns
            )

        def undo(args: Any, result: Any, *, idempotency_key: str) -> None:
            fake.reversed.append(args)
            if reverse is not None:
                reverse(args, result)

        self._swap(tool, fn, undo if tool.reverse is not None else None)
        return fake

    def simulate(self, tool: Tool) -> FakeTool:
        """Run `tool`'s declared `simulate=` in place of its effect: a gated call still waits
        for its approval, then "runs" without touching the world."""
        if tool.simulate is None:
            raise TypeError(f"tool {tool.name!r} declares no simulate=; use h.fake(tool, ...)")
        return self.fake(tool, tool.simulate)

    def _swap(self, tool: Tool, fn: Callable[..., Any], reverse: Callable[..., Any] | None) -> None:
        saved = (tool.fn, tool.reverse)

        def restore() -> None:
            tool.fn, tool.reverse = saved

        tool.fn, tool.reverse = fn, reverse
        self._restore.append(restore)


# -- single steps --------------------------------------------------------------------------------


class StepInput(BaseModel):
    step: str


# The step functions `run_step` was given, with their arguments (Python objects, kept here
# rather than in the run's input, so a resume calls the step with the very same arguments).
_STEPS: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {}


def _forget_step(ref: str) -> None:
    _STEPS.pop(ref, None)


def _run_registered_step(ctx: Any, request: StepInput) -> Any:
    """The pipeline a `run_step` runs: the step function, with its (in-memory) arguments."""
    found = _STEPS.get(request.step)
    if found is None:
        raise LookupError(f"{request.step} was not given to Harness.run_step in this process")
    fn, args = found
    return fn(ctx, *args)


def _register_step_pipeline() -> Pipeline:
    try:
        return get_pipeline(STEP_PIPELINE)
    except GatehouseError:
        pipeline(STEP_PIPELINE, input=StepInput)(_run_registered_step)
        return get_pipeline(STEP_PIPELINE)


# -- the migrated template ----------------------------------------------------------------------

_template_lock = threading.Lock()
_template: Path | None = None


def _migrated_template() -> Path:
    """Migrate once per process; each harness copies the file (milliseconds, not Alembic)."""
    global _template
    with _template_lock:
        if _template is None or not _template.exists():
            folder = Path(tempfile.mkdtemp(prefix="gatehouse-template-"))
            atexit.register(shutil.rmtree, folder, True)
            path = folder / "template.db"
            database = Database(f"sqlite:///{path}")
            try:
                database.upgrade()
            finally:
                database.dispose()
            _template = path
        return _template


def harness(**options: Any) -> Iterator[Harness]:
    """For a pytest fixture: `h = pytest.fixture(harness)`-style use, closed afterwards.

    @pytest.fixture
    def h() -> Iterator[Harness]:
        yield from harness(pipelines=["mypackage.credits"])
    """
    with Harness(**options) as made:
        yield made


__all__ = [
    "FakeTool",
    "Harness",
    "ManualClock",
    "ModelRequestSeen",
    "NothingToDecide",
    "Reply",
    "RunResult",
    "ScriptedCaller",
    "ScriptedModel",
    "UnscriptedModelCall",
    "harness",
]
