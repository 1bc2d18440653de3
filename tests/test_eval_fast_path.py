"""The per-case costs an eval pays beside its model call (issue 19), kept down without changing
what goes over the wire or what a case reads: the model request is posted whole (no SDK
parameter transform) yet is byte-for-byte what `chat.completions.create` sends, and the demo
order book is counted for seeding only when a lookup misses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import openai
from sqlalchemy import event

from pipelines import Gatehouse
from pipelines.catalog.connectors import demo_orders
from pipelines.catalog.ticket_triage import TicketLabel
from pipelines.evaluation.readonly import ReadOnlyDatabase
from pipelines.llm import LLMCaller, LLMConfig
from pipelines.runtime import running_in
from storage.db import Database
from tests.fakes.openai import FakeOpenAI, reply_json

ANSWER = {"kind": "refund", "confidence": 0.95, "order_id": "ord_1002", "amount": "150.00"}
# Headers that differ between any two requests, whoever sends them.
VARYING = {"x-stainless-retry-count", "x-stainless-read-timeout"}


def _completion(request: httpx2.Request) -> httpx2.Response:
    body = json.loads(request.content)
    return httpx2.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": json.dumps(ANSWER)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 120, "completion_tokens": 20, "total_tokens": 140},
        },
    )


class _CapturingCaller(LLMCaller):
    def __init__(self, seen: list[httpx2.Request]) -> None:
        super().__init__(
            LLMConfig(model="gpt-4o-mini", base_url="http://model.test/v1", api_key="sk-1")
        )

        def answer(request: httpx2.Request) -> httpx2.Response:
            seen.append(request)
            return _completion(request)

        self.sdk = openai.OpenAI(
            base_url="http://model.test/v1",
            api_key="sk-1",
            max_retries=0,
            http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
        )

    @property
    def client(self) -> openai.OpenAI:
        return self.sdk


def _shape(request: httpx2.Request) -> tuple[str, str, dict[str, Any], dict[str, str]]:
    headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in VARYING}
    return request.method, str(request.url), json.loads(request.content), headers


def test_the_posted_request_is_what_chat_completions_create_sends() -> None:
    seen: list[httpx2.Request] = []
    caller = _CapturingCaller(seen)
    result = caller.call(task="classify", prompt="Refund ord_1002, 150.00", output=TicketLabel)
    assert result.failure is None and result.value == TicketLabel.model_validate(ANSWER)
    sent = seen[-1]
    body = json.loads(sent.content)
    caller.sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=body["messages"],
        response_format=caller.response_format(TicketLabel),  # type: ignore[arg-type]
    )
    assert _shape(sent) == _shape(seen[-1])
    assert sent.headers["authorization"] == "Bearer sk-1"


def test_tokens_and_cost_come_back_from_the_posted_request() -> None:
    with FakeOpenAI() as fake:
        fake.always(reply_json(ANSWER, prompt_tokens=120, completion_tokens=20))
        caller = LLMCaller(LLMConfig(model="gpt-4o-mini", base_url=fake.base_url, max_retries=0))
        result = caller.call(task="classify", prompt="Refund ord_1002", output=TicketLabel)
        assert fake.requests[-1]["response_format"]["json_schema"]["name"] == "TicketLabel"
    assert (result.prompt_tokens, result.completion_tokens) == (120, 20)
    assert result.cost == round((120 * 0.15 + 20 * 0.60) / 1_000_000, 8)


def _statements(db: Database) -> list[str]:
    seen: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    return seen


def test_an_order_lookup_on_a_seeded_book_is_one_query(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'orders.db'}")
    db.upgrade()
    try:
        with running_in(Gatehouse(db).rt):
            first = demo_orders.find_order("ord_1002")  # an empty book: seeded, then found
            statements = _statements(db)
            again = demo_orders.find_order("ord_1002")
            missing = demo_orders.find_order("ord_9999")
        assert first is not None and first == again
        assert first.customer == "grace@example.com" and first.amount_cents == 25_000
        assert missing is None
        lookups = [s for s in statements if "demo_orders" in s]
        # The found order: one SELECT; the missing one: its SELECT, then the seeding count.
        assert len(lookups) == 3, lookups
        assert "count" not in lookups[0].lower()
        assert "count" in lookups[2].lower()
    finally:
        db.dispose()


def test_the_read_only_sqlite_handle_keeps_a_connection_per_concurrent_case(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'pool.db'}")
    db.upgrade()
    reader = ReadOnlyDatabase(db, pool_size=8)
    try:
        held = [reader.engine.connect() for _ in range(8)]
        for connection in held:
            connection.close()
        # All eight went back to the pool: the next eight cases open no new connection.
        assert reader.engine.pool.checkedin() == 8  # type: ignore[attr-defined]
    finally:
        reader.dispose()
        db.dispose()
