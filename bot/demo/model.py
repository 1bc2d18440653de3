"""What the demo history runs against instead of the outside world: a scripted model and faults.

`ScriptedModel` answers the engine's `ctx.llm` calls through the real `openai` client over an
in-process transport (no socket): each reply is a Chat Completions body with token usage, or an
HTTP error, taken from a queue the seeder fills before each run; a reply moves the seeder's
clock on by the model's latency. `Faults` makes one database write fail while a tool runs, the
way a dead process or a flaky service would: the engine records it as it would in production.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import openai
from sqlalchemy import event

from pipelines.llm import LLMCaller, LLMConfig
from storage.db import Database

MODEL = "gpt-4o"
BASE_URL = "http://scripted-model.invalid/v1"


class DemoClock:
    """A clock the seeder moves; every reading also ticks it on a little, so that the steps of
    a run take time and no two records share a timestamp."""

    def __init__(self, start: datetime, tick: timedelta = timedelta(milliseconds=9)) -> None:
        self._now = start.astimezone(UTC)
        self._tick = tick
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            self._now += self._tick
            return self._now

    def set(self, moment: datetime) -> None:
        """Move to `moment` (never backwards)."""
        with self._lock:
            self._now = max(self._now, moment.astimezone(UTC))

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


@dataclass(frozen=True)
class Reply:
    """One model reply: `answer` as the JSON content, or an HTTP error `status`."""

    answer: dict[str, Any] | str | None = None
    status: int = 200
    latency_seconds: float = 1.0


class ScriptedModel:
    """The model of the demo history, speaking the Chat Completions wire format in-process."""

    def __init__(self, clock: DemoClock) -> None:
        self.clock = clock
        self.replies: deque[Reply] = deque()
        self.requests = 0

    def script(self, replies: Sequence[Reply]) -> None:
        self.replies.clear()
        self.replies.extend(replies)

    def caller(self) -> LLMCaller:
        """The engine's LLM caller, with the SDK's retries off (a 5xx is not retried: no sleep)."""
        config = LLMConfig(model=MODEL, base_url=BASE_URL, api_key="scripted", max_retries=0)
        client = openai.OpenAI(
            base_url=BASE_URL,
            api_key="scripted",
            max_retries=0,
            http_client=httpx2.Client(transport=httpx2.MockTransport(self._answer)),
        )
        return _ScriptedCaller(config, client)

    def _answer(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        body = json.loads(request.content)
        reply = self.replies.popleft() if self.replies else Reply(status=503)
        self.clock.advance(reply.latency_seconds)
        if reply.status != 200:
            text = {400: "The model `gpt-4o-2` does not exist"}.get(
                reply.status, "The server is overloaded; try again later"
            )
            kind = "invalid_request_error" if reply.status < 500 else "server_error"
            error = {"message": text, "type": kind, "param": None, "code": None}
            return httpx2.Response(reply.status, json={"error": error})
        content = reply.answer if isinstance(reply.answer, str) else json.dumps(reply.answer)
        completion = chat_completion(
            content,
            body,
            number=self.requests,
            created=self.clock.now(),
            model=f"{MODEL}-2024-08-06",
        )
        return httpx2.Response(200, json=completion)


def chat_completion(
    content: str, request: dict[str, Any], *, number: int, created: datetime, model: str
) -> dict[str, Any]:
    """A Chat Completions response body answering `request` with `content`, its token usage
    estimated from the characters sent and received (about four a token)."""
    prompt_chars = sum(len(str(m.get("content", ""))) for m in request.get("messages", []))
    schema_chars = len(json.dumps(request.get("response_format", {})))
    usage = {
        "prompt_tokens": (prompt_chars + schema_chars) // 4 + 12,
        "completion_tokens": len(content) // 4 + 3,
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    message = {"role": "assistant", "content": content, "refusal": None}
    return {
        "id": f"chatcmpl-demo{number}",
        "object": "chat.completion",
        "created": int(created.timestamp()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }


class _ScriptedCaller(LLMCaller):
    def __init__(self, config: LLMConfig, client: openai.OpenAI) -> None:
        super().__init__(config)
        self._scripted_client = client

    @property
    def client(self) -> openai.OpenAI:
        return self._scripted_client


class SimulatedCrash(BaseException):
    """The process "died" here: not an Exception, so nothing in the engine catches it."""


@dataclass
class _Fault:
    table: str
    marker: str | None
    make: Callable[[], BaseException]


class Faults:
    """Make the next write to (or read of) a demo table fail, once, while a tool runs."""

    def __init__(self, db: Database) -> None:
        self._armed: list[_Fault] = []
        self.fired = 0
        event.listen(db.engine, "before_cursor_execute", self._before_execute)

    def crash_on_insert(self, table: str, marker: str | None = None) -> None:
        """The process dies as the tool writes to `table` (a row whose values include `marker`)."""
        self._armed.append(_Fault(f"INSERT INTO {table}", marker, lambda: SimulatedCrash(table)))

    def fail_on_read(self, table: str, error: Callable[[], Exception]) -> None:
        """The service behind `table` errs on the next read."""
        self._armed.append(_Fault(f"FROM {table}", None, error))

    def disarm(self) -> None:
        self._armed.clear()

    def _before_execute(
        self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any
    ) -> None:
        for fault in self._armed:
            if fault.table not in statement:
                continue
            values = parameters.values() if isinstance(parameters, dict) else parameters or ()
            if fault.marker is not None and not any(
                isinstance(v, str) and fault.marker in v for v in values
            ):
                continue
            self._armed.remove(fault)
            self.fired += 1
            raise fault.make()
