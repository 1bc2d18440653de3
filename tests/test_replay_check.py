"""`gatehouse replay --since … --check`: many runs replayed on today's code with no side effects,
judged same / diverged / would call / failed to replay; the waiting runs a deploy would break,
also under `gatehouse ready`; JUnit and JSON for CI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, event, update
from typer.testing import CliRunner, Result

from bot.cli.main import app
from pipelines import Gatehouse
from pipelines.replay_check import Verdict, check_replays
from storage.models import Run
from tests import replay_check_pipelines as rc
from tests.engine_pipelines import engines
from tests.fakes.clock import FakeClock

RUNS: Table = Run.__table__  # type: ignore[assignment]
SINCE = "2026-11-01T00:00"  # the fake clock starts on 2026-11-02


@pytest.fixture(autouse=True)
def _variant() -> Iterator[None]:
    rc.reset()
    yield
    rc.reset()


def _finished_order(gatehouse: Gatehouse, item: str = "lamp") -> str:
    run = gatehouse.trigger("rc_order", {"item": item}, user="carol")
    gatehouse.approve(run.waiting_for[0], user="olga")
    resumed = gatehouse.resume(run.id)
    assert resumed is not None and resumed.status == "succeeded"
    return run.id


def _waiting_order(gatehouse: Gatehouse, item: str = "desk") -> str:
    run = gatehouse.trigger("rc_order", {"item": item}, user="carol")
    assert run.status == "waiting"
    return run.id


def _quick(gatehouse: Gatehouse, amount: int = 1) -> str:
    run = gatehouse.trigger("rc_quick", {"amount": amount}, user="carol")
    return run.id


def _verdicts(gatehouse: Gatehouse, clock: FakeClock, **kw: Any) -> dict[str, str]:
    since = clock.now() - timedelta(days=7)
    result = check_replays(gatehouse.rt, since=since, **kw)
    return {r.run_id: str(r.verdict) for r in result.runs}


def test_unchanged_code_reproduces_every_finished_and_waiting_run(any_db_url: str) -> None:
    clock = FakeClock()
    with engines(any_db_url, clock) as make:
        gatehouse = make("w1")
        runs = [_finished_order(gatehouse), _waiting_order(gatehouse), _quick(gatehouse)]
        result = check_replays(gatehouse.rt, since=clock.now() - timedelta(days=7))
    assert sorted(r.run_id for r in result.runs) == sorted(runs)
    assert result.ok and result.breaking == []
    assert result.summary() == {
        "checked": 3,
        "same": 3,
        "diverged": 0,
        "would_call": 0,
        "failed_to_replay": 0,
        "waiting_runs_broken": 0,
    }
    assert rc.effects == ["ship lamp"], "the replays ran no tool"


def test_a_call_added_before_the_wait_point_breaks_the_waiting_run(any_db_url: str) -> None:
    clock = FakeClock()
    with engines(any_db_url, clock) as make:
        gatehouse = make("w1")
        finished, waiting, quick = (
            _finished_order(gatehouse),
            _waiting_order(gatehouse),
            _quick(gatehouse),
        )
        rc.flags["variant"] = "extra_step"
        result = check_replays(gatehouse.rt, since=clock.now() - timedelta(days=7))
    by_id = {r.run_id: r for r in result.runs}
    assert by_id[quick].verdict == Verdict.SAME
    for run_id in (finished, waiting):
        assert by_id[run_id].verdict == Verdict.DIVERGED
        assert by_id[run_id].position == 2
        assert by_id[run_id].where == (
            "call 2: the record has tool 'rc_ship#1', today's code calls step 'rc_extra#1'"
        )
    assert [r.run_id for r in result.breaking] == [waiting]
    assert not result.ok


def test_the_same_change_under_ctx_version_breaks_nothing(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    _finished_order(gatehouse)
    _waiting_order(gatehouse)
    rc.flags["variant"] = "versioned"
    assert set(_verdicts(gatehouse, clock).values()) == {"same"}


def test_a_tool_added_at_the_end_would_call_for_finished_runs_only(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    finished, waiting = _finished_order(gatehouse), _waiting_order(gatehouse)
    rc.flags["variant"] = "notify_after"
    result = check_replays(gatehouse.rt, since=clock.now() - timedelta(days=7))
    by_id = {r.run_id: r for r in result.runs}
    assert by_id[finished].verdict == Verdict.WOULD_CALL
    assert by_id[finished].where == (
        "call 4: today's code would call 'rc_notify#1', which the record lacks "
        "(the run ended succeeded after 3 calls)"
    )
    assert by_id[waiting].verdict == Verdict.SAME, "it resumes into the new call: nothing breaks"
    assert result.breaking == []
    assert rc.effects == ["ship lamp"]


def test_another_output_diverges(gatehouse: Gatehouse, clock: FakeClock) -> None:
    finished = _finished_order(gatehouse)
    rc.flags["variant"] = "shout"
    result = check_replays(gatehouse.rt, since=clock.now() - timedelta(days=7))
    (checked,) = result.runs
    assert (checked.run_id, checked.verdict) == (finished, Verdict.DIVERGED)
    assert checked.where == "today's code returns another output than the record"


def test_a_failed_run_is_the_same_when_today_s_code_raises_where_it_did(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    rc.flags["variant"] = "quick_fails"
    failed = _quick(gatehouse, amount=5)
    assert gatehouse.run(failed).status == "failed"
    assert _verdicts(gatehouse, clock) == {failed: "same"}
    rc.flags["variant"] = "normal"  # the fix deployed: it no longer fails
    result = check_replays(gatehouse.rt, since=clock.now() - timedelta(days=7))
    assert [(r.verdict, r.where) for r in result.runs] == [
        (Verdict.DIVERGED, "today's code finishes after 3 calls; the run ended failed")
    ]


def test_a_run_of_a_removed_pipeline_failed_to_replay_and_breaks_if_waiting(
    gatehouse: Gatehouse,
) -> None:
    waiting = _waiting_order(gatehouse)
    with gatehouse.rt.db.transaction() as conn:
        conn.execute(update(RUNS).where(RUNS.c.id == waiting).values(pipeline="rc_gone"))
    result = check_replays(gatehouse.rt, since=None)
    (checked,) = result.runs
    assert checked.verdict == Verdict.FAILED
    assert checked.where is not None and "no pipeline named 'rc_gone'" in checked.where
    assert result.breaking == [checked]


def test_the_window_the_limit_and_the_pipeline_choose_the_runs(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    old = _quick(gatehouse)
    old_waiting = _waiting_order(gatehouse)
    clock.advance(timedelta(days=10))
    newer = []
    for _ in range(3):
        clock.advance(timedelta(seconds=1))
        newer.append(_quick(gatehouse))
    clock.advance(timedelta(seconds=1))
    newest = _finished_order(gatehouse)
    everything = _verdicts(gatehouse, clock)
    assert set(everything) == {*newer, newest, old_waiting}, "a waiting run, whatever its age"
    assert old not in everything
    assert list(_verdicts(gatehouse, clock, limit=2)) == [newest, newer[-1], old_waiting]
    assert list(_verdicts(gatehouse, clock, limit=0)) == [old_waiting]
    assert list(_verdicts(gatehouse, clock, pipeline="rc_order")) == [newest, old_waiting]


def test_the_records_are_read_in_a_few_queries_whatever_the_number_of_runs(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    """Every statement SQLite runs is counted (the driver's trace, so the engine's direct driver
    reads count too): 30 runs cost no more queries than 3."""

    def statements(n_runs: int) -> int:
        while len(gatehouse.runs(limit=1000)) < n_runs:
            _quick(gatehouse)
        seen: list[str] = []

        def trace(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.set_trace_callback(seen.append)

        engine = gatehouse.rt.db.engine
        engine.dispose()  # new connections, each traced from its first statement
        event.listen(engine, "connect", trace)
        try:
            result = check_replays(gatehouse.rt, since=clock.now() - timedelta(days=1))
        finally:
            event.remove(engine, "connect", trace)
            engine.dispose()
        assert len(result.runs) == n_runs and result.ok
        assert any("FROM calls" in statement for statement in seen), "the trace sees the reads"
        return len([s for s in seen if s.lstrip().upper().startswith("SELECT")])

    assert statements(3) == statements(30)


# -- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.replay_check_pipelines")
    for name in ("GATEHOUSE_USER", "GATEHOUSE_OPERATORS", "GATEHOUSE_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def gh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_cli_check_passes_on_unchanged_code_and_fails_on_a_divergence(
    cli: Path, gatehouse: Gatehouse
) -> None:
    finished, waiting = _finished_order(gatehouse), _waiting_order(gatehouse)
    unchanged = gh("replay", "--since", SINCE, "--check")
    assert unchanged.exit_code == 0, unchanged.stderr
    assert unchanged.stdout.splitlines()[1:] == [
        "  same 2, diverged 0, would call 0, failed to replay 0",
        "waiting runs today's code would break: none",
    ]
    rc.flags["variant"] = "extra_step"
    changed = gh("replay", "--since", SINCE, "--check", "--junit", "out/replay.xml")
    assert changed.exit_code == 1, changed.stdout
    where = "call 2: the record has tool 'rc_ship#1', today's code calls step 'rc_extra#1'"
    assert changed.stdout.splitlines()[1:] == [
        "  same 0, diverged 2, would call 0, failed to replay 0",
        f"  diverged  {finished} (rc_order, succeeded): {where}",
        f"  diverged  {waiting} (rc_order, waiting): {where}",
        "waiting runs today's code would break: 1",
        f"  {waiting} (rc_order): {where}",
    ]
    assert gh("replay", "--since", SINCE).exit_code == 0, "without --check: a report only"
    suite = ET.parse(cli / "out" / "replay.xml").getroot()
    assert (suite.tag, suite.get("tests"), suite.get("failures"), suite.get("errors")) == (
        "testsuites",
        "2",
        "2",
        "0",
    )
    cases = suite.findall("./testsuite/testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("gatehouse.replay.rc_order", f"{finished} (succeeded)"),
        ("gatehouse.replay.rc_order", f"{waiting} (waiting)"),
    ]
    failure = cases[1].find("failure")
    assert failure is not None
    assert (failure.get("type"), failure.get("message")) == ("diverged", where)


def test_cli_check_json_shape(cli: Path, gatehouse: Gatehouse) -> None:
    waiting = _waiting_order(gatehouse)
    rc.flags["variant"] = "extra_step"
    result = gh("replay", "--since", SINCE, "--pipeline", "rc_order", "--check", "--json")
    assert result.exit_code == 1
    shown = json.loads(result.stdout)
    assert {k: shown[k] for k in ("ok", "pipeline", "summary", "breaking_waiting_runs")} == {
        "ok": False,
        "pipeline": "rc_order",
        "summary": {
            "checked": 1,
            "same": 0,
            "diverged": 1,
            "would_call": 0,
            "failed_to_replay": 0,
            "waiting_runs_broken": 1,
        },
        "breaking_waiting_runs": [waiting],
    }
    (run,) = shown["runs"]
    assert set(run) == {
        "run_id",
        "pipeline",
        "recorded_status",
        "verdict",
        "where",
        "position",
        "seconds",
    }
    assert (run["run_id"], run["verdict"], run["position"]) == (waiting, "diverged", 2)


def test_cli_single_run_check_exits_1_on_divergence_only_with_check(
    cli: Path, gatehouse: Gatehouse
) -> None:
    finished = _finished_order(gatehouse)
    same = gh("replay", finished, "--check")
    assert same.exit_code == 0 and "  verdict: same" in same.stdout.splitlines()
    rc.flags["variant"] = "shout"
    assert gh("replay", finished).exit_code == 0, "today's exit code without --check"
    changed = gh("replay", finished, "--check", "--json")
    assert changed.exit_code == 1
    shown = json.loads(changed.stdout)
    assert (shown["verdict"], shown["where"]) == (
        "diverged",
        "today's code returns another output than the record",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay"], "replay needs a RUN_ID, or --since 7d"),
        (["replay", "run_x", "--since", "7d"], "a RUN_ID or --since"),
        (["replay", "--since", "7d", "--fresh"], "--fresh asks the model again"),
        (["replay", "--since", "7d", "--pipeline", "rc_nope"], "no pipeline named 'rc_nope'"),
    ],
)
def test_cli_replay_refuses_what_it_cannot_do(cli: Path, args: list[str], message: str) -> None:
    result = gh(*args)
    assert result.exit_code == 1, result.stdout
    assert result.stderr.startswith("error: ") and message in result.stderr


def test_ready_lists_the_waiting_runs_a_deploy_would_break(cli: Path, gatehouse: Gatehouse) -> None:
    waiting = _waiting_order(gatehouse)
    before = json.loads(gh("ready", "rc_order", "--json").stdout)
    assert before["breaking_waiting_runs"] == []
    rc.flags["variant"] = "extra_step"
    after = gh("ready", "rc_order", "--json")
    assert after.exit_code == 1
    shown = json.loads(after.stdout)
    assert shown["ready"] is False
    assert [(r["run_id"], r["verdict"]) for r in shown["breaking_waiting_runs"]] == [
        (waiting, "diverged")
    ]
    text = gh("ready", "rc_order").stdout.splitlines()
    assert text[-2:] == [
        "waiting runs today's code would break: 1",
        f"  {waiting} (rc_order): call 2: the record has tool 'rc_ship#1', today's code calls "
        "step 'rc_extra#1'",
    ]
