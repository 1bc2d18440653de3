"""ctx.llm through the engine, against the fake OpenAI server with the real `openai` client:
schema-validated answers, bounded re-asks with the error fed back, the SDK's own retries, the
human exit, tokens and cost, and replays that do not call the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipelines import Gatehouse, LLMConfig, Price, StaticDirectory
from pipelines.errors import InvalidAnswer
from pipelines.views import CallView, TaskView
from storage.db import Database
from tests import llm_pipelines as lp
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier
from tests.fakes.openai import (
    FakeOpenAI,
    reply_delay,
    reply_json,
    reply_refusal,
    reply_status,
    reply_text,
)

MODEL = "gpt-4o-mini"
REFUND = {"kind": "refund", "confidence": 0.93}
TICKET = {"text": "Order 42 arrived broken, I want my money back."}

MakeGatehouse = Callable[..., Gatehouse]


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    lp.reset()


@pytest.fixture
def make_gatehouse(
    db: Database, clock: FakeClock, notifier: RecordingNotifier, fake_openai: FakeOpenAI
) -> MakeGatehouse:
    """A Gatehouse whose model is the fake server; keyword arguments override the LLMConfig."""

    def make(**overrides: Any) -> Gatehouse:
        config: dict[str, Any] = {
            "model": MODEL,
            "base_url": fake_openai.base_url,
            "api_key": "sk-test",
            "timeout_seconds": 5.0,
            "max_retries": 2,
            **overrides,
        }
        return Gatehouse(
            db,
            clock=clock,
            notifier=notifier,
            directory=StaticDirectory(GROUPS),
            llm=LLMConfig(**config),
        )

    return make


@pytest.fixture
def gatehouse_llm(make_gatehouse: MakeGatehouse) -> Gatehouse:
    return make_gatehouse()


def _llm_call(gatehouse: Gatehouse, run_id: str, name: str = "classify") -> CallView:
    [call] = [c for c in gatehouse.run(run_id).calls if c.kind == "llm" and c.name == name]
    return call


def _human_exit(gatehouse: Gatehouse, run_id: str) -> TaskView:
    """The run waits on exactly one open task, which `pending()` lists, for the model call."""
    run = gatehouse.run(run_id)
    assert run.status == "waiting", run.error
    [task] = run.tasks
    assert task.status == "open"
    assert run.waiting_for == [task.id]
    assert [item.id for item in gatehouse.pending()] == [task.id]
    call = _llm_call(gatehouse, run_id)
    assert (call.status, task.call_id) == ("awaiting_human", call.id)
    assert set(task.output_schema["properties"]) == {"kind", "confidence"}
    assert lp.executions == {"before_llm": 1}
    return task


def _answer_and_resume(gatehouse: Gatehouse, task: TaskView, answer: dict[str, Any]) -> Any:
    gatehouse.answer(task.id, user="olga", answer=answer)
    finished = gatehouse.resume(task.run_id)
    assert finished is not None and finished.status == "succeeded", finished
    return finished


# -- answers the model gives -------------------------------------------------------------


def test_valid_answer_is_the_result_and_recorded_with_its_meta(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json(REFUND, prompt_tokens=40, completion_tokens=11))

    run = gatehouse_llm.trigger("l_classify", {**TICKET, "system": "You triage support tickets."})

    assert run.status == "succeeded", run.error
    assert run.output == {"kind": "refund", "confidence": 0.93}
    assert lp.executions == {"before_llm": 1, "after_llm": 1}
    call = _llm_call(gatehouse_llm, run.id)
    assert (call.kind, call.status, call.output) == ("llm", "succeeded", REFUND)
    assert call.input["task"] == "classify"
    assert call.input["prompt"] == f"Ticket: {TICKET['text']}"
    meta = call.meta
    assert meta["model"] == MODEL
    assert meta["answered_by"] == "model"
    assert meta["confidence"] == 0.93
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == (40, 11)
    assert isinstance(meta["latency_ms"], float) and meta["latency_ms"] >= 0
    [attempt] = meta["attempts"]
    assert attempt["raw"] == '{"kind": "refund", "confidence": 0.93}'
    assert attempt["error"] is None
    [request] = fake_openai.requests
    assert request["model"] == MODEL
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert request["messages"][0]["content"].startswith("You triage support tickets.")
    assert request["messages"][0]["content"] == call.input["system"]
    assert request["messages"][1]["content"] == f"Ticket: {TICKET['text']}"
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"]["name"] == "Label"


def test_invalid_answer_is_asked_again_with_the_validation_error_fed_back(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json({"kind": "refund"}), reply_json(REFUND))

    run = gatehouse_llm.trigger("l_classify", TICKET)

    assert run.status == "succeeded", run.error
    assert run.output == REFUND
    assert fake_openai.calls == 2
    first, second = fake_openai.requests
    assert second["messages"][: len(first["messages"])] == first["messages"]
    fed_back = second["messages"][len(first["messages"]) :]
    assert fed_back[0] == {"role": "assistant", "content": '{"kind": "refund"}'}
    assert fed_back[1]["role"] == "user"
    meta = _llm_call(gatehouse_llm, run.id).meta
    failed, succeeded = meta["attempts"]
    assert failed["raw"] == '{"kind": "refund"}'
    assert "confidence" in failed["error"]
    assert failed["error"] in fed_back[1]["content"]
    assert (succeeded["raw"], succeeded["error"]) == (
        '{"kind": "refund", "confidence": 0.93}',
        None,
    )
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == (24, 14)


def test_malformed_json_counts_as_an_invalid_attempt(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_text('{"kind": "refund", "confidence": 0.9'), reply_json(REFUND))

    run = gatehouse_llm.trigger("l_classify", TICKET)

    assert run.output == REFUND
    [failed, _] = _llm_call(gatehouse_llm, run.id).meta["attempts"]
    assert failed["raw"] == '{"kind": "refund", "confidence": 0.9'
    assert "json" in failed["error"].lower()


def test_json_mode_sends_the_schema_in_the_instructions(
    make_gatehouse: MakeGatehouse, fake_openai: FakeOpenAI
) -> None:
    gatehouse = make_gatehouse(output_mode="json_object")
    fake_openai.script(reply_json(REFUND))

    run = gatehouse.trigger("l_classify", TICKET)

    assert run.output == REFUND
    [request] = fake_openai.requests
    assert request["response_format"] == {"type": "json_object"}
    assert '"confidence"' in request["messages"][0]["content"]


def test_confidence_at_the_bar_is_used(gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(reply_json({"kind": "bug", "confidence": 0.8}))

    run = gatehouse_llm.trigger("l_classify", {**TICKET, "min_confidence": 0.8})

    assert run.output == {"kind": "bug", "confidence": 0.8}


# -- the SDK's own retries ---------------------------------------------------------------


def test_rate_limit_then_success_is_one_attempt_retried_by_the_sdk(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_status(429, message="Rate limit reached"), reply_json(REFUND))

    run = gatehouse_llm.trigger("l_classify", TICKET)

    assert run.status == "succeeded", run.error
    assert run.output == REFUND
    assert fake_openai.calls == 2
    [attempt] = _llm_call(gatehouse_llm, run.id).meta["attempts"]
    assert attempt["error"] is None


def test_server_error_after_the_sdk_retries_takes_the_human_exit(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(reply_status(500, message="The server had an error"))

    run = gatehouse_llm.trigger("l_classify", TICKET)

    task = _human_exit(gatehouse_llm, run.id)
    assert fake_openai.calls == 3, "max_retries=2: the SDK's three tries, no second retry layer"
    meta = _llm_call(gatehouse_llm, run.id).meta
    [attempt] = meta["attempts"]
    assert attempt["raw"] is None
    assert "InternalServerError" in attempt["error"]
    assert meta["failure"] == "model_error"
    assert "InternalServerError" in task.context["reason"]


def test_timeout_after_the_sdk_retry_takes_the_human_exit(
    make_gatehouse: MakeGatehouse, fake_openai: FakeOpenAI
) -> None:
    gatehouse = make_gatehouse(timeout_seconds=0.2, max_retries=1)
    fake_openai.always(reply_delay(1.0, reply_json(REFUND)))

    run = gatehouse.trigger("l_classify", TICKET)

    _human_exit(gatehouse, run.id)
    assert fake_openai.calls == 2
    meta = _llm_call(gatehouse, run.id).meta
    [attempt] = meta["attempts"]
    assert "APITimeoutError" in attempt["error"]
    assert meta["failure"] == "model_error"


def test_timeout_with_on_fail_raise_gives_the_pipeline_cannot_answer(
    make_gatehouse: MakeGatehouse, fake_openai: FakeOpenAI
) -> None:
    gatehouse = make_gatehouse(timeout_seconds=0.2, max_retries=0)
    fake_openai.always(reply_delay(1.0, reply_json(REFUND)))

    run = gatehouse.trigger("l_classify", {**TICKET, "on_fail": "raise"})

    assert run.status == "succeeded", run.error
    assert "classify" in run.output["cannot_answer"]
    assert "APITimeoutError" in run.output["cannot_answer"]
    assert gatehouse.pending() == []
    call = _llm_call(gatehouse, run.id)
    assert call.status == "failed"
    assert "APITimeoutError" in (call.error or "")
    assert fake_openai.calls == 1


# -- the human exit ----------------------------------------------------------------------


def test_never_valid_answer_goes_to_a_human_with_what_the_model_said(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI, notifier: RecordingNotifier
) -> None:
    fake_openai.always(reply_json({"kind": "complaint", "confidence": 0.9}))

    run = gatehouse_llm.trigger("l_classify", TICKET)

    task = _human_exit(gatehouse_llm, run.id)
    assert fake_openai.calls == 3
    assert task.context["model_said"] == '{"kind": "complaint", "confidence": 0.9}'
    assert task.context["input"] == f"Ticket: {TICKET['text']}"
    assert notifier.names() == ["task_opened"]
    meta = _llm_call(gatehouse_llm, run.id).meta
    assert meta["failure"] == "invalid"
    assert len(meta["attempts"]) == 3
    assert all("kind" in attempt["error"] for attempt in meta["attempts"])


def test_human_answer_is_validated_by_the_output_model_and_becomes_the_result(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(reply_text("I think it's a refund"))
    run = gatehouse_llm.trigger("l_classify", {**TICKET, "max_attempts": 2})
    task = _human_exit(gatehouse_llm, run.id)
    assert fake_openai.calls == 2

    with pytest.raises(InvalidAnswer, match="Label"):
        gatehouse_llm.answer(task.id, user="olga", answer={"kind": "complaint", "confidence": 1})
    finished = _answer_and_resume(gatehouse_llm, task, {"kind": "question", "confidence": 1.0})

    assert finished.output == {"kind": "question", "confidence": 1.0}
    assert lp.executions == {"before_llm": 1, "after_llm": 1}
    assert fake_openai.calls == 2, "resuming after the answer does not ask the model again"
    call = _llm_call(gatehouse_llm, run.id)
    assert (call.status, call.output) == ("succeeded", {"kind": "question", "confidence": 1.0})
    assert call.meta["answered_by"] == "human"
    assert call.meta["answered_by_user"] == "olga"
    assert len(call.meta["attempts"]) == 2, "the model's attempts stay on the record"


def test_refusal_goes_to_a_human_without_asking_again(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_refusal("I can't help with that."))

    run = gatehouse_llm.trigger("l_classify", TICKET)

    task = _human_exit(gatehouse_llm, run.id)
    assert fake_openai.calls == 1
    assert task.context["model_said"] == "I can't help with that."
    meta = _llm_call(gatehouse_llm, run.id).meta
    assert meta["failure"] == "refused"
    finished = _answer_and_resume(gatehouse_llm, task, {"kind": "bug", "confidence": 1.0})
    assert finished.output == {"kind": "bug", "confidence": 1.0}


def test_low_confidence_goes_to_a_human_with_the_answer_as_a_suggestion(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json({"kind": "refund", "confidence": 0.4}))

    run = gatehouse_llm.trigger("l_classify", {**TICKET, "min_confidence": 0.8})

    task = _human_exit(gatehouse_llm, run.id)
    assert fake_openai.calls == 1, "a confident-enough answer is not asked for again"
    assert task.context["suggestion"] == {"kind": "refund", "confidence": 0.4}
    meta = _llm_call(gatehouse_llm, run.id).meta
    assert (meta["failure"], meta["confidence"]) == ("low_confidence", 0.4)
    finished = _answer_and_resume(gatehouse_llm, task, {"kind": "question", "confidence": 1.0})
    assert finished.output == {"kind": "question", "confidence": 1.0}
    assert _llm_call(gatehouse_llm, run.id).meta["answered_by"] == "human"


def test_low_confidence_with_on_fail_raise_gives_cannot_answer(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json({"kind": "refund", "confidence": 0.4}))

    run = gatehouse_llm.trigger("l_classify", {**TICKET, "min_confidence": 0.8, "on_fail": "raise"})

    assert run.status == "succeeded", run.error
    assert "0.8" in run.output["cannot_answer"]
    assert gatehouse_llm.pending() == []


def test_no_model_configured_goes_to_a_human_without_any_request(
    gatehouse: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    run = gatehouse.trigger("l_classify", TICKET)

    task = _human_exit(gatehouse, run.id)
    assert fake_openai.calls == 0
    assert task.context["model_said"] is None
    meta = _llm_call(gatehouse, run.id).meta
    assert (meta["failure"], meta["attempts"], meta["cost_usd"]) == ("no_model", [], None)
    finished = _answer_and_resume(gatehouse, task, {"kind": "refund", "confidence": 1.0})
    assert finished.output == {"kind": "refund", "confidence": 1.0}


def test_no_model_configured_with_on_fail_raise_gives_cannot_answer_without_any_request(
    gatehouse: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    run = gatehouse.trigger("l_classify", {**TICKET, "on_fail": "raise"})

    assert run.status == "succeeded", run.error
    assert "no model is configured" in run.output["cannot_answer"]
    assert fake_openai.calls == 0


def test_min_confidence_without_a_confidence_field_fails_the_run_before_any_request(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    run = gatehouse_llm.trigger("l_qualify", {"message": "hi", "min_confidence": 0.5})

    assert run.status == "failed"
    assert "confidence" in (run.error or "")
    assert fake_openai.calls == 0


# -- tokens and cost ---------------------------------------------------------------------


def test_tokens_and_cost_come_from_the_usage_and_the_price_table(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json(REFUND, prompt_tokens=1000, completion_tokens=200))

    run = gatehouse_llm.trigger("l_classify", {**TICKET, "model": "gpt-4o"})

    assert fake_openai.requests[0]["model"] == "gpt-4o"
    meta = _llm_call(gatehouse_llm, run.id).meta
    assert meta["model"] == "gpt-4o"
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == (1000, 200)
    # gpt-4o: $2.50 per million prompt tokens, $10.00 per million completion tokens.
    assert meta["cost_usd"] == pytest.approx(0.0045)


def test_cost_covers_every_attempt(gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(
        reply_text("not json", prompt_tokens=1_000_000, completion_tokens=0),
        reply_json(REFUND, prompt_tokens=1_000_000, completion_tokens=1_000_000),
    )

    run = gatehouse_llm.trigger("l_classify", TICKET)

    meta = _llm_call(gatehouse_llm, run.id).meta
    # gpt-4o-mini: $0.15 + $0.15 prompt, $0.60 completion.
    assert meta["cost_usd"] == pytest.approx(0.90)


def test_price_table_can_be_overridden_and_unknown_models_have_no_cost(
    make_gatehouse: MakeGatehouse, fake_openai: FakeOpenAI
) -> None:
    gatehouse = make_gatehouse(model="local-llama", prices={"local-llama": Price(1.0, 3.0)})
    fake_openai.script(
        reply_json(REFUND, prompt_tokens=500_000, completion_tokens=100_000),
        reply_json(REFUND, prompt_tokens=500_000, completion_tokens=100_000),
    )

    priced = gatehouse.trigger("l_classify", TICKET)
    unpriced = gatehouse.trigger("l_classify", {**TICKET, "model": "mystery-7b"})

    assert _llm_call(gatehouse, priced.id).meta["cost_usd"] == pytest.approx(0.80)
    assert _llm_call(gatehouse, unpriced.id).meta["cost_usd"] is None


# -- replays -----------------------------------------------------------------------------


def test_replay_uses_the_recorded_answer_and_does_not_call_the_model(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json(REFUND))
    run = gatehouse_llm.trigger("l_classify", TICKET)
    assert fake_openai.calls == 1

    report = gatehouse_llm.replay(run.id)

    assert fake_openai.calls == 1
    assert report.finished and report.output_matches, report.to_json()
    [line] = [line for line in report.lines if line.kind == "llm"]
    assert (line.key, line.outcome, line.detail) == ("classify#1", "reused", REFUND)


def test_resume_after_a_later_human_question_reuses_the_recorded_answer(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json(REFUND))
    run = gatehouse_llm.trigger("l_classify_then_confirm", TICKET)
    assert run.status == "waiting", run.error
    [task] = gatehouse_llm.run(run.id).tasks
    assert task.name == "confirm"

    gatehouse_llm.answer(task.id, user="olga", answer={"ok": True})
    finished = gatehouse_llm.resume(run.id)

    assert finished is not None and finished.status == "succeeded", finished
    assert finished.output == {"kind": "refund", "confirmed": True}
    assert fake_openai.calls == 1


def test_replay_of_a_cannot_answer_run_does_not_call_the_model(
    make_gatehouse: MakeGatehouse, fake_openai: FakeOpenAI
) -> None:
    gatehouse = make_gatehouse(max_retries=0)
    fake_openai.script(reply_status(500))
    run = gatehouse.trigger("l_classify", {**TICKET, "on_fail": "raise"})
    assert "cannot_answer" in run.output

    report = gatehouse.replay(run.id)

    assert fake_openai.calls == 1
    assert report.finished, report.to_json()
    assert report.output == run.output, "the replayed CannotAnswer says what the live one said"


def test_cannot_answer_reads_the_same_when_a_resume_replays_it(
    make_gatehouse: MakeGatehouse, fake_openai: FakeOpenAI
) -> None:
    gatehouse = make_gatehouse(max_retries=0)
    fake_openai.script(reply_status(500))
    run = gatehouse.trigger("l_classify_or_confirm", TICKET)
    [task] = gatehouse.run(run.id).tasks
    assert task.name == "confirm"
    asked_with = task.question

    gatehouse.answer(task.id, user="olga", answer={"ok": False})
    finished = gatehouse.resume(run.id)

    assert finished is not None and finished.status == "succeeded", finished
    assert fake_openai.calls == 1
    assert finished.output["reason"] == asked_with, "the resume saw the same CannotAnswer"
    assert finished.output["reason"].startswith("classify: ")


def _qualified_lead(gatehouse: Gatehouse, fake_openai: FakeOpenAI) -> str:
    fake_openai.script(
        reply_json({"company": "Acme", "role": "CTO"}),
        reply_json({"subject": "Hello Acme", "body": "Hi!"}),
    )
    run = gatehouse.trigger("l_qualify", {"message": "I'm the CTO at Acme, let's talk."})
    assert run.output == {"company": "Acme", "subject": "Hello Acme"}, run.error
    return run.id


def test_fresh_replay_asks_the_model_again_and_reports_each_difference(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    run_id = _qualified_lead(gatehouse_llm, fake_openai)
    fake_openai.script(
        reply_json({"company": "Acme", "role": "CTO"}),
        reply_json({"subject": "Hi from us", "body": "Hi!"}),
    )

    report = gatehouse_llm.replay(run_id, fresh=True)

    assert fake_openai.calls == 4
    extract, draft = [line for line in report.lines if line.kind == "llm"]
    assert (extract.key, extract.outcome) == ("extract_lead#1", "fresh: same")
    assert (draft.key, draft.outcome) == ("draft_intro#1", "fresh: differs")
    assert draft.detail == {"subject": {"recorded": "Hello Acme", "fresh": "Hi from us"}}
    assert report.finished and report.output_matches, "the replay follows the record"
    run = gatehouse_llm.run(run_id)
    assert [c.output for c in run.calls if c.kind == "llm"][1]["subject"] == "Hello Acme"


def test_fresh_replay_reports_a_fresh_call_without_a_usable_answer(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    run_id = _qualified_lead(gatehouse_llm, fake_openai)
    fake_openai.script(reply_refusal(), reply_json({"subject": "Hello Acme", "body": "Hi!"}))

    report = gatehouse_llm.replay(run_id, fresh=True)

    extract, draft = [line for line in report.lines if line.kind == "llm"]
    assert extract.outcome == "fresh: no usable answer"
    assert draft.outcome == "fresh: same"
    assert gatehouse_llm.pending() == [], "a fresh replay never opens a human task"


def test_replay_reuses_every_recorded_model_call_without_calling_the_model(
    gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    run_id = _qualified_lead(gatehouse_llm, fake_openai)

    report = gatehouse_llm.replay(run_id)

    assert fake_openai.calls == 2
    assert [line.outcome for line in report.lines if line.kind == "llm"] == ["reused", "reused"]
