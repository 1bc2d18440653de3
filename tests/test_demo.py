"""`make demo`: the seeded history (the real engine on a moving clock), and the demo process."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.demo.history import HistoryReport, NotAFreshDatabase, seed_history
from bot.demo.samples import demo_schedule
from pipelines import Gatehouse
from pipelines.operations.alerting import list_alerts
from pipelines.operations.schedules import fire
from pipelines.operations.stats import pipeline_stats
from storage.db import Database
from tests.conftest import REPO_ROOT
from tests.fakes.clock import FakeClock

END = datetime(2026, 11, 25, 17, 30, tzinfo=UTC)  # a Wednesday afternoon


def _seed(url: str, **options: object) -> HistoryReport:
    db = Database(url)
    try:
        return seed_history(db, end=END, **options)  # type: ignore[arg-type]
    finally:
        db.dispose()


def test_history_has_every_outcome_people_and_the_model_produce(sqlite_url: str) -> None:
    began = time.perf_counter()
    report = _seed(sqlite_url, days=4)
    elapsed = time.perf_counter() - began

    runs = report.runs
    assert sum(runs.values()) >= 100
    for status in ("succeeded", "failed", "needs_attention", "rejected", "invalid_input"):
        assert runs[status] > 0, (status, runs)
    assert runs["waiting"] >= 3  # the cards left for the live demo
    assert runs["queued"] == runs["running"] == 0
    for status in ("approved", "rejected", "expired", "pending"):
        assert report.approvals[status] > 0, (status, report.approvals)
    assert report.tasks["answered"] > 0 and report.tasks["open"] >= 1
    assert report.llm_calls > 50 and report.llm_cost_usd > 0
    assert report.alerts_opened == 1
    assert elapsed < 60, f"seeding took {elapsed:.1f} s"


def test_history_is_the_same_for_the_same_seed(
    tmp_path: Path, migrated_sqlite_template: Path
) -> None:
    reports = []
    for name in ("a", "b"):
        target = tmp_path / f"{name}.db"
        shutil.copy(migrated_sqlite_template, target)
        reports.append(_seed(f"sqlite:///{target}", days=1, seed=11))
    first, second = reports
    assert first.runs == second.runs
    assert first.approvals == second.approvals
    assert first.tasks == second.tasks
    assert (first.llm_calls, first.llm_cost_usd) == (second.llm_calls, second.llm_cost_usd)


def test_history_is_what_stats_alerts_and_the_pending_list_read(sqlite_url: str) -> None:
    _seed(sqlite_url, days=3)
    gatehouse = Gatehouse(sqlite_url)
    try:
        week = timedelta(days=7)
        stats = pipeline_stats(gatehouse.rt, now=END, windows=[week])
        by_name = {p.pipeline: p.window(week) for p in stats.pipelines}
        triage, leads = by_name["ticket_triage"], by_name["lead_qualify"]
        assert by_name["refund_request"] is not None and by_name["refund_request"].runs > 0
        assert triage is not None and triage.llm_cost_usd > 0 and triage.errors > 0
        assert leads is not None and leads.approvals_approved > 0 and leads.prompt_tokens > 0
        [alert] = list_alerts(gatehouse.rt, now=END)
        assert (alert.pipeline, alert.status) == ("ticket_triage", "recovered")
        waiting = Counter(type(item).__name__ for item in gatehouse.pending())
        assert waiting["ApprovalView"] >= 2 and waiting["TaskView"] >= 1
        runs = [gatehouse.run(r.id) for r in gatehouse.runs(limit=1000)]
        decided_by = {a.decided_by for run in runs for a in run.approvals}
        assert decided_by == {"U_ALICE", "U_BOB", None}  # None: expired or still pending
    finally:
        gatehouse.db.dispose()


def test_history_refuses_a_database_that_already_has_runs(sqlite_url: str) -> None:
    _seed(sqlite_url, days=1)
    with pytest.raises(NotAFreshDatabase, match="already has"):
        _seed(sqlite_url, days=1)


def test_demo_schedules_fire_like_any_schedule_with_a_new_sample_each_time(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    fired = []
    for minute in (0, 2, 4, 6):
        fire_time = datetime(2026, 11, 2, 9, minute, tzinfo=UTC)
        schedule = demo_schedule("ticket_triage", fire_time)
        assert schedule.input_problem() is None
        clock.advance(timedelta(seconds=1))
        fired.append(fire(gatehouse.rt, schedule, fire_time))
        assert fire(gatehouse.rt, schedule, fire_time).outcome == "taken"  # claimed once
    runs = [gatehouse.run(str(result.run_id)) for result in fired]
    assert {run.trigger for run in runs} == {"schedule:ticket_triage#demo"}
    assert len({run.input["ticket_id"] for run in runs}) == 4
    assert demo_schedule("lead_qualify", END).input_problem() is None


# -- the demo process ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.loads(response.read()))


def _texts(base: str, channel: str) -> list[str]:
    state = _get_json(f"{base}/sandbox/api/state?user=U_ALICE&channel={channel}")
    return [str(message.get("text", "")) for message in state["messages"]]


@pytest.mark.slow
def test_demo_starts_the_sandbox_with_history_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GATEHOUSE_", "OPENAI_"))
    }
    stderr = (tmp_path / "stderr.log").open("w")
    ports = ["--port", str(_free_port()), "--bot-port", str(_free_port())]
    demo = subprocess.Popen(
        [sys.executable, "-m", "bot.demo", "--dir", str(tmp_path / "demo"), "--days", "1", *ports],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in demo.stdout or ()], daemon=True
    ).start()
    began = time.monotonic()
    try:
        url = None
        printed: list[str] = []
        # Generous: on a loaded 2-core machine importing the stack alone can take 15 s.
        while url is None and time.monotonic() - began < 60:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert demo.poll() is None, (printed, (tmp_path / "stderr.log").read_text())
                continue
            printed.append(line)
            if line.startswith("Gatehouse sandbox: "):
                url = line.removeprefix("Gatehouse sandbox: ").strip()
        assert url is not None, printed
        assert any(line.startswith("Gatehouse demo: seeded ") for line in printed), printed

        with urllib.request.urlopen(url + "/", timeout=5) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        deadline = time.monotonic() + 30
        review: list[str] = []
        approvals: list[str] = []
        while time.monotonic() < deadline:
            review, approvals = _texts(url, "C_REVIEW"), _texts(url, "C_APPROVALS")
            if any(t.startswith("Weekly review: ") for t in review) and len(approvals) >= 3:
                break
            time.sleep(0.2)
        assert any(t.startswith("Weekly review: ") for t in review), review
        assert sum(t.startswith("Approval needed") for t in approvals) >= 2, approvals
    finally:
        demo.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        try:
            code = demo.wait(timeout=15)
        finally:
            if demo.poll() is None:
                demo.kill()
            stderr.close()
    assert code == 0, (tmp_path / "stderr.log").read_text()[-3000:]
    assert time.monotonic() - stopping < 15


@pytest.mark.slow
def test_terminal_walk_through_runs_every_section(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GATEHOUSE_", "OPENAI_"))
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "bot.demo", "--terminal"],
        env=env,
        cwd=tmp_path,  # its database goes to ./.demo/terminal.db
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "=== 12. All runs" in done.stdout
    assert (tmp_path / ".demo" / "terminal.db").exists()
