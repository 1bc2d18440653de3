"""The demo's scripted model for the live cases: an OpenAI-compatible Chat Completions server
on loopback (an ephemeral port), which the served bot reaches through GATEHOUSE_LLM_BASE_URL
like any model server, with the real `openai` client.

It knows what to say because the demo tells it before each fire (`expect`): the case's answer,
sure of the clear ones and unsure of the vague ones on purpose (bot/demo/samples.py), so most
live cases flow through and a few become human tasks whose cards say why. The validation model
reading an intro email approves it. Anything else (a ticket typed with `/gatehouse trigger`) it
does not know: it answers `other` with a low confidence, so the step goes to a person and the
card says that the model was unsure. Used only when no model of the user's own is configured.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from bot.demo.model import chat_completion

log = structlog.get_logger()

MODEL = "demo-scripted"
REMEMBERED = 500  # answers kept for prompts not asked yet (one per fire; a few hours' worth)
UNKNOWN_CONFIDENCE = 0.3
EMAIL_VERDICT = {
    "verdict": "approve",
    "reason": "It goes to the person who wrote in, names their company and offers a call, "
    "nothing else.",
    "confidence": 0.92,
}
# What it says of a prompt nobody told it about, by the output schema's name.
UNKNOWN_ANSWERS: dict[str, dict[str, Any]] = {
    "TicketLabel": {"kind": "other", "order_id": None, "amount": None},
    "LeadSignals": {"company": "", "role": "", "intent": "low"},
}


class LiveModel:
    """`with LiveModel() as model:` serves on 127.0.0.1; `model.base_url` is its `/v1`."""

    def __init__(self) -> None:
        self._answers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def expect(self, prompt: str, answer: dict[str, Any]) -> None:
        """Answer `answer` (JSON, its `confidence` included) when asked about `prompt`."""
        with self._lock:
            self._answers[prompt] = answer
            self._answers.move_to_end(prompt)
            while len(self._answers) > REMEMBERED:
                self._answers.popitem(last=False)

    def start(self) -> LiveModel:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gatehouse-demo-model", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LiveModel:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """The completion for one Chat Completions request body."""
        schema = _schema_name(request)
        prompt = _first_user_message(request)
        with self._lock:
            self.requests += 1
            number = self.requests
            known = self._answers.get(prompt)
        if schema == "ValidatorVerdict":
            content: dict[str, Any] = EMAIL_VERDICT
        else:
            content = known or {**UNKNOWN_ANSWERS.get(schema, {}), "confidence": UNKNOWN_CONFIDENCE}
        return chat_completion(
            json.dumps(content), request, number=number, created=datetime.now(UTC), model=MODEL
        )


def _schema_name(request: dict[str, Any]) -> str:
    response_format = request.get("response_format") or {}
    return str((response_format.get("json_schema") or {}).get("name") or "")


def _first_user_message(request: dict[str, Any]) -> str:
    for message in request.get("messages", []):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def _handler(model: LiveModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._reply(404, {"error": {"message": f"no route {self.path}"}})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                request = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as exc:
                self._reply(400, {"error": {"message": f"the body is not JSON: {exc}"}})
                return
            self._reply(200, model.answer(request))

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("demo_model.request", line=format % args)

    return Handler
