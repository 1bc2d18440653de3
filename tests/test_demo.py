"""`make demo`: the seeded history (the real engine on a moving clock), and the demo process."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines import Gatehouse
from pipelines.alerts import list_alerts
from pipelines.demo_history import HistoryReport, NotAFreshDatabase, seed_history
from pipelines.stats import pipeline_stats
from storage.db import Database

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
