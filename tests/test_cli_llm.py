"""LLM calls as the CLI shows them: model, attempts, tokens, cost; the human exit; replay --fresh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bot.cli.main import app
from tests.fakes.openai import FakeOpenAI, reply_json, reply_text


@pytest.fixture
def llm_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str, fake_openai: FakeOpenAI
) -> FakeOpenAI:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.cli_llm_pipelines")
    monkeypatch.setenv("GATEHOUSE_LLM_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("GATEHOUSE_LLM_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("GATEHOUSE_LLM_MAX_RETRIES", "0")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return fake_openai


def ok(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def test_run_shows_the_model_attempts_tokens_and_cost_of_an_llm_call(llm_env: FakeOpenAI) -> None:
    llm_env.script(
        reply_text("{not json", prompt_tokens=100, completion_tokens=10),
        reply_json({"mood": "happy", "confidence": 0.9}, prompt_tokens=120, completion_tokens=12),
    )
    run = json.loads(
        ok("trigger", "cli_llm_mood", "--input", '{"text": "great day"}', "--json").stdout
    )
    assert run["status"] == "succeeded"
    meta = run["calls"][0]["meta"]
    assert meta["prompt_tokens"] == 220 and meta["completion_tokens"] == 22
    assert meta["cost_usd"] == pytest.approx((220 * 0.15 + 22 * 0.60) / 1_000_000)
    shown = ok("run", run["id"]).stdout
    assert "model gpt-4o-mini · 2 attempts · confidence 0.9 · 220+22 tokens" in shown
    assert "answered by model" in shown
    assert "attempt 1: (answer): Invalid JSON" in shown


def test_low_confidence_waits_for_a_person_and_their_answer_finishes_the_run(
    llm_env: FakeOpenAI,
) -> None:
    llm_env.script(reply_json({"mood": "angry", "confidence": 0.3}))
    run = json.loads(ok("trigger", "cli_llm_mood", "--input", '{"text": "hmm"}', "--json").stdout)
    assert run["status"] == "waiting"
    task_id = run["waiting_for"][0]
    pending = json.loads(ok("pending", "--json").stdout)
    assert pending[0]["context"]["suggestion"] == {"mood": "angry", "confidence": 0.3}
    ok("answer", task_id, "--as", "olga", "--answer", '{"mood": "neutral", "confidence": 1}')
    finished = json.loads(ok("run", run["id"], "--json").stdout)
    assert finished["status"] == "succeeded"
    assert finished["output"] == {"mood": "neutral", "confidence": 1.0}
    assert finished["calls"][0]["meta"]["answered_by"] == "human"
    assert (
        "why a human: the model's confidence 0.3 is below the bar of 0.6"
        in ok("run", run["id"]).stdout
    )


def test_replay_fresh_asks_the_model_again_and_shows_what_changed(llm_env: FakeOpenAI) -> None:
    llm_env.script(reply_json({"mood": "happy", "confidence": 0.9}))
    run = json.loads(
        ok("trigger", "cli_llm_mood", "--input", '{"text": "great day"}', "--json").stdout
    )
    plain = json.loads(ok("replay", run["id"], "--json").stdout)
    assert llm_env.calls == 1  # a plain replay reuses the record
    assert plain["calls"][0]["outcome"] == "reused"
    llm_env.script(reply_json({"mood": "sad", "confidence": 0.9}))
    fresh = json.loads(ok("replay", run["id"], "--fresh", "--json").stdout)
    assert llm_env.calls == 2
    assert fresh["calls"][0]["outcome"] == "fresh: differs"
    assert fresh["calls"][0]["detail"] == {"mood": {"recorded": "happy", "fresh": "sad"}}
    llm_env.script(reply_json({"mood": "sad", "confidence": 0.9}))
    assert "fresh: differs" in ok("replay", run["id"], "--fresh").stdout
