"""`gatehouse stats` driven through typer's CliRunner against a temporary SQLite file: the
table, the JSON, the window flag and the chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from sqlalchemy import insert
from typer.testing import CliRunner, Result

from bot.cli import stats as cli_stats
from bot.cli.main import app as gatehouse_app
from bot.cli.session import GatehouseGroup
from pipelines import Gatehouse, StaticDirectory
from storage.calls import calls_table
from storage.db import Database
from storage.stats_rollups import read_progress

GROUPS = '{"finance-leads": ["alice", "bob"]}'
SMALL = '{"order_id": "ord_1001", "amount": "12.50", "reason": "arrived scratched"}'
LARGE = '{"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}'

# `stats` as the lead mounts it under the root command (which turns errors into one line).
root = typer.Typer(cls=GatehouseGroup, add_completion=False, pretty_exceptions_enable=False)


@root.callback()
def _root() -> None:
    """gatehouse"""


root.add_typer(cli_stats.app, name="stats")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", GROUPS)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.cli_pipelines")
    for name in ("GATEHOUSE_USER", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    return sqlite_url


def stats(*args: str) -> Result:
    return CliRunner().invoke(root, ["stats", *args])


def seed_refunds() -> None:
    for args in (
        ["trigger", "refund_request", "--input", SMALL, "--as", "carol"],
        ["trigger", "refund_request", "--input", LARGE, "--as", "carol"],
    ):
        result = CliRunner().invoke(gatehouse_app, args)
        assert result.exit_code == 0, (result.stdout, result.stderr)


def test_table_lists_pipelines_with_runs_and_explains_the_columns(cli_env: str) -> None:
    seed_refunds()

    result = stats()

    assert result.exit_code == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("last 7 d") or lines[0].startswith("last 7")
    header = lines[1].split()
    assert header[:6] == ["pipeline", "runs", "err", "p50", "p95", "$/run"]
    [refunds] = [line for line in lines if line.startswith("refund_request")]
    assert refunds.split()[1] == "2"
    assert any("median time to an approval decision" in line for line in lines)


def test_json_has_every_figure_and_the_overall_row(cli_env: str) -> None:
    seed_refunds()

    result = stats("--json", "--since", "24h", "--pipeline", "refund_request")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    data = json.loads(result.stdout)
    assert data["window_seconds"] == 86400
    [refunds] = data["pipelines"]
    assert refunds["pipeline"] == "refund_request"
    assert (refunds["runs"], refunds["finished"], refunds["errors"]) == (2, 1, 0)
    assert refunds["pending"] == {"approvals": 1, "tasks": 0}
    assert refunds["approvals"]["approved"] == 0
    assert {"prompt_tokens", "completion_tokens", "human_task_rate", "p95_seconds"} <= set(refunds)
    assert data["overall"]["runs"] == 2


def test_a_window_that_is_not_a_duration_is_one_error_line(cli_env: str) -> None:
    result = stats("--since", "a week")

    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "--since" in line


def test_no_runs_says_so(cli_env: str) -> None:
    result = stats("--since", "1h")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "no runs in this window" in result.stdout


def test_chart_writes_a_png_of_the_last_7_days(cli_env: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    seed_refunds()
    out = tmp_path / "week.png"

    result = stats("--chart", str(out))

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"written to {out}" in result.stdout


def test_json_has_tokens_approvals_human_tasks_and_overall_percentiles(cli_env: str) -> None:
    seed_refunds()  # a small refund (done) and a large one (waiting for an approval)
    ask = ["trigger", "cli_review", "--input", '{"text": "ok?"}', "--as", "carol"]
    assert CliRunner().invoke(gatehouse_app, ask).exit_code == 0
    database = Database(cli_env)
    gatehouse = Gatehouse(database, directory=StaticDirectory({"finance-leads": ["alice"]}))
    [approval] = [a for a in gatehouse.pending() if getattr(a, "tool", None) == "issue_refund"]
    gatehouse.approve(approval.id, user="alice")
    [small] = [r for r in gatehouse.runs() if r.status == "succeeded"]
    with database.transaction() as conn:
        conn.execute(
            insert(calls_table),
            {
                "id": "llm_1",
                "run_id": small.id,
                "seq": 99,
                "key": "classify#1",
                "kind": "llm",
                "name": "classify",
                "status": "succeeded",
                "started_at": small.created_at,
                "meta": {"cost_usd": 0.002, "prompt_tokens": 700, "completion_tokens": 50},
            },
        )

    result = stats("--json", "--since", "24h")

    assert result.exit_code == 0, (result.stdout, result.stderr)
    data = json.loads(result.stdout)
    [refunds] = [p for p in data["pipelines"] if p["pipeline"] == "refund_request"]
    assert (refunds["prompt_tokens"], refunds["completion_tokens"]) == (700, 50)
    assert refunds["approvals"]["approved"] == 1
    assert refunds["approvals"]["median_decision_seconds"] >= 0
    overall = data["overall"]
    assert (overall["runs"], overall["runs_with_task"]) == (3, 1)
    assert overall["human_task_rate"] == pytest.approx(1 / 3)
    assert overall["approvals"]["median_decision_seconds"] is not None
    assert overall["p50_seconds"] is not None and overall["p95_seconds"] is not None
    with database.transaction() as conn:
        assert read_progress(conn).hours_until is not None  # the CLI rolled up first
    database.dispose()
