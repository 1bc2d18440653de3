"""Approve with edits (`@tool(editable=...)`) in the engine and the CLI: the declaration is
checked, an edit is validated by the argument model, the call runs with the edited arguments,
the original ones are kept, four-eyes and the approver list apply to the editor, and the edit is
the same compare-and-set as Approve."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner, Result

from bot.cli.main import app
from pipelines import Gatehouse, StaticDirectory, tool
from pipelines.errors import (
    AlreadyDecided,
    BadEditable,
    FourEyesViolation,
    InvalidEdit,
    NotAnApprover,
)
from pipelines.sensitive import Sensitive
from storage import queries
from storage.db import Database
from tests.concurrency import at_once
from tests.conftest import GROUPS
from tests.edit_approve_pipelines import PAID
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier


@pytest.fixture(autouse=True)
def _fresh() -> None:
    PAID.clear()


def _waiting(gatehouse: Gatehouse, *, by: str = "carol", amount: int = 20_000) -> str:
    run = gatehouse.trigger(
        "ea_payout", {"recipient": "acme", "amount_cents": amount}, user=by, source="cli"
    )
    assert run.status == "waiting", run
    [approval_id] = run.waiting_for
    return approval_id


def _audit(gatehouse: Gatehouse, run_id: str) -> list[Any]:
    with gatehouse.db.transaction() as conn:
        return queries.audit_of_run(conn, run_id)


# -- the declaration ---------------------------------------------------------------------------


class EaArgs(BaseModel):
    amount: int
    token: Annotated[str, Sensitive] = ""


def _ea_fn(args: EaArgs, *, idempotency_key: str) -> None:
    return None


@pytest.mark.parametrize(
    ("declared", "says"),
    [
        ({"editable": ["amount", "ammount"]}, "'ammount', which EaArgs does not have"),
        ({"editable": ["token"]}, "'token' is Sensitive and cannot be editable"),
        ({"editable": "amount"}, 'give a list, editable=["amount"]'),
        ({"editable": ["amount"], "approval": "never"}, 'approval "never" never asks one'),
    ],
)
def test_editable_is_checked_against_the_argument_model_when_declared(
    declared: dict[str, Any], says: str
) -> None:
    with pytest.raises(BadEditable, match="tool 'ea_bad'") as refused:
        tool(kind="spend", name="ea_bad", approvers=["@finance-leads"], **declared)(_ea_fn)
    assert says in str(refused.value)


# -- the engine --------------------------------------------------------------------------------


def test_an_edited_approval_runs_the_call_with_the_edited_arguments_and_keeps_the_original(
    gatehouse: Gatehouse,
) -> None:
    approval_id = _waiting(gatehouse)

    decided = gatehouse.approve(
        approval_id, user="alice", args={"amount_cents": 15_000, "recipient": "acme"}
    )
    assert decided.status == "approved" and decided.decided_by == "alice"
    assert decided.args == {"recipient": "acme", "amount_cents": 15_000, "memo": "payout"}
    assert decided.edited["by"] == "alice"
    assert decided.edited["original"]["amount_cents"] == 20_000
    # Only what changed is listed: the recipient was sent as it was.
    assert decided.edited["changes"] == [{"field": "amount_cents", "old": 20_000, "new": 15_000}]

    run = gatehouse.resume(decided.run_id)
    assert run is not None and run.status == "succeeded", run
    assert PAID == [("acme", 15_000)]
    [call] = [c for c in gatehouse.run(run.id).calls if c.name == "ea_payout"]
    assert call.input["amount_cents"] == 15_000
    assert call.meta["edited"]["original"]["amount_cents"] == 20_000
    approved = [a for a in _audit(gatehouse, run.id) if a.event == "approval.approved"]
    assert [a.actor for a in approved] == ["alice"]
    assert approved[0].detail["edited"]["changes"][0]["new"] == 15_000
    started = [a for a in _audit(gatehouse, run.id) if a.event == "tool.started"]
    assert started[0].detail["args"]["amount_cents"] == 15_000
    assert gatehouse.run(run.id).approvals[0].to_json()["edited"]["by"] == "alice"
    # Replaying the finished run on today's code follows the record: no divergence.
    report = gatehouse.replay(run.id)
    assert report.divergence is None and report.would_call == [], report.to_json()
    assert report.output_matches is True


def test_an_invalid_edit_is_refused_per_field_and_nothing_is_decided_or_run(
    gatehouse: Gatehouse,
) -> None:
    approval_id = _waiting(gatehouse)

    with pytest.raises(InvalidEdit) as refused:
        gatehouse.approve(approval_id, user="alice", args={"amount_cents": -5, "recipient": "x"})
    assert set(refused.value.field_errors) == {"amount_cents", "recipient"}
    assert "greater than 0" in refused.value.field_errors["amount_cents"]
    assert "nothing was decided" in str(refused.value)
    with pytest.raises(InvalidEdit, match="memo: not editable") as not_editable:
        gatehouse.approve(approval_id, user="alice", args={"memo": "bonus"})
    assert not_editable.value.field_errors == {
        "memo": "not editable (editable: amount_cents, recipient)"
    }

    approval = gatehouse.approval(approval_id)
    assert approval.status == "pending" and approval.edited is None
    assert approval.args["amount_cents"] == 20_000
    assert gatehouse.resume(approval.run_id) is None  # nothing to carry on: still waiting
    assert gatehouse.run(approval.run_id).status == "waiting"
    assert PAID == []


def test_four_eyes_and_the_approver_list_apply_to_the_editor(gatehouse: Gatehouse) -> None:
    approval_id = _waiting(gatehouse, by="alice")

    with pytest.raises(FourEyesViolation, match=r"alice triggered run .* its own ea_payout"):
        gatehouse.approve(approval_id, user="alice", args={"amount_cents": 1_000})
    with pytest.raises(NotAnApprover, match="olga may not approve ea_payout"):
        gatehouse.approve(approval_id, user="olga", args={"amount_cents": 1_000})
    approval = gatehouse.approval(approval_id)
    assert approval.status == "pending" and approval.args["amount_cents"] == 20_000
    refusals = [a for a in _audit(gatehouse, approval.run_id) if a.event == "refused"]
    assert {a.actor for a in refusals} == {"alice", "olga"}, refusals


def test_an_edit_below_the_threshold_is_still_this_approval_and_runs_as_edited(
    gatehouse: Gatehouse,
) -> None:
    """`when(amount > 100.00)` asked for this approval; the approver lowers it to 50.00: the
    rule is not evaluated again (the call is being approved now), and it runs at 50.00."""
    approval_id = _waiting(gatehouse)
    decided = gatehouse.approve(approval_id, user="bob", args={"amount_cents": 5_000})
    run = gatehouse.resume(decided.run_id)
    assert run is not None and run.status == "succeeded"
    assert PAID == [("acme", 5_000)]


def test_an_edit_after_a_decision_gets_already_decided_and_changes_nothing(
    gatehouse: Gatehouse,
) -> None:
    approval_id = _waiting(gatehouse)
    gatehouse.approve(approval_id, user="bob")
    with pytest.raises(AlreadyDecided, match="already approved by bob"):
        gatehouse.approve(approval_id, user="alice", args={"amount_cents": 1_000})
    approval = gatehouse.approval(approval_id)
    assert approval.edited is None and approval.args["amount_cents"] == 20_000


def test_edits_that_change_nothing_approve_as_asked(gatehouse: Gatehouse) -> None:
    approval_id = _waiting(gatehouse)
    decided = gatehouse.approve(
        approval_id, user="bob", args={"amount_cents": 20_000, "memo": "payout"}
    )
    assert decided.status == "approved" and decided.edited is None
    audit = _audit(gatehouse, decided.run_id)
    assert [a.detail for a in audit if a.event == "approval.approved"] == [{"reason": None}]


def test_a_reject_carries_no_edits(gatehouse: Gatehouse) -> None:
    from pipelines import approvals

    approval_id = _waiting(gatehouse)
    with pytest.raises(InvalidEdit, match="only an approval carries edited arguments"):
        approvals.decide(
            gatehouse.rt,
            approval_id,
            user="bob",
            approve=False,
            reason="no",
            edited_args={"amount_cents": 1},
        )


@pytest.mark.postgres
def test_an_edit_and_an_approve_at_once_on_postgres_decide_once(postgres_url: str) -> None:
    """Two replicas, two people: one edits, one approves, at the same moment. One decision
    wins; the loser is told it was decided; an edit is recorded only if it won."""
    engines = [Database(postgres_url) for _ in range(2)]
    clock = FakeClock()
    houses = [
        Gatehouse(e, clock=clock, notifier=RecordingNotifier(), directory=StaticDirectory(GROUPS))
        for e in engines
    ]
    try:
        for _ in range(5):
            approval_id = _waiting(houses[0])

            def edit(house: Gatehouse = houses[0], aid: str = approval_id) -> str:
                try:
                    house.approve(aid, user="alice", args={"amount_cents": 12_345})
                except AlreadyDecided:
                    return "lost"
                return "won"

            def approve(house: Gatehouse = houses[1], aid: str = approval_id) -> str:
                try:
                    house.approve(aid, user="bob")
                except AlreadyDecided:
                    return "lost"
                return "won"

            outcomes = at_once([edit, approve])
            assert sorted(outcomes) == ["lost", "won"], outcomes
            approval = houses[0].approval(approval_id)
            edited_won = outcomes[0] == "won"
            assert approval.decided_by == ("alice" if edited_won else "bob")
            assert (approval.edited is not None) == edited_won
            assert approval.args["amount_cents"] == (12_345 if edited_won else 20_000)
            run = houses[1].resume(approval.run_id)
            assert run is not None and run.status == "succeeded"
        assert len(PAID) == 5
    finally:
        for e in engines:
            e.dispose()


# -- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", json.dumps({"finance-leads": ["alice", "bob"]}))
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.edit_approve_pipelines")
    for name in ("SLACK_BOT_TOKEN", "SLACK_API_URL", "GATEHOUSE_LLM_MODEL", "GATEHOUSE_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path


def gh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _cli_waiting() -> str:
    triggered = gh(
        "trigger",
        "ea_payout",
        "--input",
        '{"recipient": "acme", "amount_cents": 20000}',
        "--as",
        "carol",
        "--json",
    )
    assert triggered.exit_code == 0, triggered.stderr
    [approval_id] = json.loads(triggered.stdout)["waiting_for"]
    return str(approval_id)


def test_cli_approve_with_args_runs_the_edited_call_and_shows_what_changed(cli_env: Path) -> None:
    approval_id = _cli_waiting()
    (cli_env / "edit.json").write_text('{"amount_cents": 15000}')

    approved = gh("approve", approval_id, "--as", "bob", "--args", "@edit.json", "--json")
    assert approved.exit_code == 0, approved.stderr
    shown = json.loads(approved.stdout)
    assert shown["approval"]["edited"]["changes"] == [
        {"field": "amount_cents", "old": 20000, "new": 15000}
    ]
    assert shown["run"]["status"] == "succeeded"
    assert PAID == [("acme", 15_000)]

    run_id = shown["run"]["id"]
    again = _cli_waiting()
    as_text = gh("approve", again, "--as", "alice", "--args", '{"recipient": "acme-gmbh"}')
    assert as_text.exit_code == 0, as_text.stderr
    assert (
        "approved by alice with edits (recipient acme -> acme-gmbh): ea_payout may go ahead"
        in as_text.stdout
    ), as_text.stdout
    assert PAID == [("acme", 15_000), ("acme-gmbh", 20_000)]
    text = gh("run", run_id)
    assert text.exit_code == 0, text.stderr
    assert "edited by bob at " in text.stdout, text.stdout
    assert ": amount 200.00 EUR -> 150.00 EUR\n" in text.stdout, text.stdout
    [audited] = [line for line in text.stdout.splitlines() if "approval.approved" in line]
    assert "by bob" in audited and "edited: amount 200.00 EUR -> 150.00 EUR" in audited, audited
    as_json = json.loads(gh("run", run_id, "--json").stdout)
    assert as_json["approvals"][0]["edited"]["by"] == "bob"


def test_cli_refuses_an_invalid_edit_naming_the_field_and_runs_nothing(cli_env: Path) -> None:
    approval_id = _cli_waiting()

    refused = gh("approve", approval_id, "--as", "bob", "--args", '{"amount_cents": 0}')
    assert refused.exit_code == 1
    assert "amount_cents: Input should be greater than 0" in refused.stderr, refused.stderr
    assert "nothing was decided" in refused.stderr
    bad_json = gh("approve", approval_id, "--as", "bob", "--args", "{amount")
    assert bad_json.exit_code != 0 and "--args" in bad_json.stderr, bad_json.stderr
    four_eyes = gh("approve", approval_id, "--as", "carol", "--args", '{"amount_cents": 1}')
    assert four_eyes.exit_code == 1 and "may not approve" in four_eyes.stderr
    assert PAID == []
    pending = json.loads(gh("pending", "--json").stdout)
    assert [p["id"] for p in pending if p["type"] == "approval"] == [approval_id], pending
