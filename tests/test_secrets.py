"""Secrets never in clear: plant unique secrets (Slack tokens, the signing secret, the LLM key, a
webhook secret, the secret key, a sensitive input field, a sensitive LLM output field), run a
realistic workload (webhook delivery, the model, a gated tool approved in Slack across a
restart, a failing run, slash commands, App Home, the CLI's `--json`), then grep everything the
suite can see: every log line, every Slack call, every table and column, every CLI output."""

from __future__ import annotations

import io
import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import structlog
from cryptography.fernet import Fernet
from pydantic import BaseModel, SecretStr
from sqlalchemy import create_engine, inspect, text
from starlette.testclient import TestClient
from typer.testing import CliRunner

from bot.cli.main import app as cli_app
from bot.http.asgi import build_asgi
from bot.http.webhooks import sign_delivery, webhook_routes
from pipelines import Context, Sensitive, pipeline, sensitive, tool, webhook
from pipelines.logs import configure_logging, redact_secrets, remember_secrets
from tests.fakes.clock import FakeClock
from tests.fakes.openai import FakeOpenAI, reply_json
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SIGNING_SECRET, slack_world

TAG = secrets.token_hex(4)
CARD = f"4111{TAG}99990000"  # a sensitive input field
ACCOUNT = f"acct-{TAG}-sensitive-output"  # a sensitive field of the model's answer
BOT_TOKEN = f"xoxb-planted-{TAG}-bot-token"
APP_TOKEN = f"xapp-planted-{TAG}-app-token"
SIGNING = SIGNING_SECRET  # the harness's sender signs with it
LLM_KEY = f"sk-planted-{TAG}-llm-api-key"
HOOK_SECRET = f"planted-hook-{TAG}"
SECRET_KEY = Fernet.generate_key().decode()
PLANTED = [CARD, ACCOUNT, BOT_TOKEN, APP_TOKEN, SIGNING, LLM_KEY, HOOK_SECRET, SECRET_KEY]

charged: list[str] = []


class Payment(BaseModel):
    customer: str
    card_number: Annotated[str, Sensitive]
    amount: float


class Assessment(BaseModel):
    decision: Literal["charge", "refuse"]
    account_token: Annotated[str, Sensitive]
    confidence: float


class ChargeArgs(BaseModel):
    card_number: Annotated[str, Sensitive]
    account_token: Annotated[str, Sensitive]
    amount: float


class Charge(BaseModel):
    charge_id: str


@tool(kind="spend", approval="always", approvers=["U_BOB"])
def sec_charge(args: ChargeArgs, *, idempotency_key: str) -> Charge:
    charged.append(f"{args.card_number}|{args.account_token}")
    return Charge(charge_id=f"ch_{len(charged)}")


@pipeline("sec_payment", input=Payment, triggers=[webhook()])
def sec_payment(ctx: Context, p: Payment) -> dict[str, Any]:
    structlog.get_logger().warning(
        "sec.careless_log", card=p.card_number, note=f"card {p.card_number}"
    )
    assessment = ctx.llm(
        "assess",
        task="classify",
        prompt=f"{p.customer} pays {p.amount} with card {p.card_number}",
        output=Assessment,
    )
    ctx.step("describe", describe, p.card_number)
    charge = ctx.tool(
        sec_charge,
        ChargeArgs(
            card_number=p.card_number, account_token=assessment.account_token, amount=p.amount
        ),
    )
    return {"charge": charge.charge_id, "decision": assessment.decision}


def describe(card: str) -> str:
    return f"card ending {card[-4:]}"


@pipeline("sec_declined", input=Payment)
def sec_declined(ctx: Context, p: Payment) -> None:
    raise ValueError(f"card {p.card_number} was declined for {p.customer}")


# -- the grep ----------------------------------------------------------------------------------


def leaks(where: str, text_: str) -> list[str]:
    return [f"{where}: {secret!r}" for secret in PLANTED if secret in text_]


def dump_database(url: str) -> str:
    """Every row of every table, every column, as text."""
    engine = create_engine(url)
    out: list[str] = []
    try:
        with engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    out.append(f"{table}: {tuple(row)!r}")
    finally:
        engine.dispose()
    return "\n".join(out)


@pytest.fixture
def log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every structlog event of the test, JSON, at debug level, into a file."""
    path = tmp_path / "gatehouse.log"
    with path.open("w") as out:
        monkeypatch.setattr(sys, "stderr", out)
        configure_logging("json", "debug", stream=out)
        yield path


@pytest.fixture(autouse=True)
def _reset_charges() -> None:
    charged.clear()


def test_no_planted_secret_is_written_anywhere_and_the_run_resumes_after_a_restart(
    any_db_url: str, log_file: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_openai.always(
        reply_json({"decision": "charge", "account_token": ACCOUNT, "confidence": 0.97})
    )
    clock = FakeClock()
    overrides = {
        "slack_app_token": None,
        "llm_model": "gpt-fake",
        "llm_base_url": fake_openai.base_url,
        "llm_api_key": SecretStr(LLM_KEY),
        "webhook_secrets": {"sec_payment": HOOK_SECRET},
        "secret_key": SecretStr(SECRET_KEY),
    }
    remember_secrets([APP_TOKEN])  # Socket Mode's token, as a deployment would configure it
    slack_calls: list[Any] = []
    with FakeSlack(token=BOT_TOKEN) as fake:
        # 1. A webhook delivery queues the run; a worker takes it to the approval.
        with slack_world(fake, any_db_url, clock, **overrides) as world:
            hooks = build_asgi(None, webhook_routes(world.gatehouse, world.bot.settings))
            body = json.dumps({"customer": "Ada", "card_number": CARD, "amount": 120.0}).encode()
            with TestClient(hooks) as client:
                accepted = client.post(
                    "/hooks/sec_payment",
                    content=body,
                    headers=sign_delivery(HOOK_SECRET, body, int(clock.now().timestamp())),
                )
                bad = json.dumps({"customer": "Eve", "card_number": CARD, "amount": "lots"})
                refused = client.post(
                    "/hooks/sec_payment",
                    content=bad.encode(),
                    headers=sign_delivery(HOOK_SECRET, bad.encode(), int(clock.now().timestamp())),
                )
            assert accepted.status_code == 202, accepted.text
            assert refused.status_code == 400
            run_id = accepted.json()["run_id"]
            assert world.gatehouse.worker().run_until_idle() == 1
            run = world.gatehouse.run(run_id)
            assert run.status == "waiting", run.error
            assert run.input["card_number"] == sensitive.MASK
            [card] = world.approval_cards()
            assert sensitive.MASK in json.dumps(card["blocks"], ensure_ascii=False)
            assert world.slack.command(f"run {run_id}", user_id="U_BOB").status == 200
            assert world.slack.command("pending", user_id="U_BOB").status == 200
            assert world.slack.app_home_opened("U_BOB").status == 200
            declined = world.gatehouse.trigger(
                "sec_declined", {"customer": "Bo", "card_number": CARD, "amount": 5}
            )
            assert declined.status == "failed"
            assert "[redacted]" in (declined.error or "")
            world.settle()
            slack_calls.extend(fake.calls)

        # 2. "Restart": a new bot on the same database; only GATEHOUSE_SECRET_KEY carries over.
        sensitive.keyring = sensitive._Keyring()
        clock.advance(60)
        with slack_world(fake, any_db_url, clock, **overrides) as world:
            response = world.slack.block_action(
                "approval.approve", message=card["ts"], user_id="U_BOB"
            )
            assert response.status == 200
            world.settle()
            finished = world.gatehouse.run(run_id)
            assert finished.status == "succeeded", finished.error
            world.slack.command(f"run {run_id}", user_id="U_BOB")
            world.slack.app_home_opened("U_BOB")
            world.settle()
            slack_calls.extend(fake.calls)

    assert charged == [f"{CARD}|{ACCOUNT}"], "the tool got the plain values after the restart"

    # 3. The CLI's JSON, with the same secrets in its environment.
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", any_db_url)
    monkeypatch.setenv("GATEHOUSE_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("GATEHOUSE_LLM_API_KEY", LLM_KEY)
    monkeypatch.setenv("GATEHOUSE_LOG_LEVEL", "debug")
    monkeypatch.setenv("GATEHOUSE_LOG_FORMAT", "json")
    cli = CliRunner()
    outputs = []
    commands = (["run", run_id, "--json"], ["run", run_id], ["runs", "--json"], ["replay", run_id])
    for args in commands:
        result = cli.invoke(cli_app, args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    shown = json.loads(outputs[0])
    assert shown["input"]["card_number"] == sensitive.MASK
    configure_logging("json", "debug", stream=sys.stderr)  # the CLI pointed logging elsewhere

    assert slack_calls and log_file.read_text().count("\n") > 10
    found = leaks("log", log_file.read_text())
    found += leaks("slack", json.dumps(slack_calls, default=str))
    found += leaks("database", dump_database(any_db_url))
    for args, output in zip(commands, outputs, strict=True):
        found += leaks(f"cli {' '.join(args)}", output)
    assert found == []
    assert "[redacted]" in log_file.read_text()


def test_the_log_processor_redacts_configured_values_token_shapes_and_secret_keys() -> None:
    remember_secrets([HOOK_SECRET], keys=["Customer_Email"])
    event = redact_secrets(
        None,
        "info",
        {
            "event": "x",
            "header": f"Authorization: Bearer {HOOK_SECRET}",
            "nested": {"list": ["token xoxp-1234-5678-abcdefgh in text", "fine"]},
            "api_key": "whatever",
            "text": "sk-abcdefghijklmnopqrstuvwx and sk-ip",
            "count": 3,
            "customer_email": "ada@example.com",
        },
    )
    assert event == {
        "event": "x",
        "header": "Authorization: Bearer [redacted]",
        "nested": {"list": ["token [redacted] in text", "fine"]},
        "api_key": "[redacted]",
        "text": "[redacted] and sk-ip",
        "count": 3,
        "customer_email": "[redacted]",
    }


def test_a_sqlite_database_without_a_configured_key_gets_a_key_file_beside_it(
    tmp_path: Path,
) -> None:
    ring = sensitive._Keyring()
    ring.configure(None, f"sqlite:///{tmp_path}/g.db")
    sealed = ring.seal(b"4111")
    key_file = tmp_path / "g.db.key"
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    again = sensitive._Keyring()  # another process
    again.configure(None, f"sqlite:///{tmp_path}/g.db")
    assert again.open(sealed) == b"4111"


def test_postgres_without_a_key_refuses_to_store_a_sensitive_value() -> None:
    ring = sensitive._Keyring()
    ring.configure(None, "postgresql+psycopg://db/gatehouse")
    with pytest.raises(sensitive.SensitiveValueError, match="GATEHOUSE_SECRET_KEY"):
        ring.seal(b"4111")


def test_models_without_sensitive_fields_dump_as_before() -> None:
    class Plain(BaseModel):
        a: str

    assert sensitive.sensitive_fields(Plain) == frozenset()
    assert Plain(a="x").model_dump(mode="json") == {"a": "x"}
    stream = io.StringIO()
    assert stream.getvalue() == ""


def test_a_rotated_key_still_opens_what_the_old_one_sealed_and_a_wrong_key_says_so() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = sensitive._Keyring()
    before.configure(old, None)
    sealed = before.seal(b'"4111"')
    rotated = sensitive._Keyring()
    rotated.configure(f"{new},{old}", None)
    assert rotated.open(sealed) == b'"4111"'
    other = sensitive._Keyring()
    other.configure(new, None)
    with pytest.raises(sensitive.SensitiveValueError, match="key this process does not have"):
        other.open(sealed)
    with pytest.raises(sensitive.SensitiveValueError, match="Fernet keys"):
        sensitive._Keyring().configure("not-a-key", None)


def test_input_a_model_refuses_is_recorded_with_its_sensitive_fields_redacted() -> None:
    raw = {"customer": "Eve", "card_number": CARD, "amount": "lots"}
    assert sensitive.redact_fields(Payment, raw) == {
        "customer": "Eve",
        "card_number": "[redacted]",
        "amount": "lots",
    }
