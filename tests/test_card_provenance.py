"""Cards say who produced each value they show: a model's answer names the model and its
confidence; a person's answer says "answered by @bob at 14:02" and is never headed "what the
model said"; a validator's verdict says it is a model's. A person's answer is recorded with who
and when and no confidence (it counts in no confidence figure); the answer form never asks a
person for one and repeats the input being judged; cards say when they expire, relatively."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from bot.cli.main import app
from bot.slack import cards
from pipelines.views import ApprovalView
from storage.drift import llm_call_counts
from tests.fakes.clock import FakeClock
from tests.fakes.openai import FakeOpenAI, reply_json
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, in_both_modes, slack_world

# grace@example.com's ord_1002 (250.00 EUR): a refund over 100.00 waits for a finance lead.
TICKET = {
    "ticket_id": "T-180",
    "customer_email": "grace@example.com",
    "subject": "Never arrived",
    "body": "Order ord_1002 never arrived <!channel>. Please refund 180.00 EUR.",
}
LABEL = {"kind": "refund", "order_id": "ord_1002", "amount": "180.00"}


@pytest.fixture
def model_world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, fake_openai: FakeOpenAI
) -> Iterator[SlackWorld]:
    """The model is the fake OpenAI server."""
    with slack_world(
        fake_slack,
        sqlite_url,
        clock,
        llm_model="gpt-4o-mini",
        llm_base_url=fake_openai.base_url,
        llm_api_key=SecretStr("sk-test"),
        llm_max_retries=0,
    ) as built:
        yield built


def texts(blocks: Any) -> str:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return "\n".join(found)


def form(**fields: str) -> dict[str, dict[str, str]]:
    return {name: {name: value} for name, value in fields.items()}


def answer_the_ticket(world: SlackWorld, user: str = "U_BOB") -> tuple[str, dict[str, Any]]:
    """The ticket's task card → Answer → the form → submitted; returns the run id and the form."""
    run = world.gatehouse.trigger("ticket_triage", TICKET, user="U_CAROL", source="slack")
    assert run.status == "waiting", run.error
    [task_card] = world.approval_cards()
    world.slack.block_action("task.answer", message=task_card["ts"], user_id=user)
    world.settle()
    [modal] = world.fake.views
    submitted = world.slack.view_submission(
        "task.answer", form(**LABEL), user_id=user, view_id=modal["id"]
    )
    assert submitted.status == 200 and not submitted.text, submitted.text
    world.settle()
    return run.id, world.fake.views[0]


def approval_card(world: SlackWorld) -> dict[str, Any]:
    found = [m for m in world.approval_cards() if "Approval needed" in texts(m.get("blocks"))]
    assert len(found) == 1, [texts(m.get("blocks"))[:80] for m in world.approval_cards()]
    return found[0]


def llm_call(world: SlackWorld, run_id: str) -> Any:
    [call] = [c for c in world.gatehouse.run(run_id).calls if c.kind == "llm"]
    return call


# -- a person's answer on the approval card --------------------------------------------------


@in_both_modes
def test_after_a_person_answered_the_models_exit_the_card_says_who_and_never_the_model(
    world: SlackWorld,
) -> None:
    run_id, _ = answer_the_ticket(world)
    assert world.gatehouse.run(run_id).status == "waiting"
    shown = texts(approval_card(world)["blocks"])
    assert "What the model said" not in shown
    assert "What a person answered" in shown
    assert "answered by <@U_BOB> at 09:00 UTC:" in shown  # the run's day: no date repeated
    assert "confidence" not in shown.split("*Why*")[1].split("Approvers")[0]
    assert '"kind": "refund"' in shown and "came to a person: no model is configured" in shown
    assert "180.00 EUR" in shown


@in_both_modes
def test_the_answer_form_never_asks_a_person_for_a_confidence_and_shows_the_input(
    world: SlackWorld,
) -> None:
    run_id, modal = answer_the_ticket(world)
    blocks = modal["blocks"]
    fields = [b["block_id"] for b in blocks if b["type"] == "input"]
    assert "confidence" not in fields and {"kind", "order_id", "amount"} <= set(fields)
    shown = texts(blocks)
    assert "*Input*" in shown and "Order ord_1002 never arrived &lt;!channel&gt;." in shown
    assert "<!channel>" not in shown
    # The answer went through without one: the run carried on to the refund's approval.
    assert world.gatehouse.run(run_id).approvals[0].args["amount_cents"] == 18000


def test_a_persons_answer_is_recorded_with_who_and_when_and_counts_in_no_confidence(
    world: SlackWorld, clock: FakeClock
) -> None:
    run_id, _ = answer_the_ticket(world)
    meta = llm_call(world, run_id).meta
    assert (meta["answered_by"], meta["answered_by_user"]) == ("human", "U_BOB")
    assert datetime.fromisoformat(meta["answered_at"]) <= clock.now()
    assert meta["confidence"] is None
    now = clock.now()
    with world.gatehouse.db.transaction() as conn:
        counts = llm_call_counts(conn, since=now - timedelta(hours=1), until=now)
    figures = counts[("ticket_triage", "classify_ticket#1")]
    assert (figures.calls, figures.confident, figures.mean_confidence) == (1, 0, None)


def test_the_answered_task_card_shows_the_answer_as_the_person_gave_it(world: SlackWorld) -> None:
    run_id, _ = answer_the_ticket(world)
    [task] = world.gatehouse.run(run_id).tasks
    assert task.answer == LABEL, "no confidence the person did not give"
    task_card = world.approval_cards()[0]
    shown = texts(task_card["blocks"])
    assert "Answered by <@U_BOB>" in shown and "`ord_1002`" in shown
    assert "confidence" not in shown


def test_a_model_answer_names_the_model_and_its_confidence(
    model_world: SlackWorld, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json({**LABEL, "confidence": 0.95}))
    run = model_world.gatehouse.trigger("ticket_triage", TICKET, user="U_CAROL", source="slack")
    assert run.status == "waiting", run.error
    shown = texts(approval_card(model_world)["blocks"])
    assert "*What the model said*" in shown
    assert "*classify_ticket#1*" not in shown  # the call's name, not its key
    assert "*classify_ticket* (gpt-4o-mini, confidence 0.95)" in shown
    assert "answered by" not in shown


def test_a_low_confidence_answer_a_person_replaced_is_said_as_the_models_own(
    model_world: SlackWorld, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json({**LABEL, "confidence": 0.55}))
    run_id, _ = answer_the_ticket(model_world, user="U_ALICE")
    shown = texts(approval_card(model_world)["blocks"])
    assert "What the model said" not in shown and "answered by <@U_ALICE> at" in shown
    assert "came to a person from the model (gpt-4o-mini, confidence 0.55)" in shown
    meta = llm_call(model_world, run_id).meta
    assert (meta["confidence"], meta["model_confidence"]) == (None, 0.55)


# -- the validator, the expiry ---------------------------------------------------------------


def _approval(**changes: Any) -> ApprovalView:
    requested = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "id": "apr_1",
        "run_id": "run_1",
        "call_id": "call_1",
        "call_key": "send_intro_email#1",
        "tool": "send_intro_email",
        "tool_kind": "send",
        "args": {"to": "dana@brightwave.example"},
        "approvers": ["@sales-leads"],
        "four_eyes": True,
        "trigger_user": None,
        "status": "pending",
        "requested_at": requested,
        "expires_at": requested + timedelta(hours=24),
        "decided_by": None,
        "decided_at": None,
        "reason": None,
        "pipeline": "lead_qualify",
    }
    return ApprovalView(**{**values, **changes})


def test_a_validators_verdict_says_it_is_a_models() -> None:
    approval = _approval(
        validator={"model": "gpt-4o-mini", "verdict": "unsure", "confidence": 0.86, "reason": "x"}
    )
    shown = texts(cards.approval_card(approval, cards.ApprovalContext()))
    assert "a model's verdict (gpt-4o-mini)" in shown


def test_expiry_is_relative_to_when_the_card_is_drawn_with_the_absolute_time_kept() -> None:
    approval = _approval()
    assert approval.expires_at is not None
    for now, words in (
        (approval.requested_at + timedelta(minutes=30), "Expires in 23 h"),
        (approval.expires_at - timedelta(minutes=40), "Expires in 40 min"),
    ):
        shown = texts(cards.approval_card(approval, cards.ApprovalContext(now=now)))
        assert words in shown
        assert f"<!date^{int(approval.expires_at.timestamp())}^" in shown


@in_both_modes
def test_the_refund_card_says_when_it_expires_relatively(world: SlackWorld) -> None:
    run = world.gatehouse.trigger(
        "refund_request",
        {"order_id": "ord_1002", "amount": "180.00", "reason": "never arrived"},
        user="U_CAROL",
        source="slack",
    )
    [card] = world.approval_cards()
    shown = texts(card["blocks"])
    assert "Expires in 24 h (<!date^" in shown, shown
    assert run.status == "waiting"


# -- the CLI's answer template ---------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Any) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", '{"finance-leads": ["alice", "bob"]}')
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "pipelines.catalog")
    for name in ("GATEHOUSE_USER", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_LOG_FORMAT", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GATEHOUSE_LLM_MODEL", raising=False)
    return sqlite_url


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def test_the_cli_answer_template_never_asks_for_a_confidence(cli_env: str) -> None:
    cli("trigger", "ticket_triage", "--input", json.dumps(TICKET), "--as", "carol")
    pending = cli("pending")
    [template] = [line for line in pending.splitlines() if "gatehouse answer" in line]
    assert "confidence" not in template
    assert '"kind": "..."' in template
    fields = pending.split("answer fields:")[1].split("answer:")[0]
    assert "confidence" not in fields and "order_id" in fields
    task_id = template.split("gatehouse answer ")[1].split()[0]
    run_id = json.loads(cli("pending", "--json"))[0]["run_id"]
    answered = cli("answer", task_id, "--as", "olga", "--answer", json.dumps(LABEL))
    assert "approval" in answered and "amount 180.00 EUR" in answered
    [llm_line] = [line for line in cli("run", run_id).splitlines() if "llm:" in line]
    assert "answered by human: olga at" in llm_line and "confidence" not in llm_line
