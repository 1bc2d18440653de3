"""A request the model server rejects as malformed is a configuration problem: the run fails
loudly instead of quietly becoming a human task. And `replay --fresh` compares a call that was
recorded as failed with what the model answers now."""

from __future__ import annotations

from pipelines import Gatehouse, LLMConfig
from storage.db import Database
from tests import llm_pipelines as lp
from tests.fakes.clock import FakeClock
from tests.fakes.openai import FakeOpenAI, reply_json, reply_status, reply_text

TICKET = {"text": "Order 42 arrived broken, I want my money back."}


def _gatehouse(db: Database, clock: FakeClock, fake: FakeOpenAI) -> Gatehouse:
    config = LLMConfig(
        model="gpt-4o-mini", base_url=fake.base_url, api_key="sk-test", max_retries=0
    )
    return Gatehouse(db, clock=clock, llm=config)


def test_a_server_that_rejects_the_request_fails_the_run_with_what_to_check(
    db: Database, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    lp.reset()
    fake_openai.script(reply_status(400, message="response_format json_schema is not supported"))
    run = _gatehouse(db, clock, fake_openai).trigger("l_classify", TICKET)
    assert run.status == "failed"
    assert "HTTP 400" in (run.error or "") and "GATEHOUSE_LLM_OUTPUT_MODE" in (run.error or "")
    assert fake_openai.calls == 1


def test_fresh_replay_of_a_call_recorded_as_failed_shows_the_new_answer(
    db: Database, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    lp.reset()
    gatehouse = _gatehouse(db, clock, fake_openai)
    fake_openai.script(reply_text("nope"))
    run = gatehouse.trigger("l_classify", {**TICKET, "on_fail": "raise", "max_attempts": 1})
    assert run.status == "succeeded" and "cannot_answer" in run.output
    fake_openai.script(reply_json({"kind": "refund", "confidence": 0.9}))
    report = gatehouse.replay(run.id, fresh=True)
    [line] = [line for line in report.lines if line.kind == "llm"]
    assert line.outcome == "fresh: differs"
    assert line.detail["fresh"] == {"kind": "refund", "confidence": 0.9}
    assert str(line.detail["recorded"]).startswith("failed: classify:")
