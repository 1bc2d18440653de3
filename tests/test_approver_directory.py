"""One approver directory: `@group` is the union of GATEHOUSE_GROUPS and the workspace's Slack
user groups, in Slack and in the CLI alike; a refusal says which group and which sources were
checked; `gatehouse ready` is red for a group nobody is known to be in; and `make demo` hands a
second terminal what it needs to approve from the CLI."""

from __future__ import annotations

import json
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner, Result

from bot.cli.main import app
from bot.demo import launch as demo
from bot.sandbox import Sandbox
from pipelines import Context, pipeline, tool
from pipelines.config import load_settings
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, slack_world


class AdPayout(BaseModel):
    amount: float


@tool(kind="spend", approval="always", approvers=["@treasury"], rate_limit="100/hour")
def ad_pay_from_treasury(args: AdPayout, *, idempotency_key: str) -> None:
    return None


@tool(kind="spend", approval="always", approvers=["@finance-leads"], rate_limit="100/hour")
def ad_pay_from_finance(args: AdPayout, *, idempotency_key: str) -> None:
    return None


@tool(kind="spend", approval="always", approvers=["@nobody-here"], rate_limit="100/hour")
def ad_pay_from_nobody(args: AdPayout, *, idempotency_key: str) -> None:
    return None


@pipeline("ad_treasury_payout", input=AdPayout)
def ad_treasury_payout(ctx: Context, payout: AdPayout) -> dict[str, Any]:
    ctx.tool(ad_pay_from_treasury, payout)
    return {"paid": payout.amount}


@pipeline("ad_finance_payout", input=AdPayout)
def ad_finance_payout(ctx: Context, payout: AdPayout) -> dict[str, Any]:
    ctx.tool(ad_pay_from_finance, payout)
    return {"paid": payout.amount}


@pipeline("ad_nobody_payout", input=AdPayout)
def ad_nobody_payout(ctx: Context, payout: AdPayout) -> dict[str, Any]:
    ctx.tool(ad_pay_from_nobody, payout)
    return {"paid": payout.amount}


# -- Slack: a group only in configuration ---------------------------------------------------------


@pytest.fixture
def world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, slack_mode: str
) -> Iterator[SlackWorld]:
    # @treasury exists only in GATEHOUSE_GROUPS: the sandbox workspace has no such user group.
    with slack_world(
        fake_slack, sqlite_url, clock, mode=slack_mode, groups={"treasury": ["U_OLGA"]}
    ) as built:
        yield built


def _said(world: SlackWorld, user: str) -> str:
    return "\n".join(
        e.get("text", "") + json.dumps(e.get("blocks", [])) for e in world.fake.ephemerals(user)
    )


def test_a_group_only_in_configuration_approves_in_slack(world: SlackWorld) -> None:
    run = world.gatehouse.trigger("ad_treasury_payout", {"amount": 9}, user="U_CAROL")
    [approval_id] = run.waiting_for
    world.settle()
    [card] = world.approval_cards()

    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_BOB")
    world.settle()
    world.slack.block_action("approval.approve", message=card["ts"], user_id="U_OLGA")
    world.settle()

    assert world.gatehouse.approval(approval_id).status == "approved"
    assert world.gatehouse.approval(approval_id).decided_by == "U_OLGA"
    said = _said(world, "U_BOB")  # not in the group: told which sources were looked in
    assert "<@U_BOB> may not approve ad_pay_from_treasury" in said, said
    assert "@treasury: 1 in GATEHOUSE_GROUPS, none in Slack user groups" in said


# -- the CLI: a group only in Slack -----------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.test_approver_directory")
    for name in (
        "GATEHOUSE_GROUPS",
        "GATEHOUSE_PEOPLE",
        "SLACK_BOT_TOKEN",
        "SLACK_API_URL",
        "GATEHOUSE_LOG_LEVEL",
    ):
        monkeypatch.delenv(name, raising=False)
    return sqlite_url


def gh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _waiting(pipeline_name: str, user: str = "U_CAROL") -> str:
    triggered = gh("trigger", pipeline_name, "--input", '{"amount": 9}', "--as", user, "--json")
    assert triggered.exit_code == 0, triggered.stderr
    [approval_id] = json.loads(triggered.stdout)["waiting_for"]
    return str(approval_id)


def test_a_slack_only_group_approves_in_the_cli_when_the_cli_can_reach_slack(
    cli_env: str, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", fake_slack.token)
    monkeypatch.setenv("SLACK_API_URL", fake_slack.api_url)
    approval_id = _waiting("ad_finance_payout")

    approved = gh("approve", approval_id, "--as", "U_BOB", "--no-run")
    assert approved.exit_code == 0, approved.stderr
    assert json.loads(gh("pending", "--json").stdout) == []


def test_without_a_slack_token_the_cli_refusal_says_the_group_and_what_was_not_asked(
    cli_env: str,
) -> None:
    approval_id = _waiting("ad_finance_payout")

    refused = gh("approve", approval_id, "--as", "U_BOB")
    assert refused.exit_code == 1
    line = refused.stderr.strip()
    assert line.startswith("error: U_BOB may not approve ad_pay_from_finance"), line
    assert "@finance-leads: none in GATEHOUSE_GROUPS, Slack user groups could not be asked" in line
    assert "SLACK_BOT_TOKEN is not set for the CLI" in line


def test_slack_unreachable_from_the_cli_is_said_not_taken_for_an_empty_group(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-not-reachable")
    monkeypatch.setenv("SLACK_API_URL", f"http://127.0.0.1:{closed}/api/")
    approval_id = _waiting("ad_finance_payout")

    refused = gh("approve", approval_id, "--as", "U_BOB")
    assert refused.exit_code == 1
    assert "Slack user groups could not be asked (Slack could not be reached at" in refused.stderr


# -- gatehouse ready -------------------------------------------------------------------------------


def _approvers(pipeline_name: str) -> dict[str, Any]:
    result = gh("ready", pipeline_name, "--json")
    [only] = json.loads(result.stdout)["pipelines"]
    [answer] = [a for a in only["answers"] if a["question"] == "approvers"]
    return dict(answer)


def test_ready_is_red_for_a_group_with_no_members_in_either_source(
    cli_env: str, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", fake_slack.token)
    monkeypatch.setenv("SLACK_API_URL", fake_slack.api_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", json.dumps({"treasury": ["U_OLGA"]}))

    empty = _approvers("ad_nobody_payout")
    assert empty["status"] == "red"
    assert empty["reason"].startswith(
        "@nobody-here has no members in GATEHOUSE_GROUPS or Slack user groups"
    ), empty["reason"]
    assert _approvers("ad_treasury_payout")["status"] == "green"  # configuration only
    assert _approvers("ad_finance_payout")["status"] == "green"  # Slack only


def test_ready_says_so_when_slack_could_not_be_asked_instead_of_green(cli_env: str) -> None:
    finance = _approvers("ad_finance_payout")  # in Slack only, and the CLI has no token
    assert finance["status"] == "red"
    assert "Slack user groups could not be asked (SLACK_BOT_TOKEN is not set" in finance["reason"]


# -- make demo: the second terminal ---------------------------------------------------------------


def test_the_demo_banner_lets_a_second_terminal_approve_with_the_pending_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("GATEHOUSE_GROUPS", "GATEHOUSE_PEOPLE", "SLACK_BOT_TOKEN", "SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)
    url, report = demo.prepare_database(tmp_path / "demo", reuse=False, days=1)
    assert report is not None
    settings = demo.demo_settings(load_settings(), url, demo.parse_args([]))

    demo.second_terminal(Sandbox(), settings)
    banner = capsys.readouterr().out
    [export] = [line.strip() for line in banner.splitlines() if line.strip().startswith("export ")]
    assert "People (pass the id to --as): alice U_ALICE (@finance-leads, @sales-leads)" in banner
    for assignment in shlex.split(export)[1:]:
        name, _, value = assignment.partition("=")
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)

    pending = gh("pending", "--json")
    carols = [
        item
        for item in json.loads(pending.stdout)
        if item["type"] == "approval" and item["trigger_user"] == "U_CAROL"
    ]
    assert carols, pending.stdout
    approval_id = carols[0]["id"]
    hint = f"gatehouse approve {approval_id} --as USER"
    assert hint in gh("pending").stdout

    refused = gh("approve", approval_id, "--as", "U_CAROL", "--no-run")
    assert "error: carol (U_CAROL) may not approve issue_refund" in refused.stderr, refused.stderr
    approved = gh(*hint.replace("USER", "U_BOB").split()[1:], "--no-run")
    assert approved.exit_code == 0, approved.stderr
