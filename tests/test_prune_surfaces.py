"""Where a person meets retention: `gatehouse prune` (dry run, JSON, refusals), a pruned run's id
in `gatehouse run` and in `/gatehouse run` (both Slack modes), and the daily job (off unless
GATEHOUSE_RETENTION_DAYS is set; once per fire across replicas)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from bot.cli.main import app
from bot.scheduler import RETENTION_JOB, SYSTEM_PREFIX, add_retention_job, start_scheduler
from pipelines import Settings
from storage.db import Database
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.prune_history import run_id, seed
from tests.slack_harness import in_both_modes, requested_mode, slack_world
from tests.test_prune import NOW, engine, roll_old_history


def gh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def old_history(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> str:
    """300 old runs in the CLI's database, rolled up as `serve` leaves them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    for name in ("GATEHOUSE_USER", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_OPERATORS"):
        monkeypatch.delenv(name, raising=False)
    db = Database(sqlite_url)
    seed(db, 300)
    roll_old_history(db, engine(db))
    db.dispose()
    return sqlite_url


def test_prune_dry_run_counts_and_deletes_nothing_then_prune_deletes(old_history: str) -> None:
    dry = gh("prune", "--older-than", "90d", "--dry-run", "--as", "ops", "--json")
    assert dry.exit_code == 0, dry.output
    counted = json.loads(dry.stdout)
    assert (counted["dry_run"], counted["runs"], counted["kept_unfinished"]) == (True, 300, 2)
    assert "nothing deleted" in counted["produced_by"]
    assert gh("run", run_id(3)).exit_code == 0  # still there
    done = gh("prune", "--older-than", "90d", "--as", "ops")
    assert done.exit_code == 0, done.output
    assert "deleted 300 finished runs" in done.stdout
    assert "kept 2 older runs that are not over" in done.stdout
    gone = gh("run", run_id(3))
    assert gone.exit_code == 1
    assert f"run {run_id(3)} (old_b) was pruned on" in gone.output
    assert "finished on 2026-07-20" in gone.output


def test_prune_refuses_a_short_retention_and_a_bad_duration(old_history: str) -> None:
    short = gh("prune", "--older-than", "7d", "--as", "ops")
    assert short.exit_code == 1 and "35 days" in short.output
    bad = gh("prune", "--older-than", "soon", "--as", "ops")
    assert bad.exit_code == 1 and "not a duration" in bad.output


def test_prune_is_for_operators_when_operators_are_listed(
    old_history: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEHOUSE_OPERATORS", '["olga"]')
    refused = gh("prune", "--older-than", "90d", "--as", "mallory")
    assert refused.exit_code == 1 and "may not prune" in refused.output


def _texts(reply: dict[str, Any]) -> str:
    return reply["text"] + json.dumps(reply.get("blocks", []))


@pytest.fixture
def slack_old(
    request: pytest.FixtureRequest, fake_slack: FakeSlack, sqlite_url: str
) -> Iterator[Any]:
    db = Database(sqlite_url)
    seed(db, 50)
    gatehouse = engine(db)
    roll_old_history(db, gatehouse)
    from pipelines.retention import prune_runs

    prune_runs(gatehouse.rt, older_than=timedelta(days=90), now=NOW)
    db.dispose()
    with slack_world(fake_slack, sqlite_url, FakeClock(NOW), mode=requested_mode(request)) as w:
        yield w


@in_both_modes
def test_slash_run_of_a_pruned_id_says_when_it_was_pruned(slack_old: Any) -> None:
    world = slack_old
    response = world.slack.command(f"run {run_id(7)}", user_id="U_CAROL")
    assert response.status == 200
    world.settle()
    [reply] = world.fake.ephemerals("U_CAROL")
    assert f"{run_id(7)} (old_b) was pruned on 2026-11-02" in _texts(reply)
    assert world.fake.rejected == []


def test_the_daily_job_is_off_unless_retention_days_is_set(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    gatehouse = engine(db)
    off = start_scheduler(gatehouse, Settings(database_url=sqlite_url), catch_up_missed=False)
    try:
        assert add_retention_job(off) is None
        assert SYSTEM_PREFIX + RETENTION_JOB not in off.job_names()
    finally:
        off.shutdown(wait=False)
    assert Settings(database_url=sqlite_url).retention_days is None  # production default: never
    db.dispose()


def test_the_daily_job_prunes_once_per_fire_across_replicas(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    seed(db, 100)
    gatehouse = engine(db)
    roll_old_history(db, gatehouse)
    settings = Settings(database_url=sqlite_url, retention_days=90)
    handles = [start_scheduler(engine(db), settings, catch_up_missed=False) for _ in range(2)]
    try:
        jobs = [h.scheduler.get_job(add_retention_job(h)) for h in handles]
        fire_time = NOW.replace(hour=3, minute=30)
        results = [job.func(fire_time) for job in jobs]  # two replicas, the same fire
    finally:
        for handle in handles:
            handle.shutdown(wait=False)
    done = [r for r in results if r is not None]
    assert len(done) == 1 and done[0].runs == 100
    with db.transaction() as conn:
        from sqlalchemy import text

        actor = conn.execute(
            text("SELECT actor FROM audit_log WHERE event = 'runs.pruned'")
        ).scalar_one()
    assert actor == "system:retention"
    db.dispose()


def test_settings_refuse_a_retention_under_35_days(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="35"):
        Settings(database_url=sqlite_url, retention_days=7)
