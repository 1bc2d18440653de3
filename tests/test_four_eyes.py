"""Four-eyes means four eyes: whoever triggered a run, or answered a person's step of it before
the gated call, may not approve that call; the triggerer may not undo it. Refusals name people
as Slack mentions in Slack and as `name (id)` in the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner, Result

from bot.cli.main import app
from pipelines import Context, Gatehouse, pipeline, tool
from pipelines.errors import FourEyesViolation
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, slack_world

REFUNDED: list[float] = []
UNDONE: list[float] = []


class FeTicket(BaseModel):
    text: str


class FeAmount(BaseModel):
    amount: float


class FeRefundArgs(BaseModel):
    amount: float


class FeRefundResult(BaseModel):
    refunded: float


def _fe_undo(args: FeRefundArgs, result: FeRefundResult, *, idempotency_key: str) -> None:
    UNDONE.append(args.amount)


@tool(
    kind="spend",
    approval="always",
    approvers=["@finance-leads"],
    rate_limit="100/hour",
    reverse=_fe_undo,
)
def fe_refund(args: FeRefundArgs, *, idempotency_key: str) -> FeRefundResult:
    REFUNDED.append(args.amount)
    return FeRefundResult(refunded=args.amount)


@pipeline("fe_refund_a_person_sized", input=FeTicket)
def fe_refund_a_person_sized(ctx: Context, ticket: FeTicket) -> dict[str, Any]:
    """A person sets the amount (`ctx.ask_human`), then the refund waits for an approver."""
    sized = ctx.ask_human("size_refund", f"How much should we refund for: {ticket.text}?", FeAmount)
    ctx.tool(fe_refund, FeRefundArgs(amount=sized.amount))
    return {"refunded": sized.amount}


@pipeline("fe_refund_a_model_sized", input=FeTicket)
def fe_refund_a_model_sized(ctx: Context, ticket: FeTicket) -> dict[str, Any]:
    """The model sizes it; with no model configured its human exit asks a person instead."""
    sized = ctx.llm("size_refund", task="extract", prompt=ticket.text, output=FeAmount)
    ctx.tool(fe_refund, FeRefundArgs(amount=sized.amount))
    return {"refunded": sized.amount}


@pytest.fixture(autouse=True)
def _fresh() -> None:
    REFUNDED.clear()
    UNDONE.clear()


def _answered_by(gatehouse: Gatehouse, pipeline_name: str, *, trigger: str, answer: str) -> str:
    """A run whose amount `answer` set, now waiting for its approval; its approval id."""
    run = gatehouse.trigger(pipeline_name, {"text": "lost parcel"}, user=trigger, source="slack")
    [task_id] = run.waiting_for
    gatehouse.answer(task_id, user=answer, answer={"amount": 120.0})
    resumed = gatehouse.resume(run.id)
    assert resumed is not None and resumed.status == "waiting", resumed
    [approval_id] = resumed.waiting_for
    return approval_id


# -- the engine ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline_name", ["fe_refund_a_person_sized", "fe_refund_a_model_sized"])
def test_who_answered_a_person_step_earlier_in_the_run_may_not_approve_its_call(
    gatehouse: Gatehouse, pipeline_name: str
) -> None:
    approval_id = _answered_by(gatehouse, pipeline_name, trigger="carol", answer="bob")

    with pytest.raises(FourEyesViolation) as refused:
        gatehouse.approve(approval_id, user="bob")
    assert "bob answered task " in str(refused.value)
    assert "may not approve its fe_refund (four-eyes)" in str(refused.value)
    assert gatehouse.approval(approval_id).status == "pending"
    gatehouse.approve(approval_id, user="alice")
    assert gatehouse.resume(gatehouse.approval(approval_id).run_id).status == "succeeded"  # type: ignore[union-attr]
    assert REFUNDED == [120.0]


def test_the_triggerer_may_answer_their_runs_question_and_someone_else_approves(
    gatehouse: Gatehouse,
) -> None:
    """The rule README states: answering is allowed; it keeps the answerer (here also the
    triggerer) from approving, and the run is still approved by another approver."""
    approval_id = _answered_by(
        gatehouse, "fe_refund_a_person_sized", trigger="alice", answer="alice"
    )

    with pytest.raises(FourEyesViolation, match=r"alice triggered run .* its own fe_refund"):
        gatehouse.approve(approval_id, user="alice")
    gatehouse.approve(approval_id, user="bob")
    assert REFUNDED == [] and gatehouse.resume(gatehouse.approval(approval_id).run_id) is not None
    assert REFUNDED == [120.0]


def test_the_triggerer_may_not_undo_a_four_eyes_call_but_another_approver_may(
    gatehouse: Gatehouse,
) -> None:
    approval_id = _answered_by(
        gatehouse, "fe_refund_a_person_sized", trigger="alice", answer="olga"
    )
    gatehouse.approve(approval_id, user="bob")
    run = gatehouse.resume(gatehouse.approval(approval_id).run_id)
    assert run is not None and run.status == "succeeded"
    refund_call = next(c.id for c in gatehouse.run(run.id).calls if c.name == "fe_refund")

    with pytest.raises(
        FourEyesViolation, match=r"alice triggered run .* may not undo its fe_refund"
    ):
        gatehouse.undo(
            refund_call, user="alice"
        )  # alice is a finance lead: only four-eyes stops her
    assert UNDONE == []
    gatehouse.undo(refund_call, user="bob")
    assert UNDONE == [120.0]


# -- Slack: the click, in both modes -------------------------------------------------------------


@pytest.fixture
def world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, slack_mode: str
) -> Iterator[SlackWorld]:
    with slack_world(fake_slack, sqlite_url, clock, mode=slack_mode) as built:
        yield built


def _said(world: SlackWorld, user: str) -> str:
    return "\n".join(
        e.get("text", "") + json.dumps(e.get("blocks", [])) for e in world.fake.ephemerals(user)
    )


def test_slack_answerer_is_refused_approving_with_a_mention_and_another_approver_decides(
    world: SlackWorld,
) -> None:
    run = world.gatehouse.trigger(
        "fe_refund_a_person_sized", {"text": "lost parcel"}, user="U_CAROL", source="slack"
    )
    world.settle()
    [task_id] = run.waiting_for
    [task_card] = world.approval_cards()
    world.slack.block_action("task.answer", message=task_card["ts"], user_id="U_BOB")
    world.settle()
    [modal] = world.fake.views
    world.slack.view_submission(  # bob sizes the refund in the Answer form
        "task.answer",
        {"amount": {"amount": "120"}},
        user_id="U_BOB",
        private_metadata=task_id,
        view_id=modal["id"],
    )
    world.settle()
    assert world.gatehouse.task(task_id).answered_by == "U_BOB"
    [approval_id] = world.gatehouse.run(run.id).waiting_for
    [card] = [
        c
        for c in world.approval_cards()
        if f'"approval.{approval_id}"' in json.dumps(c.get("blocks"))
    ]
    # The card names whom four-eyes keeps out: the triggerer and the person who sized it.
    assert "four-eyes: not <@U_CAROL>, <@U_BOB>" in json.dumps(card["blocks"])

    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_BOB")
    world.settle()
    said = _said(world, "U_BOB")
    assert "<@U_BOB> answered task " in said, said
    assert "may not approve its fe_refund (four-eyes)" in said
    assert "U_BOB answered" not in said.replace("<@U_BOB>", ""), "no raw id where a mention goes"
    assert world.gatehouse.approval(approval_id).status == "pending"

    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_ALICE")
    world.settle()
    assert world.gatehouse.approval(approval_id).status == "approved"


def test_slack_undo_by_the_triggerer_of_a_four_eyes_call_is_refused_with_a_mention(
    world: SlackWorld,
) -> None:
    gatehouse = world.gatehouse
    approval_id = _answered_by(
        gatehouse, "fe_refund_a_person_sized", trigger="U_ALICE", answer="U_OLGA"
    )
    gatehouse.approve(approval_id, user="U_BOB")
    run = gatehouse.resume(gatehouse.approval(approval_id).run_id)
    assert run is not None and run.status == "succeeded"
    refund_call = next(c.id for c in gatehouse.run(run.id).calls if c.name == "fe_refund")

    world.slack.command(f"undo {refund_call}", user_id="U_ALICE")
    world.settle()
    said = _said(world, "U_ALICE")
    assert f"<@U_ALICE> triggered run {run.id} and may not undo its fe_refund" in said, said
    assert UNDONE == []


# -- the CLI: name and id ------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", json.dumps({"finance-leads": ["U_ALICE", "U_BOB"]}))
    monkeypatch.setenv("GATEHOUSE_PEOPLE", json.dumps({"U_ALICE": "alice", "U_BOB": "bob"}))
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.test_four_eyes")
    for name in ("SLACK_BOT_TOKEN", "SLACK_API_URL", "GATEHOUSE_LLM_MODEL", "GATEHOUSE_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    return sqlite_url


def gh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_cli_refuses_the_answerer_naming_them_by_name_and_id(cli_env: str) -> None:
    run = json.loads(
        gh(
            "trigger",
            "fe_refund_a_person_sized",
            "--input",
            '{"text": "lost"}',
            "--as",
            "U_CAROL",
            "--json",
        ).stdout
    )
    [task_id] = run["waiting_for"]
    answered = gh("answer", task_id, "--as", "U_BOB", "--answer", '{"amount": 120}', "--json")
    assert answered.exit_code == 0, answered.stderr
    approval_id = json.loads(answered.stdout)["run"]["approvals"][0]["id"]

    refused = gh("approve", approval_id, "--as", "U_BOB")
    assert refused.exit_code == 1
    assert f"error: bob (U_BOB) answered task {task_id}" in refused.stderr, refused.stderr
    assert "may not approve its fe_refund (four-eyes); ask another approver" in refused.stderr
    approved = gh("approve", approval_id, "--as", "U_ALICE")
    assert approved.exit_code == 0, approved.stderr
    assert REFUNDED == [120.0]


def test_a_refusal_mentions_its_people_in_slack_and_escapes_everything_else() -> None:
    from bot.slack.refusal_text import slack_text
    from pipelines.errors import NotAnApprover

    refusal = NotAnApprover(
        "{user} may not approve <!channel> {unknown}; ask {other}",
        people={"user": "U_BOB", "other": "olga"},
    )
    assert str(refusal) == "U_BOB may not approve <!channel> {unknown}; ask olga"  # the audit's
    assert slack_text(refusal) == "<@U_BOB> may not approve &lt;!channel&gt; {unknown}; ask olga"
