"""No secret in any record or message: a configured secret (the LLM key) or a token-shaped string
quoted by an exception a tool or the model client raised, or returned in a tool's result, is
redacted before it is written (runs, calls, run events, audit) and so before `/gatehouse run`
or `gatehouse run` can show it; and a `Gatehouse(url)` built in code, with no
`configure_logging`, keeps its LLM key out of its records and its log lines."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
import structlog
from pydantic import BaseModel, SecretStr
from typer.testing import CliRunner

from bot.cli.main import app as cli_app
from pipelines import Context, Gatehouse, LLMConfig, pipeline, tool
from tests.fakes.clock import FakeClock
from tests.fakes.openai import FakeOpenAI, reply_status
from tests.fakes.slack import FakeSlack
from tests.slack_harness import slack_world
from tests.test_secrets import dump_database

TAG = secrets.token_hex(4)
LLM_KEY = f"sk-planted-{TAG}-record-llm-key"  # configured: GATEHOUSE_LLM_API_KEY
USER_TOKEN = f"xoxp-{TAG}0000-planted-user-token"  # configured nowhere: caught by its shape
BEARER = f"planted{TAG}bearer"  # after "Bearer ": caught by its shape
PLANTED = [LLM_KEY, USER_TOKEN, BEARER]


class Order(BaseModel):
    order: str


class Lookup(BaseModel):
    note: str


class Answer(BaseModel):
    kind: str
    confidence: float


@tool(kind="read", approval="never")
def rs_upstream(args: Order, *, idempotency_key: str) -> Lookup:
    if args.order == "explode":
        raise RuntimeError(f"upstream said 401 for key {LLM_KEY} (Authorization: Bearer {BEARER})")
    return Lookup(note=f"issued {USER_TOKEN} for {args.order}")


@pipeline("rs_tool_secrets", input=Order)
def rs_tool_secrets(ctx: Context, given: Order) -> dict[str, Any]:
    found = ctx.tool(rs_upstream, given)
    return {"note": found.note}


@pipeline("rs_model_secrets", input=Order)
def rs_model_secrets(ctx: Context, given: Order) -> dict[str, Any]:
    answer = ctx.llm("classify", task="classify", prompt=given.order, output=Answer)
    return {"kind": answer.kind}


def leaks(where: str, text: str) -> list[str]:
    return [f"{where}: {secret!r}" for secret in PLANTED if secret in text]


def test_secrets_quoted_by_a_tool_or_the_model_client_are_redacted_from_every_record(
    any_db_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The model server echoes the key it was sent in its refusal, as some proxies do.
    fake_openai.script(reply_status(401, message=f"Incorrect API key provided: {LLM_KEY}"))
    overrides = {
        "slack_app_token": None,
        "llm_model": "gpt-fake",
        "llm_base_url": fake_openai.base_url,
        "llm_api_key": SecretStr(LLM_KEY),
    }
    with FakeSlack() as fake, slack_world(fake, any_db_url, FakeClock(), **overrides) as world:
        gh = world.gatehouse
        model_run = gh.trigger("rs_model_secrets", {"order": "o-1"}, user="U_ALICE")
        tool_run = gh.trigger("rs_tool_secrets", {"order": "explode"}, user="U_ALICE")
        fine_run = gh.trigger("rs_tool_secrets", {"order": "o-2"}, user="U_ALICE")
        assert model_run.status == "failed" and tool_run.status == "failed"
        assert fine_run.status == "succeeded", fine_run.error
        assert "[redacted]" in (model_run.error or "") and "[redacted]" in (tool_run.error or "")
        acks = [
            world.slack.command(f"run {run.id}", user_id="U_BOB").json
            for run in (model_run, tool_run, fine_run)
        ]
        world.settle()
        slack = json.dumps([fake.calls, acks], default=str)
        assert tool_run.id in slack  # `/gatehouse run` did answer

    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", any_db_url)
    monkeypatch.setenv("GATEHOUSE_LLM_API_KEY", LLM_KEY)
    cli = CliRunner()
    shown = []
    for run in (model_run, tool_run, fine_run):
        for args in (["run", run.id], ["run", run.id, "--json"]):
            result = cli.invoke(cli_app, args)
            assert result.exit_code == 0, result.output
            shown.append((" ".join(args), result.output))

    database = dump_database(any_db_url)
    assert "[redacted]" in database
    found = leaks("database", database) + leaks("slack", slack)
    for args, output in shown:
        found += leaks(f"cli {args}", output)
    assert found == []


def test_a_gatehouse_built_in_code_keeps_its_llm_key_out_of_records_and_logs(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key = f"sk-in-code-{secrets.token_hex(8)}-key"
    structlog.reset_defaults()  # an application that never called configure_logging
    gh = Gatehouse(sqlite_url, clock=FakeClock(), llm=LLMConfig(model="m", api_key=key))

    @tool(kind="read", approval="never")
    def rs_in_code(args: Order, *, idempotency_key: str) -> Lookup:
        raise RuntimeError(f"refused key {key}")

    @pipeline("rs_in_code", input=Order)
    def rs_in_code_pipeline(ctx: Context, given: Order) -> None:
        ctx.tool(rs_in_code, given)

    run = gh.trigger("rs_in_code", {"order": "o-3"})
    assert run.status == "failed"
    assert "refused key [redacted]" in (run.error or "")
    assert key not in dump_database(sqlite_url)
    structlog.get_logger().warning("app.saw", error=f"the key is {key}")
    logged = capsys.readouterr()
    assert key not in logged.out + logged.err
    assert "run.failed" in logged.out + logged.err and "the key is [redacted]" in logged.out
    gh.db.dispose()
