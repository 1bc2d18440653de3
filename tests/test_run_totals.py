"""A run's model totals (tokens in and out, cost in USD) in `gatehouse run`, its `--json` and
`/gatehouse run`, summed from the recorded LLM calls and saying where the cost comes from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bot.cli.main import app
from tests import cli_llm_pipelines  # noqa: F401  (registers cli_llm_mood for the Slack test)
from tests.fakes.clock import FakeClock
from tests.fakes.openai import FakeOpenAI, reply_json, reply_text
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, card_texts, slack_world

MINI = (0.15, 0.60)  # gpt-4o-mini, USD per million tokens (the built-in table)


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
    monkeypatch.delenv("GATEHOUSE_LLM_PRICES", raising=False)
    return fake_openai


def ok(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def _trigger() -> str:
    run = json.loads(
        ok("trigger", "cli_llm_mood", "--input", '{"text": "great day"}', "--json").stdout
    )
    return str(run["id"])


def test_run_json_has_tokens_and_cost_totals_from_its_model_calls(llm_env: FakeOpenAI) -> None:
    llm_env.script(
        reply_text("{not json", prompt_tokens=100, completion_tokens=10),
        reply_json({"mood": "happy", "confidence": 0.9}, prompt_tokens=120, completion_tokens=12),
    )
    run_id = _trigger()

    totals = json.loads(ok("run", run_id, "--json").stdout)["totals"]

    expected = (220 * MINI[0] + 22 * MINI[1]) / 1_000_000
    assert totals["prompt_tokens"] == 220 and totals["completion_tokens"] == 22
    assert totals["tokens"] == 242
    assert totals["cost_usd"] == pytest.approx(expected)
    assert (totals["llm_calls"], totals["model_calls"], totals["priced_calls"]) == (1, 1, 1)
    assert totals["cost_partial"] is False and totals["unpriced_models"] == []
    assert "from 1 model call, priced by" in totals["cost_source"]
    assert "GATEHOUSE_LLM_PRICES" in totals["cost_source"]


def test_run_text_shows_the_totals_and_where_the_cost_comes_from(llm_env: FakeOpenAI) -> None:
    llm_env.script(
        reply_json({"mood": "happy", "confidence": 0.9}, prompt_tokens=1000, completion_tokens=100)
    )
    run_id = _trigger()

    shown = ok("run", run_id).stdout

    # 1000 * 0.15 + 100 * 0.60 per million = 0.00021 USD
    assert "totals: tokens 1,000 in / 100 out · cost 0.00021 USD from 1 model call" in shown


def test_a_model_with_no_price_says_so_and_never_shows_zero(
    llm_env: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEHOUSE_LLM_MODEL", "llama-local")
    llm_env.script(
        reply_json({"mood": "happy", "confidence": 0.9}, prompt_tokens=50, completion_tokens=5)
    )
    run_id = _trigger()

    totals = json.loads(ok("run", run_id, "--json").stdout)["totals"]
    shown = ok("run", run_id).stdout

    assert totals["cost_usd"] is None
    assert totals["unpriced_models"] == ["llama-local"]
    assert "no price configured for llama-local" in totals["cost_source"]
    assert "tokens 50 in / 5 out · cost unknown: no price configured for llama-local" in shown
    assert "0.00" not in shown.split("totals:")[1]


def test_a_run_that_asked_no_model_has_no_cost(
    llm_env: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEHOUSE_LLM_MODEL")
    monkeypatch.delenv("GATEHOUSE_LLM_BASE_URL")
    run_id = _trigger()  # no model: the step waits for a person

    totals = json.loads(ok("run", run_id, "--json").stdout)["totals"]

    assert (totals["llm_calls"], totals["model_calls"], totals["cost_usd"]) == (1, 0, None)
    assert totals["cost_source"] == "no model calls"


# -- /gatehouse run ---------------------------------------------------------------------------


@pytest.fixture
def world(
    fake_slack: FakeSlack,
    sqlite_url: str,
    clock: FakeClock,
    slack_mode: str,
    fake_openai: FakeOpenAI,
) -> Iterator[SlackWorld]:
    with slack_world(
        fake_slack,
        sqlite_url,
        clock,
        mode=slack_mode,  # type: ignore[arg-type]
        llm_model="gpt-4o-mini",
        llm_base_url=fake_openai.base_url,
        llm_max_retries=0,
    ) as built:
        yield built


def test_slash_run_shows_the_runs_totals(world: SlackWorld, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(
        reply_json({"mood": "happy", "confidence": 0.9}, prompt_tokens=1000, completion_tokens=100)
    )
    run = world.gatehouse.trigger("cli_llm_mood", {"text": "great day"}, user="U_CAROL")
    assert run.status == "succeeded", run.error

    world.slack.command(f"run {run.id}", user_id="U_CAROL")
    world.settle()

    replies = [card_texts(e.get("blocks", [])) for e in world.fake.ephemerals("U_CAROL")]
    [shown] = [r for r in replies if f"Run {run.id}" in r]
    assert "*Totals* · tokens 1,000 in / 100 out · cost 0.00021 USD from 1 model call" in shown
