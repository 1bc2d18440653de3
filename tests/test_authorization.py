"""Authorization on the engine's side of every entry point: decide, answer, trigger, undo,
replay and export, each refused for someone not allowed, from Slack (signed requests to the
bot) and from the CLI, with the refusal audited as one `refused` entry and nothing changed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner, Result

from bot.cli.main import app
from pipelines import Authorization, Context, Gatehouse, pipeline, registered_tools, tool, when
from pipelines.config import ConfigurationError
from pipelines.errors import ApproversRequired, NotAnOperator, NotATriggerer, NotAuthorized
from storage.audit import verify_database
from tests import engine_pipelines as ep
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import APPROVALS, SlackWorld, slack_world

LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}
SMALL = {"order_id": "ord_1001", "amount": "12.50", "reason": "arrived scratched"}


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


def refusals(gatehouse: Gatehouse, run_id: str | None = None) -> list[dict[str, Any]]:
    """Every `refused` entry (of one run), as the audit log holds it."""
    from sqlalchemy import select

    from storage.audit import audit_table

    query = select(audit_table).where(audit_table.c.event == "refused")
    if run_id is not None:
        query = query.where(audit_table.c.run_id == run_id)
    with gatehouse.db.transaction() as conn:
        rows = conn.execute(query.order_by(audit_table.c.id)).all()
    return [{"actor": r.actor, **r.detail} for r in rows]


# -- the engine: one helper, one entry per refusal --------------------------------------------


def test_every_refusal_is_one_audited_entry_naming_actor_action_target_and_reason(
    gatehouse: Gatehouse,
) -> None:
    gatehouse.rt.authorization = Authorization(
        triggerers={"refund_request": ["@finance-leads"]}, operators=["@ops"]
    )
    run = gatehouse.trigger("t_pay_only", {"amount": 5}, user="carol")
    [approval_id] = run.waiting_for
    asked = gatehouse.trigger("t_ask_price", {"item": "gizmo"}, user="carol")
    credit = gatehouse.trigger("t_credit_and_stamp", {"amount": 7}, user="carol")
    credit_call = next(c.id for c in gatehouse.run(credit.id).calls if c.name == "t_credit")
    attempts = [
        ("approve", approval_id, lambda: gatehouse.approve(approval_id, user="mallory")),
        ("reject", approval_id, lambda: gatehouse.reject(approval_id, user="mallory", reason="x")),
        (
            "answer",
            asked.waiting_for[0],
            lambda: gatehouse.answer(asked.waiting_for[0], user="mallory", answer={}),
        ),
        ("trigger", "refund_request", lambda: gatehouse.trigger("refund_request", SMALL, user="m")),
        ("undo", credit_call, lambda: gatehouse.undo(credit_call, user="mallory")),
        ("replay", run.id, lambda: gatehouse.replay(run.id, user="mallory")),
    ]
    for _action, _target, attempt in attempts:
        with pytest.raises(NotAuthorized):
            attempt()

    found = refusals(gatehouse)
    assert [(r["action"], r["target"]) for r in found] == [(a, t) for a, t, _ in attempts]
    assert all(r["reason"] and r["actor"] in ("mallory", "m") for r in found)
    assert gatehouse.approval(approval_id).status == "pending"
    assert gatehouse.task(asked.waiting_for[0]).status == "open"
    assert gatehouse.run(credit.id).calls[0].reversed_by is None
    assert [r.pipeline for r in gatehouse.runs()].count("refund_request") == 0
    assert verify_database(gatehouse.db).ok


def test_trigger_follows_the_list_for_the_pipeline_then_the_wildcard(gatehouse: Gatehouse) -> None:
    gatehouse.rt.authorization = Authorization(triggerers={"t_pay_only": ["carol"], "*": ["@ops"]})
    assert gatehouse.trigger("t_pay_only", {"amount": 1}, user="carol").status == "waiting"
    with pytest.raises(NotATriggerer, match="olga may not run t_pay_only; who may: carol"):
        gatehouse.trigger("t_pay_only", {"amount": 1}, user="olga")
    assert gatehouse.trigger("t_checkout", {}, user="olga").status != "invalid_input"
    with pytest.raises(NotATriggerer, match="who may: @ops"):
        gatehouse.trigger("t_checkout", {}, user="carol")
    # A system trigger (a signed webhook, a schedule) has no user and is not checked here.
    assert gatehouse.trigger("t_checkout", {}, source="webhook").status != "invalid_input"


def test_undo_is_open_to_the_tools_approvers_and_to_operators(gatehouse: Gatehouse) -> None:
    gatehouse.rt.authorization = Authorization(operators=["@ops"])
    calls = []
    for _ in range(3):
        run = gatehouse.trigger("t_credit_and_stamp", {"amount": 2}, user="carol")
        calls.append(next(c.id for c in gatehouse.run(run.id).calls if c.name == "t_credit"))
    with pytest.raises(NotAuthorized, match="approvers: @finance-leads; operators: @ops"):
        gatehouse.undo(calls[0], user="carol")
    assert gatehouse.undo(calls[0], user="alice").status == "succeeded"  # an approver
    assert gatehouse.undo(calls[1], user="olga").status == "succeeded"  # an operator


def test_export_of_reviewed_runs_is_for_operators(gatehouse: Gatehouse) -> None:
    gatehouse.rt.authorization = Authorization(operators=["olga"])
    since = datetime(2020, 1, 1, tzinfo=UTC)
    with pytest.raises(NotAnOperator, match="carol may not export flagged runs"):
        gatehouse.export_reviewed(since=since, flagged_only=True, user="carol")
    assert gatehouse.export_reviewed(since=since, flagged_only=True, user="olga") == []
    assert gatehouse.export_reviewed(since=since, flagged_only=True) == []  # a local operator
    assert [r["action"] for r in refusals(gatehouse)] == ["export"]


# -- Slack -------------------------------------------------------------------------------------


@pytest.fixture
def world(fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock) -> Iterator[SlackWorld]:
    with slack_world(
        fake_slack,
        sqlite_url,
        clock,
        triggerers={"refund_request": ["@finance-leads"]},
        operators=["@ops"],
    ) as built:
        yield built


def _said(world: SlackWorld, user: str) -> str:
    """Everything said privately to `user`: ephemerals' text and blocks."""
    return "\n".join(
        e.get("text", "") + json.dumps(e.get("blocks", [])) for e in world.fake.ephemerals(user)
    )


def _waiting_refund(world: SlackWorld) -> tuple[str, str, dict[str, Any]]:
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_ALICE", source="slack")
    world.settle()
    [card] = world.approval_cards()
    return run.id, run.waiting_for[0], card


def test_slack_approve_click_by_a_non_approver_is_refused_privately(world: SlackWorld) -> None:
    run_id, approval_id, card = _waiting_refund(world)
    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_CAROL")
    world.settle()
    assert "<@U_CAROL> may not approve issue_refund" in _said(world, "U_CAROL")
    assert world.gatehouse.approval(approval_id).status == "pending"
    assert [(r["actor"], r["action"]) for r in refusals(world.gatehouse, run_id)] == [
        ("U_CAROL", "approve")
    ]


def test_slack_reject_by_a_non_approver_through_the_modal_is_told_beside_the_card(
    world: SlackWorld,
) -> None:
    run_id, approval_id, card = _waiting_refund(world)
    world.slack.block_action("approval.reject", message=card["ts"], user_id="U_OLGA")
    world.settle()
    [modal] = world.fake.views
    world.slack.view_submission(
        "approval.reject_reason",
        {"reason": {"reason": "looks odd"}},
        user_id="U_OLGA",
        view_id=modal["id"],
    )
    world.settle()
    [told] = world.fake.ephemerals("U_OLGA")
    assert told["channel"] == APPROVALS and "<@U_OLGA> may not approve" in told["text"]
    assert world.gatehouse.approval(approval_id).status == "pending"
    assert [r["action"] for r in refusals(world.gatehouse, run_id)] == ["reject"]


def test_slack_answer_by_a_non_assignee_gets_no_form_and_a_forged_submit_is_refused(
    world: SlackWorld,
) -> None:
    run = world.gatehouse.trigger("t_ask_price", {"item": "gizmo"}, user="U_CAROL", source="slack")
    world.settle()
    [task_id] = run.waiting_for
    [card] = world.approval_cards()
    world.slack.block_action("task.answer", message=card["ts"], user_id="U_CAROL")
    world.settle()
    [modal] = world.fake.views
    shown = json.dumps(world.fake.view(modal["id"]))
    assert "Not yours to answer" in shown and "<@U_CAROL> may not answer task" in shown
    world.slack.view_submission(
        "task.answer",
        {"price_cents": {"price_cents": "100"}},
        user_id="U_CAROL",
        private_metadata=task_id,
    )
    world.settle()
    assert "<@U_CAROL> may not answer task" in _said(world, "U_CAROL")
    assert world.gatehouse.task(task_id).status == "open"
    assert world.gatehouse.run(run.id).status == "waiting"
    assert [r["action"] for r in refusals(world.gatehouse, run.id)] == ["answer", "answer"]


def test_slack_trigger_by_someone_not_listed_runs_nothing(world: SlackWorld) -> None:
    world.slack.command("trigger refund_request " + json.dumps(SMALL), user_id="U_CAROL")
    world.settle()
    assert ":no_entry: <@U_CAROL> may not run refund_request" in _said(world, "U_CAROL")
    assert world.gatehouse.runs() == []
    assert [(r["action"], r["target"]) for r in refusals(world.gatehouse)] == [
        ("trigger", "refund_request")
    ]


def test_slack_undo_and_replay_are_for_approvers_and_operators(world: SlackWorld) -> None:
    run = world.gatehouse.trigger("refund_request", SMALL, user="U_ALICE", source="slack")
    refund_call = next(c.id for c in world.gatehouse.run(run.id).calls if c.name == "issue_refund")
    world.slack.command(f"undo {refund_call}", user_id="U_CAROL")
    world.slack.command(f"replay {run.id}", user_id="U_CAROL")
    world.settle()
    said = _said(world, "U_CAROL")
    assert f"<@U_CAROL> may not undo issue_refund (call {refund_call})" in said
    assert f"<@U_CAROL> may not replay {run.id}; operators: @ops" in said
    assert world.gatehouse.run(run.id).calls[-1].reversed_by is None
    assert sorted(r["action"] for r in refusals(world.gatehouse, run.id)) == ["replay", "undo"]

    world.slack.command(f"replay {run.id}", user_id="U_OLGA")
    world.slack.command(f"undo {refund_call}", user_id="U_OLGA")
    world.settle()
    assert "same output as the record" in _said(world, "U_OLGA")
    [original] = [c for c in world.gatehouse.run(run.id).calls if c.id == refund_call]
    assert original.reversed_by is not None


# -- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", json.dumps({"finance-leads": ["alice", "bob"]}))
    monkeypatch.setenv("GATEHOUSE_TRIGGERERS", json.dumps({"refund_request": ["alice", "carol"]}))
    monkeypatch.setenv("GATEHOUSE_OPERATORS", json.dumps(["olga"]))
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.cli_pipelines")
    for name in ("GATEHOUSE_USER", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    yield sqlite_url


def gh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def error_line(result: Result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def test_cli_acts_as_its_user_and_is_refused_like_slack(cli_env: str) -> None:
    refused = gh("trigger", "refund_request", "--input", json.dumps(LARGE), "--as", "mallory")
    assert "mallory may not run refund_request; who may: alice, carol" in error_line(refused)

    run = json.loads(
        gh(
            "trigger", "refund_request", "--input", json.dumps(LARGE), "--as", "carol", "--json"
        ).stdout
    )
    approval_id = run["approvals"][0]["id"]
    line = error_line(gh("reject", approval_id, "--as", "olga", "--reason", "no"))
    assert "olga may not approve issue_refund" in line
    assert error_line(gh("approve", approval_id, "--as", "carol"))  # four-eyes
    assert json.loads(gh("run", run["id"], "--json").stdout)["status"] == "waiting"

    gh("approve", approval_id, "--as", "alice")
    done = json.loads(gh("run", run["id"], "--json").stdout)
    refund_call = next(c["id"] for c in done["calls"] if c["name"] == "issue_refund")
    assert "carol may not undo issue_refund" in error_line(gh("undo", refund_call, "--as", "carol"))
    assert gh("undo", refund_call, "--as", "olga").exit_code == 0  # an operator

    audit = json.loads(gh("audit", "list", "--json").stdout)
    assert [(e["actor"], e["detail"]["action"]) for e in audit if e["event"] == "refused"] == [
        ("mallory", "trigger"),
        ("olga", "reject"),
        ("carol", "approve"),
        ("carol", "undo"),
    ]
    assert gh("audit", "verify").exit_code == 0


def test_cli_replay_and_export_run_as_a_local_operator(cli_env: str) -> None:
    run = json.loads(
        gh(
            "trigger", "refund_request", "--input", json.dumps(SMALL), "--as", "carol", "--json"
        ).stdout
    )
    assert gh("replay", run["id"]).exit_code == 0
    assert gh("review", "export", "--since", "30d").exit_code == 0
    assert "refused" not in gh("audit", "list").stdout


def test_cli_answer_by_a_non_assignee_is_refused(cli_env: str, clock: FakeClock) -> None:
    gatehouse = Gatehouse(cli_env, clock=clock)
    asked = gatehouse.trigger("t_ask_price", {"item": "gizmo"}, user="carol")
    gatehouse.db.dispose()
    [task_id] = asked.waiting_for
    refused = gh("answer", task_id, "--as", "carol", "--answer", '{"price_cents": 100}')
    assert f"carol may not answer task {task_id}; assignees: @ops, dave" in error_line(refused)
    assert json.loads(gh("run", asked.id, "--json").stdout)["status"] == "waiting"


# -- declaring who approves --------------------------------------------------------------------


class _Note(BaseModel):
    text: str


class _Payout(BaseModel):
    amount: int


@tool(kind="spend", approvers=["U_ALICE", "U_BOB"])
def az_pay(args: _Payout, *, idempotency_key: str) -> int:
    """Four-eyes is not written here: it is the default for a spend."""
    return args.amount


@tool(kind="spend", approvers=["U_ALICE", "U_BOB"], four_eyes=False)
def az_pay_self_approved(args: _Payout, *, idempotency_key: str) -> int:
    return args.amount


class _Reply(BaseModel):
    text: str


class _Guess(BaseModel):
    word: str
    confidence: float


@pipeline("az_unassigned", input=_Note)
def az_unassigned(ctx: Context, note: _Note) -> str:
    """A question that names nobody, after a model call whose human exit names nobody either
    (no model is configured in these tests, so it goes to a person)."""
    guess = ctx.llm("guess", task="classify", prompt=note.text, output=_Guess)
    return guess.word + ctx.ask_human("reply", f"Reply to {note.text}?", output=_Reply).text


@pipeline("az_payout", input=_Payout)
def az_payout(ctx: Context, payout: _Payout) -> int:
    return int(ctx.tool(az_pay, payout))


@pipeline("az_payout_self_approved", input=_Payout)
def az_payout_self_approved(ctx: Context, payout: _Payout) -> int:
    return int(ctx.tool(az_pay_self_approved, payout))


def test_a_tool_that_may_need_approval_must_name_its_approvers() -> None:
    def az_unnamed(args: _Note, *, idempotency_key: str) -> None: ...

    with pytest.raises(ApproversRequired) as refused:
        tool(kind="spend", approval=when(lambda a: len(a.text) > 3))(az_unnamed)
    assert "tool 'az_unnamed'" in str(refused.value)
    assert 'approvers=["@finance-leads"' in str(refused.value)
    assert 'approvers="*"' in str(refused.value)
    with pytest.raises(ApproversRequired, match="az_unnamed"):
        tool(kind="write")(az_unnamed)  # approval defaults to "always"
    with pytest.raises(ApproversRequired, match="az_unnamed"):
        tool(kind="send", approvers=[])(az_unnamed)
    with pytest.raises(ValueError, match=r'give a list, approvers=\["@ops"\]'):
        tool(kind="send", approvers="@ops")(az_unnamed)  # type: ignore[arg-type]
    assert "az_unnamed" not in registered_tools()
    # No person is ever asked: nothing to name.
    assert tool(kind="write", approval="never", name="az_never")(az_unnamed).approvers == ()


def test_approvers_star_spelled_out_lets_anyone_approve(gatehouse: Gatehouse) -> None:
    @tool(kind="write", approvers="*", name="az_anyone_may_approve")
    def az_anyone(args: _Note, *, idempotency_key: str) -> str:
        return args.text

    @pipeline("az_open_gate", input=_Note)
    def az_open_gate(ctx: Context, note: _Note) -> str:
        return str(ctx.tool(az_anyone, note))

    run = gatehouse.trigger("az_open_gate", {"text": "hi"}, user="carol")
    gatehouse.approve(run.waiting_for[0], user="mallory")
    assert gatehouse.resume(run.id).status == "succeeded"  # type: ignore[union-attr]


def test_four_eyes_is_the_default_for_spend_and_send_and_false_turns_it_off(
    gatehouse: Gatehouse,
) -> None:
    def az_any(args: _Note, *, idempotency_key: str) -> None: ...

    assert tool(kind="send", approvers="*", name="az_send")(az_any).four_eyes
    assert not tool(kind="write", approvers="*", name="az_write")(az_any).four_eyes
    run = gatehouse.trigger("az_payout_self_approved", {"amount": 5}, user="U_ALICE")
    gatehouse.approve(run.waiting_for[0], user="U_ALICE")  # the tool said four_eyes=False
    assert gatehouse.resume(run.id).status == "succeeded"  # type: ignore[union-attr]


def test_slack_spend_approved_by_the_person_who_triggered_it_is_refused_by_default(
    world: SlackWorld,
) -> None:
    world.slack.command("trigger az_payout " + json.dumps({"amount": 5}), user_id="U_ALICE")
    world.settle()
    [run] = world.gatehouse.runs()
    [card] = world.approval_cards()
    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_ALICE")
    world.settle()
    assert "may not approve its own az_pay (four-eyes)" in _said(world, "U_ALICE")
    [approval] = world.gatehouse.run(run.id).approvals
    assert approval.status == "pending"
    assert [(r["actor"], r["action"]) for r in refusals(world.gatehouse, run.id)] == [
        ("U_ALICE", "approve")
    ]
    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_BOB")
    world.settle()
    assert world.gatehouse.run(run.id).status == "succeeded"


# -- the production policy: `gatehouse serve` against a real Slack ---------------------------


@pytest.fixture
def real_slack_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What a real workspace's `gatehouse serve` reads, before anyone said who may act. The
    database cannot be opened: a serve that got past its checks fails at once, never serves."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("GATEHOUSE_", "SLACK_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", f"sqlite:///{tmp_path}/no/such/dir/g.db")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1234-5678-real-looking")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "a-real-signing-secret")
    monkeypatch.setenv("GATEHOUSE_APPROVALS_CHANNEL", "C_APPROVALS")


def test_serve_against_a_real_slack_refuses_to_start_until_who_may_act_is_written_down(
    real_slack_env: None,
) -> None:
    refused = gh("serve")
    assert refused.exit_code == 1, refused.stdout
    lines = refused.stderr.splitlines()
    assert len(lines) == 2, lines
    triggerers, operators = lines
    assert triggerers.startswith("error: GATEHOUSE_TRIGGERERS is not set: who may")
    assert """'{"*": ["*"]}' lets anyone""" in triggerers
    assert operators.startswith("error: GATEHOUSE_OPERATORS is not set: who may replay")
    assert """'["*"]' lets anyone""" in operators


def test_serve_names_only_the_setting_still_missing(
    real_slack_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEHOUSE_TRIGGERERS", json.dumps({"*": ["*"]}))
    refused = gh("serve")
    [line] = refused.stderr.splitlines()
    assert line.startswith("error: GATEHOUSE_OPERATORS is not set")


def test_production_bot_needs_both_settings_and_starts_with_star(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    with (
        pytest.raises(ConfigurationError, match="GATEHOUSE_TRIGGERERS is not set"),
        slack_world(fake_slack, sqlite_url, clock, production=True, operators=["*"]),
    ):
        pass
    with slack_world(
        fake_slack, sqlite_url, clock, production=True, triggerers={"*": ["*"]}, operators=["*"]
    ) as world:
        world.slack.command("trigger az_payout " + json.dumps({"amount": 3}), user_id="U_CAROL")
        world.slack.command("pending", user_id="U_CAROL")
        world.settle()
        [run] = world.gatehouse.runs()
        assert run.status == "waiting"
        assert refusals(world.gatehouse) == []


def test_unassigned_tasks_are_for_the_pipelines_triggerers_and_operators_in_production(
    fake_slack: FakeSlack, any_db_url: str, clock: FakeClock
) -> None:
    with slack_world(
        fake_slack,
        any_db_url,
        clock,
        production=True,
        triggerers={"az_unassigned": ["U_CAROL"]},
        operators=["U_OLGA"],
    ) as world:
        world.slack.command(
            "trigger az_unassigned " + json.dumps({"text": "hi"}), user_id="U_CAROL"
        )
        world.settle()
        [listed] = world.gatehouse.runs()
        run = world.gatehouse.run(listed.id)
        [guess_task] = run.waiting_for
        [card] = world.approval_cards()
        # The card says who may answer as the check reads it, not "anyone in the workspace".
        card_text = json.dumps(card)
        assert "Who may answer: <@U_CAROL>, <@U_OLGA>" in card_text
        assert "anyone in the workspace" not in card_text
        # The model call's human exit: a stranger gets no form, and a forged submit is refused.
        world.slack.block_action("task.answer", message=card["ts"], user_id="U_BOB")
        world.settle()
        [modal] = world.fake.views
        shown = json.dumps(world.fake.view(modal["id"]))
        assert "Not yours to answer" in shown and "<@U_BOB> may not answer task" in shown
        assert "triggerers and the operators may: U_CAROL, U_OLGA" in shown
        world.slack.view_submission(
            "task.answer",
            {"word": {"word": "x"}, "confidence": {"confidence": "1"}},
            user_id="U_BOB",
            private_metadata=guess_task,
        )
        world.settle()
        assert "<@U_BOB> may not answer task" in _said(world, "U_BOB")
        assert world.gatehouse.task(guess_task).status == "open"
        world.gatehouse.answer(guess_task, user="U_CAROL", answer={"word": "hey", "confidence": 1})
        world.gatehouse.resume(run.id)
        world.settle()

        # A question asked with no assignees: the same rule, and an operator may answer.
        [reply_task] = world.gatehouse.run(run.id).waiting_for
        world.slack.view_submission(
            "task.answer", {"text": {"text": "no"}}, user_id="U_BOB", private_metadata=reply_task
        )
        world.slack.view_submission(
            "task.answer",
            {"text": {"text": " there"}},
            user_id="U_OLGA",
            private_metadata=reply_task,
        )
        world.settle()
        assert world.gatehouse.task(reply_task).answered_by == "U_OLGA"
        assert world.gatehouse.run(run.id).status == "succeeded"
        assert [(r["actor"], r["action"]) for r in refusals(world.gatehouse, run.id)] == [
            ("U_BOB", "answer"),
            ("U_BOB", "answer"),
            ("U_BOB", "answer"),
        ]


def test_unassigned_tasks_stay_open_to_anyone_in_the_sandbox_and_in_code(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("az_unassigned", {"text": "hi"}, user="carol")
    gatehouse.answer(run.waiting_for[0], user="mallory", answer={"word": "a", "confidence": 1})
    assert gatehouse.task(run.waiting_for[0]).answered_by == "mallory"


# -- other workspaces --------------------------------------------------------------------------


def test_another_workspaces_command_click_submit_and_event_are_refused_and_audited(
    fake_slack: FakeSlack, any_db_url: str, clock: FakeClock
) -> None:
    with slack_world(
        fake_slack,
        any_db_url,
        clock,
        production=True,  # no GATEHOUSE_SLACK_TEAM_IDS: the bot's own team, from auth.test
        triggerers={"*": ["*"]},
        operators=["*"],
    ) as world:
        ours = world.fake.team_id
        world.slack.command("trigger az_payout " + json.dumps({"amount": 9}), user_id="U_CAROL")
        world.settle()
        [run] = world.gatehouse.runs()
        [card] = world.approval_cards()
        views_before = len(world.fake.views)

        world.fake.team_id = "T_OTHER"  # what Slack says of every request from then on
        world.slack.command("trigger az_payout " + json.dumps({"amount": 9}), user_id="U_MALLORY")
        world.slack.block_action("approval.approve", message=card["ts"], user_id="U_ALICE")
        submitted = world.slack.view_submission(
            "task.answer", {"text": {"text": "x"}}, user_id="U_MALLORY", private_metadata="t"
        )
        home = world.slack.app_home_opened(user_id="U_MALLORY")
        world.settle()

        refused = "requests from Slack workspace T_OTHER are refused"
        assert refused in _said(world, "U_MALLORY")  # the command's ack
        assert refused in _said(world, "U_ALICE")  # the click's response_url
        assert submitted.json["response_action"] == "update"
        assert refused in json.dumps(submitted.json["view"])
        assert home.status == 200 and len(world.fake.views) == views_before
        assert [r.id for r in world.gatehouse.runs()] == [run.id]
        assert world.gatehouse.run(run.id).approvals[0].status == "pending"
        # Recorded after the acks, on the bot's work threads: in any order.
        assert sorted(
            (r["actor"], r["action"], r["target"]) for r in refusals(world.gatehouse)
        ) == [
            ("U_ALICE", "click", "T_OTHER"),
            ("U_MALLORY", "command", "T_OTHER"),
            ("U_MALLORY", "event", "T_OTHER"),
            ("U_MALLORY", "submit", "T_OTHER"),
        ]
        assert verify_database(world.gatehouse.db).ok

        world.fake.team_id = ours
        world.slack.block_action("approval.approve", message=card["ts"], user_id="U_ALICE")
        world.settle()
        assert world.gatehouse.run(run.id).status == "succeeded"


def test_slack_team_ids_are_the_workspaces_served_in_any_policy(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    with slack_world(fake_slack, sqlite_url, clock, slack_team_ids=["T_ELSEWHERE"]) as world:
        world.slack.command("trigger az_payout " + json.dumps({"amount": 9}), user_id="U_CAROL")
        world.settle()
        assert "workspace T_GATEHOUSE are refused" in _said(world, "U_CAROL")
        assert world.gatehouse.runs() == []
        world.fake.team_id = "T_ELSEWHERE"
        world.slack.command("trigger az_payout " + json.dumps({"amount": 9}), user_id="U_CAROL")
        world.settle()
        assert len(world.gatehouse.runs()) == 1


def test_a_grid_org_listed_whole_serves_its_workspaces_and_nobody_elses() -> None:
    from bot.slack.workspaces import origin_of

    served = frozenset({"E_ORG"})
    click = {
        "type": "block_actions",
        "team": {"id": "T_ONE", "enterprise_id": "E_ORG"},
        "enterprise": {"id": "E_ORG"},
        "user": {"id": "U_A", "team_id": "T_ONE"},
    }
    assert origin_of(click).served_by(served)
    outsider = {**click, "enterprise": {"id": "E_ELSE"}, "team": {"id": "T_ONE"}}
    assert not origin_of(outsider).served_by(served)
    # A click in a shared channel by someone from another workspace names that workspace too.
    shared = {**click, "user": {"id": "U_X", "team_id": "T_X"}, "enterprise": None, "team": "T_ONE"}
    assert not origin_of(shared).served_by(frozenset({"T_ONE"}))
    assert not origin_of({"type": "block_actions"}).served_by(frozenset({"T_ONE"}))
