"""`gatehouse approve ID --as USER` on an approval that needs two people: one vote, how many
remain, and the run waits (it is not reported as taken by another worker); `gatehouse pending`
shows the progress; the second person's approval runs the call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bot.cli.main import app
from tests import quorum_pipelines


@pytest.fixture(autouse=True)
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", '{"finance-leads": ["alice", "bob"], "ops": ["olga"]}')
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.quorum_pipelines")
    for name in ("GATEHOUSE_USER", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    quorum_pipelines.PAID.clear()


def gh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def ok(*args: str) -> Result:
    result = gh(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def test_approve_counts_one_vote_says_how_many_remain_and_the_second_runs_the_call() -> None:
    triggered = json.loads(
        ok("trigger", "q_payout", "--input", '{"amount": 5000}', "--as", "carol", "--json").stdout
    )
    [approval_id] = triggered["waiting_for"]

    first = ok("approve", approval_id, "--as", "alice")
    assert (
        f"approval {approval_id}: alice's approval counted, 1 of 2 approvals (alice); "
        "waiting for 1 more"
    ) in first.stdout
    assert "another worker" not in first.stdout  # nothing was queued: the run waits for a vote
    assert quorum_pipelines.PAID == []

    again = gh("approve", approval_id, "--as", "alice")
    assert again.exit_code != 0
    assert "You already approved q_pay" in again.stdout + again.stderr

    pending = ok("pending").stdout
    assert "1 of 2 approvals (alice); waiting for 1 more" in pending
    [item] = json.loads(ok("pending", "--json").stdout)
    assert item["approvals_required"] == 2
    assert [v["voter"] for v in item["votes"]] == ["alice"]

    second = json.loads(ok("approve", approval_id, "--as", "olga", "--json").stdout)
    assert second["approval"]["status"] == "approved"
    assert [v["voter"] for v in second["approval"]["votes"]] == ["alice", "olga"]
    assert second["run"]["status"] == "succeeded"
    assert quorum_pipelines.PAID == [5000]
