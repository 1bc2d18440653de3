"""The CLI says of an `@tool(editable=...)` approval what Slack's Edit & approve offers: `gatehouse
trigger`, `run` and `pending` print the `approve --args` command that approves with edits, filled
with what the call would run with now, and that command as printed approves as edited;
`pending --json` names the editable fields. An approval nobody may edit gets no such line."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bot.cli.main import app
from tests.edit_approve_pipelines import PAID


@pytest.fixture(autouse=True)
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv(
        "GATEHOUSE_GROUPS", json.dumps({"finance-leads": ["alice", "bob"], "ops": ["olga"]})
    )
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.edit_approve_pipelines,tests.quorum_pipelines")
    for name in ("SLACK_BOT_TOKEN", "SLACK_API_URL", "GATEHOUSE_LLM_MODEL", "GATEHOUSE_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    PAID.clear()
    yield tmp_path


def gh(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def _edit_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("edit:")]


def test_trigger_run_and_pending_print_the_approve_with_edits_command_and_it_works() -> None:
    payload = '{"recipient": "acme", "amount_cents": 20000}'
    result = gh("trigger", "ea_payout", "--input", payload, "--as", "carol", "--json")
    triggered = json.loads(result.stdout)
    [approval_id] = triggered["waiting_for"]
    command = (
        f"gatehouse approve {approval_id} --as USER --args "
        """'{"amount_cents": 20000, "recipient": "acme"}'"""
    )
    # The terminal notifier's line (on stderr under --json) offers it …
    assert f"or with edits: {command}" in result.stderr, result.stderr
    # … and so do `pending` and `run`, beside approve and reject.
    assert _edit_lines(gh("pending").stdout) == [f"edit:    {command}"]
    assert _edit_lines(gh("run", triggered["id"]).stdout) == [f"edit:    {command}"]
    [item] = json.loads(gh("pending", "--json").stdout)
    assert item["editable"] == ["amount_cents", "recipient"]

    # The printed command, with the person's name and a value changed, approves as edited.
    words = shlex.split(command)
    words[words.index("USER")] = "bob"
    words[-1] = json.dumps({**json.loads(words[-1]), "amount_cents": 15000})
    approved = json.loads(gh(*words[1:], "--json").stdout)
    assert approved["run"]["status"] == "succeeded"
    assert PAID == [("acme", 15_000)]
    decided = json.loads(gh("run", triggered["id"], "--json").stdout)["approvals"][0]
    assert decided["editable"] == []  # decided: nothing is left to edit
    assert _edit_lines(gh("run", triggered["id"]).stdout) == []


def test_an_approval_nobody_may_edit_gets_no_edit_line() -> None:
    triggered = json.loads(
        gh("trigger", "q_payout", "--input", '{"amount": 5000}', "--as", "carol", "--json").stdout
    )
    assert _edit_lines(gh("pending").stdout) == []
    assert _edit_lines(gh("run", triggered["id"]).stdout) == []
    [item] = json.loads(gh("pending", "--json").stdout)
    assert item["editable"] == [] and item["approvals_required"] == 2
