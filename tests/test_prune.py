"""Retention on both databases: 100k old runs pruned in batches while a worker keeps running new
runs; the audit chain verifies after (from its checkpoint, with heads recorded before); stats
over the pruned hours are unchanged; pruned ids answer "pruned on DATE"; a dry run deletes
nothing; runs that are not over are kept."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from pipelines import Context, Gatehouse, StaticDirectory, pipeline
from pipelines.errors import RetentionTooShort, RunPruned, UnknownRun
from pipelines.operations.stats import roll_up_stats
from pipelines.retention import prune_runs
from storage.audit import ExpectedHead, verify_database
from storage.db import Database
from storage.stats import window_stats
from tests import engine_pipelines as ep
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier
from tests.prune_history import BASE, History, run_id, seed

N = 100_000
LIVE_RUNS = 200
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pipeline("prune_live", input=ep.Order)
def prune_live(ctx: Context, order: ep.Order) -> int:
    """A new run while old ones are pruned: a step and an audited read tool."""
    ctx.step("quote", ep.make_quote, order.item, order.amount)
    return ctx.tool(ep.t_lookup, ep.Lookup(item=order.item)).in_stock


@pytest.fixture
def database(any_db_url: str) -> Iterator[Database]:
    db = Database(any_db_url)
    yield db
    db.dispose()


def engine(db: Database) -> Gatehouse:
    return Gatehouse(
        db, clock=FakeClock(NOW), notifier=RecordingNotifier(), directory=StaticDirectory({})
    )


def count(db: Database, sql: str) -> int:
    with db.transaction() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def old_rows(db: Database) -> dict[str, int]:
    """Rows that belong to the seeded old runs, table by table."""
    return {
        "runs": count(db, "SELECT count(*) FROM runs WHERE id LIKE 'run_old%'"),
        "calls": count(db, "SELECT count(*) FROM calls WHERE run_id LIKE 'run_old%'"),
        "approvals": count(db, "SELECT count(*) FROM approvals WHERE run_id LIKE 'run_old%'"),
        "approval_nudges": count(db, "SELECT count(*) FROM approval_nudges"),
        "human_tasks": count(db, "SELECT count(*) FROM human_tasks WHERE run_id LIKE 'run_old%'"),
        "review_items": count(db, "SELECT count(*) FROM review_items"),
        "outbox": count(db, "SELECT count(*) FROM outbox WHERE subject_id LIKE 'apr_old%'"),
        "slack_messages": count(db, "SELECT count(*) FROM slack_messages"),
        "model_spend": count(db, "SELECT count(*) FROM model_spend"),
        "audit": count(db, "SELECT count(*) FROM audit_log WHERE run_id LIKE 'run_old%'"),
    }


def roll_old_history(db: Database, gatehouse: Gatehouse) -> None:
    """The stats rollups as `gatehouse serve` leaves them: the old days rolled by the real
    roll-up, then the watermark moved over the empty months to now (rolling empty hours writes
    no row, so this is what rolling them would give, without ~400 empty transactions)."""
    roll_up_stats(gatehouse.rt, now=BASE + timedelta(days=3), catch_up=True)
    hours_until = NOW.replace(minute=0) - timedelta(hours=1)  # floor_hour(NOW - LAG)
    days_until = hours_until.replace(hour=0)
    values: dict[str, Any] = {"h": hours_until, "d": days_until}
    if db.engine.dialect.name == "sqlite":
        values = {
            k: v.replace(tzinfo=None).isoformat(" ", "microseconds") for k, v in values.items()
        }
    with db.transaction() as conn:
        conn.execute(
            text("UPDATE stats_rollup_progress SET hours_until = :h, days_until = :d"), values
        )


def stats_of_old_days(db: Database) -> dict[str, Any]:
    """`gatehouse stats` numbers over whole hours covering every old run."""
    since = BASE.replace(second=0)
    with db.transaction() as conn:
        found = window_stats(conn, since=since, until=since + timedelta(days=3))
    return {
        name: (w, w.median_decision_seconds, w.p50_seconds, w.p95_seconds)
        for name, w in found.items()
    }


class LiveWorker:
    """`LIVE_RUNS` new runs, one after another on a thread started with the prune: the engine
    writes runs, calls and audit entries (the chain's head) while the prune deletes. Bounded,
    so the thread does not starve the prune of the GIL."""

    def __init__(self, gatehouse: Gatehouse) -> None:
        self.gatehouse = gatehouse
        self.runs: list[Any] = []
        self.errors: list[BaseException] = []
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._loop)

    def _loop(self) -> None:
        self.started.set()
        try:
            for _ in range(LIVE_RUNS):
                self.runs.append(self.gatehouse.trigger("prune_live", {"item": "w", "amount": 3}))
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self) -> LiveWorker:
        self.thread.start()
        self.started.wait(timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        self.thread.join(timeout=120)
        assert not self.thread.is_alive()


def test_a_hundred_thousand_old_runs_are_pruned_in_batches_while_a_worker_runs(
    database: Database,
) -> None:
    history: History = seed(database, N)
    gatehouse = engine(database)
    roll_old_history(database, gatehouse)
    stats_before = stats_of_old_days(database)
    head_before = verify_database(database)
    assert head_before.ok, head_before.reason
    rows_before = old_rows(database)

    dry = prune_runs(gatehouse.rt, older_than=timedelta(days=90), dry_run=True, now=NOW)
    assert dry.runs == N and dry.by_pipeline == {"old_a": N // 2, "old_b": N // 2}
    assert dry.kept_unfinished == 2  # the old waiting and needs_attention runs
    assert old_rows(database) == rows_before  # a dry run deletes nothing

    with LiveWorker(gatehouse) as live:
        report = prune_runs(gatehouse.rt, older_than=timedelta(days=90), now=NOW, user="ops")
    assert not live.errors, live.errors
    assert len(live.runs) == LIVE_RUNS
    assert report.runs == N and report.batches == (N + 1 + 499) // 500  # + the kept one
    assert report.audit_entries == history.blocker_position - 1
    assert report.kept_unfinished == 2

    after = old_rows(database)
    assert after["runs"] == 2  # only the waiting and the needs_attention runs are left
    assert after["calls"] == after["approvals"] == after["human_tasks"] == 0
    assert after["approval_nudges"] == after["review_items"] == after["outbox"] == 0
    assert after["slack_messages"] == 0
    assert after["model_spend"] == history.spend_rows  # the money ledger stays
    assert count(database, "SELECT count(*) FROM pruned_runs") == N
    statuses = {gatehouse.run(r.id).status for r in live.runs}
    assert statuses == {"succeeded"}

    assert stats_of_old_days(database) == stats_before

    result = verify_database(database)
    assert result.ok, result.reason
    assert result.pruned == history.blocker_position - 1
    assert result.count > head_before.count  # the worker's entries and the checkpoint
    # Heads recorded before the prune still check: the last one and one of the pruned range.
    held = verify_database(database, expect=ExpectedHead.parse(head_before.head))
    assert held.ok, held.reason

    with pytest.raises(RunPruned, match=r"pruned on 2026-11-02"):
        gatehouse.run(run_id(17))
    with pytest.raises(RunPruned, match=r"pruned on 2026-11-02"):
        gatehouse.replay(run_id(17))
    assert gatehouse.run(history.waiting_id).status == "waiting"
    assert gatehouse.run(history.attention_id).status == "needs_attention"
    with pytest.raises(UnknownRun) as unknown:
        gatehouse.run("run_never")
    assert not isinstance(unknown.value, RunPruned)

    again = prune_runs(gatehouse.rt, older_than=timedelta(days=90), now=NOW)
    assert again.runs == 0 and again.audit_entries == 0


def test_pruning_one_pipeline_keeps_the_others_runs(database: Database) -> None:
    seed(database, 400)
    gatehouse = engine(database)
    roll_old_history(database, gatehouse)
    report = prune_runs(gatehouse.rt, older_than=timedelta(days=90), pipeline="old_a", now=NOW)
    assert report.by_pipeline == {"old_a": 200}
    with database.transaction() as conn:
        left = dict(
            conn.execute(text("SELECT pipeline, count(*) FROM runs GROUP BY pipeline")).all()
        )
    assert left == {"old_a": 1, "old_b": 201}  # old_a's waiting run; old_b's all (+ attention)
    assert verify_database(database).ok


def test_recent_runs_are_not_pruned_and_a_short_retention_is_refused(database: Database) -> None:
    seed(database, 200)
    gatehouse = engine(database)
    roll_old_history(database, gatehouse)
    later = prune_runs(gatehouse.rt, older_than=timedelta(days=200), now=NOW)
    assert later.runs == 0 and count(database, "SELECT count(*) FROM runs") == 202
    with pytest.raises(RetentionTooShort, match="35 days"):
        prune_runs(gatehouse.rt, older_than=timedelta(days=7), now=NOW)
