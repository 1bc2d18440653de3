"""A fake OpenAI-compatible server on loopback: answers chat completions in the real wire format,
scripted per test, and records every request body. Tests drive the real `openai` client at it.

    with FakeOpenAI() as fake:
        fake.script(reply_status(429), reply_json({"kind": "refund", "confidence": 0.9}))
        client = openai.OpenAI(base_url=fake.base_url, api_key="test")
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any

from bot.sandbox.http import LoopbackHttpServer

NO_REPLY_LEFT = "fake OpenAI: no scripted reply left"
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")

# The SDK honours a server-directed delay only when it is > 0 (`retry-after: 0` falls back to
# its own exponential backoff, 0.5 s and up), so retryable errors carry a 1 ms delay by default.
FAST_RETRY_HEADERS = {"retry-after": "0", "retry-after-ms": "1"}

# (type, code) of OpenAI's error envelope for the statuses tests script.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", None),
    409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a completion (content or refusal) or an error, after an optional delay."""

    status: int = 200
    content: str | None = None
    refusal: str | None = None
    prompt_tokens: int = 12
    completion_tokens: int = 7
    model: str | None = None
    error: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


def reply_json(
    obj: Any, *, prompt_tokens: int = 12, completion_tokens: int = 7, model: str | None = None
) -> Reply:
    """The assistant answers `json.dumps(obj)`."""
    return Reply(
        content=json.dumps(obj),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        model=model,
    )


def reply_text(text: str, *, prompt_tokens: int = 12, completion_tokens: int = 7) -> Reply:
    """The assistant answers `text` verbatim (malformed JSON, prose, …)."""
    return Reply(content=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def reply_refusal(text: str = "I can't help with that.") -> Reply:
    """The model refuses: `message.content` is null and `message.refusal` carries the text."""
    return Reply(refusal=text)


def reply_status(
    status: int,
    *,
    message: str = "fake OpenAI: scripted error",
    headers: Mapping[str, str] | None = None,
    type: str | None = None,
    code: str | None = None,
) -> Reply:
    """An HTTP error in OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`.

    Statuses the SDK retries (408, 409, 429, 5xx) carry `FAST_RETRY_HEADERS` unless `headers`
    is given, so the SDK's own retries cost milliseconds, not its 0.5 s+ backoff.
    """
    default_type, default_code = _ERROR_KINDS.get(status, ("server_error", None))
    retryable = status in (408, 409, 429) or status >= 500
    return Reply(
        status=status,
        error={
            "message": message,
            "type": type or default_type,
            "param": None,
            "code": code if code is not None else default_code,
        },
        headers=dict(headers) if headers is not None else (FAST_RETRY_HEADERS if retryable else {}),
    )


def reply_delay(seconds: float, then: Reply) -> Reply:
    """Wait `seconds` before answering `then` (to trip a client timeout); `stop()` cuts it short."""
    return replace(then, delay=then.delay + seconds)


class FakeOpenAI:
    """The server. `script()` queues replies (one consumed per request); `always()` answers the
    rest; with neither, a request gets a 500 saying no scripted reply is left."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.base_url = ""
        self._queue: deque[Reply] = deque()
        self._always: Reply | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        self._thread = server.serve_in_thread()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a scripted delay
        server.stop_serving(thread)
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def always(self, reply: Reply) -> None:
        with self._lock:
            self._always = reply

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    # -- serving (called from handler threads) ------------------------------------------------

    def _record(self, body: dict[str, Any]) -> str:
        """Remember a request body; returns the completion id its answer will carry."""
        with self._lock:
            self.requests.append(body)
            return f"chatcmpl-fake{len(self.requests):06d}"

    def _next_reply(self) -> Reply | None:
        with self._lock:
            return self._queue.popleft() if self._queue else self._always

    def _wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; False if the server is stopping meanwhile."""
        return not self._stopping.wait(seconds)


class _Server(LoopbackHttpServer):
    # A client that gave up (timeout) closes its socket and writing the late answer then fails:
    # that is a scenario under test, which the base class keeps quiet about.
    fake: FakeOpenAI


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    # Headers and body go out in two writes; without TCP_NODELAY the second waits for the
    # client's delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            created = 1_700_000_000
            data = [
                {"id": model, "object": "model", "created": created, "owned_by": "openai"}
                for model in MODELS
            ]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_error(404, f"fake OpenAI: no route GET {self.path}", "invalid_request_error")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_error(
                404, f"fake OpenAI: no route POST {self.path}", "invalid_request_error"
            )
            return
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            self._send_error(
                401, "You didn't provide an API key.", "invalid_request_error", "invalid_api_key"
            )
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._send_error(400, "We could not parse the JSON body of your request.")
            return
        fake = self.server.fake
        completion_id = fake._record(body)
        if body.get("stream"):
            self._send_error(400, "fake OpenAI: streaming is not supported")
            return
        if not body.get("model") or not isinstance(body.get("messages"), list):
            self._send_error(400, "fake OpenAI: a request needs 'model' and 'messages'")
            return
        reply = fake._next_reply()
        if reply is None:
            self._send_error(500, NO_REPLY_LEFT, "server_error")
            return
        if reply.delay and not fake._wait(reply.delay):
            self.close_connection = True
            return
        if reply.error is not None:
            self._send_json(reply.status, {"error": dict(reply.error)}, reply.headers)
            return
        self._send_json(reply.status, _completion(reply, body, completion_id), reply.headers)

    def _send_error(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        error = {"message": message, "type": error_type, "param": None, "code": code}
        self._send_json(status, {"error": error})

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _completion(reply: Reply, request: dict[str, Any], completion_id: str) -> dict[str, Any]:
    """A chat.completion object exactly as the Chat Completions API returns it."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or request["model"],
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": reply.content,
                    "refusal": reply.refusal,
                    "annotations": [],
                },
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }
