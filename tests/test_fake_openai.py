"""The fake OpenAI server speaks the protocol: the real `openai` client parses its answers, retries
its 429s and times out on its delays exactly as it would against the real API."""

from __future__ import annotations

import json
import time
from typing import Literal

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from tests.fakes.openai import (
    NO_REPLY_LEFT,
    FakeOpenAI,
    reply_delay,
    reply_json,
    reply_refusal,
    reply_status,
    reply_text,
)

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Classify the ticket."},
    {"role": "user", "content": "My order 42 arrived broken, I want my money back."},
]


class Label(BaseModel):
    kind: Literal["refund", "question", "bug"]
    confidence: float


def client_for(fake: FakeOpenAI, *, max_retries: int = 0, timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=fake.base_url, api_key="sk-test", max_retries=max_retries, timeout=timeout
    )


def test_structured_reply_parses_into_the_schema(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(
        reply_json({"kind": "refund", "confidence": 0.93}, prompt_tokens=31, completion_tokens=9)
    )

    completion = client_for(fake_openai).chat.completions.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Label
    )

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.parsed == Label(kind="refund", confidence=0.93)
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (31, 9)
    assert completion.usage.total_tokens == 40


def test_json_mode_reply_is_the_raw_text_and_model_can_be_overridden(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(
        reply_json({"kind": "bug"}, model="gpt-4o-mini-2024-07-18"), reply_text("{not json")
    )
    client = client_for(fake_openai)

    first = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, response_format={"type": "json_object"}
    )
    second = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert first.model == "gpt-4o-mini-2024-07-18"
    assert json.loads(first.choices[0].message.content or "") == {"kind": "bug"}
    assert second.choices[0].message.content == "{not json"


def test_refusal_shows_in_message_refusal_with_no_content(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(reply_refusal("I can't help with that request."))

    completion = client_for(fake_openai).chat.completions.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Label
    )

    message = completion.choices[0].message
    assert message.refusal == "I can't help with that request."
    assert message.content is None
    assert message.parsed is None


def test_rate_limit_then_success_is_retried_by_the_sdk_itself(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(reply_status(429), reply_json({"kind": "question", "confidence": 0.7}))

    started = time.monotonic()
    completion = client_for(fake_openai, max_retries=2).chat.completions.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Label
    )

    assert completion.choices[0].message.parsed == Label(kind="question", confidence=0.7)
    assert fake_openai.calls == 2
    assert fake_openai.requests[0] == fake_openai.requests[1]
    assert time.monotonic() - started < 0.4, "the 429's retry-after should make the retry instant"


def test_server_error_without_retries_raises_internal_server_error(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(reply_status(500, message="The server had an error"))

    with pytest.raises(openai.InternalServerError) as raised:
        client_for(fake_openai, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        )

    assert raised.value.status_code == 500
    assert raised.value.body == {
        "message": "The server had an error",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert fake_openai.calls == 1


def test_rate_limit_error_carries_openai_error_code(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(reply_status(429, message="Rate limit reached"))

    with pytest.raises(openai.RateLimitError) as raised:
        client_for(fake_openai).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert raised.value.code == "rate_limit_exceeded"
    assert raised.value.response.headers["content-type"] == "application/json"


def test_delay_longer_than_the_client_timeout_raises_api_timeout_error(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(reply_delay(1.0, reply_json({"kind": "bug", "confidence": 1.0})))

    with pytest.raises(openai.APITimeoutError):
        client_for(fake_openai, timeout=0.2).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        )

    assert fake_openai.calls == 1


def test_stop_does_not_wait_for_a_pending_delay() -> None:
    fake = FakeOpenAI().start()
    fake.always(reply_delay(30.0, reply_json({})))
    with pytest.raises(openai.APITimeoutError):
        client_for(fake, timeout=0.1).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        )

    started = time.monotonic()
    fake.stop()

    assert time.monotonic() - started < 1.0


def test_requests_are_recorded_with_model_messages_and_response_format(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(reply_json({"kind": "refund", "confidence": 0.9}))

    client_for(fake_openai).chat.completions.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Label, temperature=0
    )

    [body] = fake_openai.requests
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == MESSAGES
    assert body["temperature"] == 0
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "Label"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert set(body["response_format"]["json_schema"]["schema"]["properties"]) == {
        "kind",
        "confidence",
    }


def test_unscripted_request_fails_loudly(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(openai.InternalServerError, match=NO_REPLY_LEFT):
        client_for(fake_openai).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert fake_openai.calls == 1


def test_always_answers_once_the_script_is_used_up(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(reply_text("first"))
    fake_openai.always(reply_text("again"))
    client = client_for(fake_openai)

    answers = [
        client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
        for _ in range(3)
    ]

    assert answers == ["first", "again", "again"]
    assert fake_openai.calls == 3


def test_models_endpoint_lists_models(fake_openai: FakeOpenAI) -> None:
    models = client_for(fake_openai).models.list()

    assert "gpt-4o-mini" in [model.id for model in models]
    assert fake_openai.calls == 0


def test_concurrent_requests_each_get_one_scripted_reply(fake_openai: FakeOpenAI) -> None:
    from concurrent.futures import ThreadPoolExecutor

    fake_openai.script(*(reply_text(str(n)) for n in range(20)))
    client = client_for(fake_openai)

    def ask(_: int) -> str | None:
        completion = client.chat.completions.create(model="m", messages=MESSAGES)
        return completion.choices[0].message.content

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(20)))

    assert sorted(answers, key=lambda a: int(a or "-1")) == [str(n) for n in range(20)]
    assert fake_openai.calls == 20
