"""The `gatehouse` command line, driven as a user would: in-process through typer's CliRunner
against a temporary SQLite file, and as real `python -m bot.cli` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from bot.cli.main import app
from tests.cli_pipelines import SELF_SIGNAL_ENV
from tests.conftest import REPO_ROOT

GROUPS = '{"finance-leads": ["alice", "bob"]}'
SMALL = '{"order_id": "ord_1001", "amount": "12.50", "reason": "arrived scratched"}'
LARGE = '{"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}'
RUN_KEYS = {
    "id",
    "pipeline",
    "status",
    "input",
    "output",
    "error",
    "trigger_user",
    "created_at",
    "finished_at",
    "calls",
    "approvals",
}
CALL_KEYS = {"key", "kind", "name", "status", "input", "output", "error", "started_at"}
CALL_KEYS |= {"finished_at"}
APPROVAL_KEYS = {"id", "call_key", "status", "requested_at", "decided_by", "decided_at", "reason"}


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> str:
    monkeypatch.chdir(tmp_path)  # no stray .env, and relative @files resolve here
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", GROUPS)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.cli_pipelines")
    for name in ("GATEHOUSE_USER", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_LOG_FORMAT", SELF_SIGNAL_ENV):
        monkeypatch.delenv(name, raising=False)
    return sqlite_url


def gh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def ok(*args: str) -> Result:
    result = gh(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def json_of(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def assert_one_error_line(result: Result, *fragments: str, code: int = 1) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def waiting_large_refund(user: str = "alice") -> tuple[str, str]:
    run = json_of("trigger", "refund_request", "--input", LARGE, "--as", user)
    assert run["status"] == "waiting"
    return run["id"], run["approvals"][0]["id"]


# -- the happy path ------------------------------------------------------------------------------


def test_small_refund_finishes_here_and_prints_run_and_output(cli_env: str) -> None:
    result = ok("trigger", "refund_request", "--input", SMALL, "--as", "carol")
    assert "(refund_request): succeeded" in result.stdout
    assert "refunded 12.50 EUR on ord_1001" in result.stdout
    assert result.stderr == ""


def test_large_refund_waits_and_prints_the_exact_command_to_approve(cli_env: str) -> None:
    result = ok("trigger", "refund_request", "--input", LARGE, "--as", "alice")
    [approval] = json_of("pending")
    assert approval["type"] == "approval"
    assert f"gatehouse approve {approval['id']} --as USER" in result.stdout
    assert f"⏸ approval {approval['id']} requested: issue_refund" in result.stdout
    assert "(refund_request): waiting" in result.stdout
    assert "four-eyes: not alice" in result.stdout


def test_trigger_pending_refusal_approval_and_run_json(cli_env: str) -> None:
    run_id, approval_id = waiting_large_refund("alice")
    pending = json_of("pending")
    assert [p["id"] for p in pending] == [approval_id]
    assert pending[0]["run_id"] == run_id and pending[0]["tool"] == "issue_refund"

    refused = gh("approve", approval_id, "--as", "alice")
    assert_one_error_line(refused, "four-eyes", "alice")
    assert json_of("run", run_id)["status"] == "waiting"

    approved = ok("approve", approval_id, "--as", "bob", "--reason", "lost in transit")
    assert f"✔ approval {approval_id} approved by bob" in approved.stdout
    assert f"run {run_id} (refund_request): succeeded" in approved.stdout
    assert json_of("pending") == []

    run = json_of("run", run_id)
    assert set(run) >= RUN_KEYS
    assert run["status"] == "succeeded" and run["trigger_user"] == "alice"
    assert run["input"] == {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}
    assert run["output"]["status"] == "refunded"
    assert run["finished_at"] is not None
    assert [(c["kind"], c["key"], c["status"]) for c in run["calls"]] == [
        ("step", "to_cents#1", "succeeded"),
        ("tool", "find_order#1", "succeeded"),
        ("step", "check_refundable#1", "succeeded"),
        ("tool", "issue_refund#1", "succeeded"),
    ]
    assert all(set(c) >= CALL_KEYS for c in run["calls"])
    [approval] = run["approvals"]
    assert set(approval) >= APPROVAL_KEYS
    assert approval["status"] == "approved" and approval["decided_by"] == "bob"
    assert approval["reason"] == "lost in transit"


def test_run_shows_calls_approvals_transitions_and_the_audit_trail(cli_env: str) -> None:
    run_id, approval_id = waiting_large_refund("alice")
    gh("approve", approval_id, "--as", "alice")
    ok("approve", approval_id, "--as", "bob")
    text = ok("run", run_id).stdout
    for expected in (
        "issue_refund#1",
        "find_order#1",
        f"{approval_id}  issue_refund#1  approved by bob",
        "waiting → queued",
        "running → succeeded",
        "refused  issue_refund  by alice",
        "approval.approved  issue_refund  by bob",
        "tool.succeeded  issue_refund",
    ):
        assert expected in text, expected


def test_trigger_user_defaults_to_gatehouse_user(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEHOUSE_USER", "dora")
    run = json_of("trigger", "refund_request", "--input", SMALL)
    assert run["trigger_user"] == "dora"


def test_input_from_a_file(cli_env: str, tmp_path: Path) -> None:
    (tmp_path / "refund.json").write_text(SMALL)
    run = json_of("trigger", "refund_request", "--input", "@refund.json", "--as", "carol")
    assert run["status"] == "succeeded"


def test_reject_needs_a_reason_and_ends_the_run_rejected(cli_env: str) -> None:
    run_id, approval_id = waiting_large_refund()
    assert_one_error_line(gh("reject", approval_id, "--as", "bob"), "--reason", code=2)
    result = json_of("reject", approval_id, "--as", "bob", "--reason", "not eligible")
    assert result["approval"]["status"] == "rejected"
    assert result["run"]["id"] == run_id and result["run"]["status"] == "rejected"
    assert "not eligible" in result["run"]["error"]


def test_no_run_leaves_the_run_queued_for_a_worker(cli_env: str) -> None:
    run_id, approval_id = waiting_large_refund()
    decided = json_of("approve", approval_id, "--as", "bob", "--no-run")
    assert decided["run"]["status"] == "queued"
    assert "executed 1 run(s)" in ok("worker", "--once").stdout
    assert json_of("run", run_id)["status"] == "succeeded"


def test_queue_only_enqueues(cli_env: str) -> None:
    run = json_of("trigger", "refund_request", "--input", SMALL, "--as", "carol", "--queue")
    assert run["status"] == "queued" and run["calls"] == []
    ok("worker", "--once")
    assert json_of("run", run["id"])["status"] == "succeeded"


def test_human_task_is_listed_and_answered(cli_env: str) -> None:
    run = json_of("trigger", "cli_review", "--input", '{"text": "refund policy"}', "--as", "carol")
    assert run["status"] == "waiting"
    [task] = json_of("pending")
    assert task["type"] == "human_task" and task["id"] == run["waiting_for"][0]
    listed = ok("pending").stdout
    assert f"gatehouse answer {task['id']} --as USER --answer" in listed

    assert_one_error_line(
        gh("answer", task["id"], "--as", "bob", "--answer", '{"approved": tru'),
        "--answer is not valid JSON",
    )
    assert_one_error_line(
        gh("answer", task["id"], "--as", "bob", "--answer", '{"approved": true}'), "note"
    )
    assert_one_error_line(
        gh("answer", task["id"], "--as", "carol", "--answer", '{"approved": true, "note": "ok"}'),
        "carol may not answer",
    )
    answered = json_of(
        "answer", task["id"], "--as", "bob", "--answer", '{"approved": true, "note": "fine"}'
    )
    assert answered["task"]["answered_by"] == "bob"
    assert answered["run"]["status"] == "succeeded"
    assert answered["run"]["output"] == {"approved": True, "note": "fine"}


# -- errors: one line on stderr, non-zero exit ------------------------------------------------------


def test_unknown_pipeline(cli_env: str) -> None:
    result = gh("trigger", "no_such_pipeline", "--input", "{}")
    assert_one_error_line(result, "no pipeline named 'no_such_pipeline'", "refund_request")
    assert result.stdout == ""


def test_invalid_input_names_every_field_and_records_an_invalid_input_run(cli_env: str) -> None:
    bad = '{"order_id": "1002", "amount": "-5"}'
    result = gh("trigger", "refund_request", "--input", bad, "--as", "carol")
    line = assert_one_error_line(result, "invalid input for refund_request")
    for field in ("order_id:", "amount:", "reason:"):
        assert field in line
    [recorded] = json_of("runs", "--status", "invalid_input")
    assert recorded["pipeline"] == "refund_request" and recorded["trigger_user"] == "carol"
    assert recorded["id"] in line
    assert recorded["calls"] == []


def test_invalid_input_with_json_still_prints_the_recorded_run(cli_env: str) -> None:
    result = gh("trigger", "refund_request", "--input", "{}", "--json")
    assert_one_error_line(result, "invalid input")
    assert json.loads(result.stdout)["status"] == "invalid_input"


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ('{"order_id": "ord_1001", ', ["--input is not valid JSON", "line 1 column 26"]),
        ('{"a": 1}}', ["--input is not valid JSON", "Extra data"]),
        ("@missing.json", ["--input @missing.json", "no file 'missing.json'"]),
    ],
)
def test_malformed_input_says_where_and_writes_nothing(
    cli_env: str, value: str, fragments: list[str]
) -> None:
    assert_one_error_line(gh("trigger", "refund_request", "--input", value), *fragments)
    assert json_of("runs") == []


def test_malformed_json_in_a_file_names_the_file(cli_env: str, tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{\n  "order_id": ord_1001\n}')
    result = gh("trigger", "refund_request", "--input", "@broken.json")
    assert_one_error_line(result, "--input @broken.json is not valid JSON", "line 2")


def test_unknown_ids(cli_env: str) -> None:
    assert_one_error_line(gh("run", "run_nope"), "no run run_nope")
    assert_one_error_line(gh("replay", "run_nope"), "no run run_nope")
    assert_one_error_line(gh("approve", "apr_nope", "--as", "bob"), "no approval apr_nope")
    assert_one_error_line(gh("undo", "call_nope", "--as", "bob"), "no call call_nope")
    answer = gh("answer", "task_nope", "--as", "bob", "--answer", "{}")
    assert_one_error_line(answer, "no human task task_nope")


def test_approving_twice_says_who_decided(cli_env: str) -> None:
    _, approval_id = waiting_large_refund()
    ok("approve", approval_id, "--as", "bob")
    again = gh("approve", approval_id, "--as", "alice")
    assert_one_error_line(again, f"approval {approval_id} was already approved by bob")


def test_approving_as_a_non_approver_is_refused(cli_env: str) -> None:
    run_id, approval_id = waiting_large_refund()
    result = gh("approve", approval_id, "--as", "mallory")
    assert_one_error_line(result, "mallory may not approve issue_refund", "@finance-leads")
    assert json_of("run", run_id)["status"] == "waiting"


def test_acting_commands_require_as(cli_env: str) -> None:
    assert_one_error_line(gh("approve", "apr_x"), "Missing option '--as'", code=2)
    assert_one_error_line(gh("undo", "call_x"), "Missing option '--as'", code=2)


def test_bad_configuration_is_one_line_per_problem(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEHOUSE_GROUPS", "{not json")
    assert_one_error_line(gh("runs"), "GATEHOUSE_GROUPS is not valid JSON")
    monkeypatch.setenv("GATEHOUSE_GROUPS", GROUPS)
    monkeypatch.setenv("GATEHOUSE_LOG_LEVEL", "loud")
    monkeypatch.setenv("GATEHOUSE_RUN_LEASE_SECONDS", "0")
    line = assert_one_error_line(gh("runs"))
    assert "GATEHOUSE_LOG_LEVEL" in line and "GATEHOUSE_RUN_LEASE_SECONDS" in line
    monkeypatch.delenv("GATEHOUSE_LOG_LEVEL")
    monkeypatch.delenv("GATEHOUSE_RUN_LEASE_SECONDS")
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", "mysql://db/gatehouse")
    assert_one_error_line(gh("runs"), "supports sqlite and postgresql")


def test_no_command_prints_help_and_succeeds(cli_env: str) -> None:
    assert "approve" in ok().stdout
    assert "upgrade" in ok("db").stdout
    assert_one_error_line(gh("frobnicate"), "No such command 'frobnicate'", code=2)


# -- listing -----------------------------------------------------------------------------------------


def test_runs_filters(cli_env: str) -> None:
    small = json_of("trigger", "refund_request", "--input", SMALL, "--as", "carol")
    waiting_id, _ = waiting_large_refund()
    review = json_of("trigger", "cli_review", "--input", '{"text": "x"}')

    assert [r["id"] for r in json_of("runs")] == [review["id"], waiting_id, small["id"]]
    assert [r["id"] for r in json_of("runs", "--status", "succeeded")] == [small["id"]]
    waiting = json_of("runs", "--status", "WAITING", "--pipeline", "refund_request")
    assert [r["id"] for r in waiting] == [waiting_id]
    assert [r["id"] for r in json_of("runs", "--limit", "1")] == [review["id"]]
    assert len(json_of("runs", "--since", "1h")) == 3
    assert json_of("runs", "--since", "2999-01-01T00:00") == []
    first = json_of("runs", "--pipeline", "refund_request")[-1]
    assert set(first) >= RUN_KEYS and first["calls"], "runs --json has the run shape, calls too"

    table = ok("runs", "--pipeline", "refund_request").stdout.splitlines()
    assert table[0].split() == ["run", "pipeline", "status", "user", "created", "took"]
    assert len(table) == 3 and waiting_id in table[1]


def test_runs_rejects_unknown_status_and_bad_durations(cli_env: str) -> None:
    assert_one_error_line(gh("runs", "--status", "done"), "'done' is not a run status", "waiting")
    assert_one_error_line(gh("runs", "--since", "yesterday"), "--since 'yesterday'")
    assert_one_error_line(gh("runs", "--limit", "0"), "--limit", code=2)


def test_pipelines_lists_input_fields_and_triggers(cli_env: str) -> None:
    listed = {p["name"]: p for p in json_of("pipelines")}
    refunds = listed["refund_request"]
    assert refunds["triggers"] == ["webhook()"]
    assert set(refunds["input_schema"]["properties"]) == {"order_id", "amount", "reason"}
    assert "cli_review" in listed
    text = ok("pipelines").stdout
    assert "refund_request — Refund an order" in text
    assert "order_id" in text and "triggers: webhook()" in text


def test_db_upgrade_creates_a_fresh_database(
    cli_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "fresh" / "new.db"
    target.parent.mkdir()
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", f"sqlite:///{target}")
    assert "is at revision" in ok("db", "upgrade").stdout
    assert target.exists()
    assert json_of("runs") == []


# -- replay and undo ------------------------------------------------------------------------------------


def test_replay_reuses_the_record_and_reports_a_matching_output(cli_env: str) -> None:
    run_id, approval_id = waiting_large_refund()
    ok("approve", approval_id, "--as", "bob")
    report = json_of("replay", run_id)
    assert [(c["key"], c["outcome"]) for c in report["calls"]] == [
        ("to_cents#1", "reused"),
        ("find_order#1", "reused"),
        ("check_refundable#1", "reused"),
        ("issue_refund#1", "reused"),
    ]
    assert report["divergence"] is None and report["output_matches"] is True
    text = ok("replay", run_id).stdout
    assert "divergence: none" in text and "its output matches the record" in text


def test_replay_of_a_waiting_run_shows_the_call_it_would_make(cli_env: str) -> None:
    run_id, _ = waiting_large_refund()
    text = ok("replay", run_id).stdout
    assert "would call issue_refund (spend)" in text
    assert "did not finish" in text
    assert json_of("run", run_id)["status"] == "waiting"


def test_undo_reverses_the_refund_once(cli_env: str) -> None:
    run_id, approval_id = waiting_large_refund()
    ok("approve", approval_id, "--as", "bob")
    refund = next(c for c in json_of("run", run_id)["calls"] if c["name"] == "issue_refund")

    assert_one_error_line(gh("undo", refund["id"], "--as", "carol"), "carol may not undo")
    undone = ok("undo", refund["id"], "--as", "bob").stdout
    assert f"undid call {refund['id']} (issue_refund)" in undone

    calls = json_of("run", run_id)["calls"]
    reversal = calls[-1]
    assert reversal["kind"] == "reversal" and reversal["status"] == "succeeded"
    assert reversal["input"]["undoes"] == refund["id"]
    assert next(c for c in calls if c["id"] == refund["id"])["reversed_by"] == reversal["id"]
    assert_one_error_line(gh("undo", refund["id"], "--as", "bob"), "already undone")
    assert "tool.reversed  issue_refund  by bob" in ok("run", run_id).stdout


# -- real processes -------------------------------------------------------------------------------------


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def process_env(sqlite_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        GATEHOUSE_DATABASE_URL=sqlite_url,
        GATEHOUSE_GROUPS=GROUPS,
        GATEHOUSE_PIPELINES="pipelines.catalog,tests.cli_pipelines",
        **extra,
    )
    return env


@pytest.mark.slow
def test_python_m_bot_cli_triggers_and_reports_errors(sqlite_url: str, tmp_path: Path) -> None:
    env = process_env(sqlite_url)
    (tmp_path / "refund.json").write_text(LARGE)
    done = run_cli(env, tmp_path, "trigger", "refund_request", "--input", "@refund.json")
    assert done.returncode == 0, done.stderr
    assert "(refund_request): waiting" in done.stdout

    listed = run_cli(env, tmp_path, "pending", "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1

    broken = run_cli(env, tmp_path, "trigger", "refund_request", "--input", "{oops")
    assert broken.returncode == 1
    assert broken.stderr.splitlines() == [broken.stderr.strip()]
    assert broken.stderr.startswith("error: --input is not valid JSON")


def test_a_process_registers_only_the_pipelines_it_is_told_to(
    sqlite_url: str, tmp_path: Path
) -> None:
    """No example pipeline in production: without GATEHOUSE_PIPELINES nothing is registered,
    and the refusal says what to set."""
    env = process_env(sqlite_url)
    del env["GATEHOUSE_PIPELINES"]
    listed = run_cli(env, tmp_path, "pipelines", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    said = run_cli(env, tmp_path, "pipelines")
    assert "no pipelines registered: GATEHOUSE_PIPELINES names the modules" in said.stdout

    refused = run_cli(env, tmp_path, "trigger", "refund_request", "--input", LARGE)
    assert refused.returncode == 1
    assert "no pipelines are registered" in refused.stderr
    assert "pipelines.catalog for the examples" in refused.stderr

    env["GATEHOUSE_PIPELINES"] = "pipelines.catalog"
    named = run_cli(env, tmp_path, "pipelines", "--json")
    assert {p["name"] for p in json.loads(named.stdout)} >= {"refund_request", "ticket_triage"}


@pytest.mark.slow
def test_worker_finishes_the_current_run_on_sigterm_then_exits_zero(
    cli_env: str, tmp_path: Path
) -> None:
    run = json_of("trigger", "cli_signals_itself", "--queue")
    env = process_env(cli_env, GATEHOUSE_WORKER_POLL_SECONDS="0.05", **{SELF_SIGNAL_ENV: "1"})
    done = run_cli(env, tmp_path, "worker")
    assert done.returncode == 0, done.stderr
    assert "SIGTERM: stopping after the current run" in done.stderr
    assert "worker stopped after 1 run(s)" in done.stdout
    finished = json_of("run", run["id"])
    assert finished["status"] == "succeeded" and finished["output"] == "finished"
    assert [c["output"] for c in finished["calls"]] == [True, "finished"]
