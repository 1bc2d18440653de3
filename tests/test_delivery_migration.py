"""Migrating to delivery through the outbox (0012) keeps what an existing database still owes
deliverable, and the downgrade gives the old post claims back without a second post."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import insert, select

from pipelines import Gatehouse
from pipelines.operations.alerting import list_alerts
from pipelines.outbox import OutboxSender
from storage.alerts import alerts_table
from storage.db import MIGRATIONS_DIR, Database
from storage.outbox import outbox_table
from storage.review import review_weeks_table
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier


def migrate(db: Database, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)


def alert(alert_id: int, opened: Any, **values: Any) -> dict[str, Any]:
    return {
        "id": alert_id,
        "pipeline": "triage",
        "rule": "error_rate",
        "subject": f"triage{alert_id}",  # one open alert per subject
        "status": "open",
        "opened_at": opened,
        "rate": 0.5,
        "baseline": 0.0,
        "window_runs": 10,
        "details": {},
        "channel": None,
        "ts": None,
        "recovered_at": None,
    } | values


def owed(db: Database) -> list[tuple[str, str]]:
    with db.transaction() as conn:
        rows = conn.execute(select(outbox_table).order_by(outbox_table.c.id)).all()
    return [(row.subject_id, row.event) for row in rows]


def test_pending_alert_posts_become_outbox_deliveries_and_the_downgrade_restores_the_claims(
    any_db_url: str,
) -> None:
    clock = FakeClock(datetime.now(UTC))  # the migration reads the wall clock
    db = Database(any_db_url)
    try:
        migrate(db, "0011", down=True)
        now = clock.now()
        recovered = {"status": "recovered", "recovered_at": now}
        with db.transaction() as conn:
            conn.execute(
                insert(alerts_table),
                [
                    alert(1, now, details={"opened_post": "2026-11-01T00:00:00|dead-worker"}),
                    alert(2, now, channel="C", ts="1.1", details={"opened_post": "posted"}),
                    alert(3, now, channel="C", ts="1.2", details={"opened_post": "posted"})
                    | recovered,
                    alert(4, now, channel="C", ts="1.3", details={"recovered_reply_ts": "1.4"})
                    | recovered,
                    alert(5, now - timedelta(days=8)) | recovered,  # past the retry horizon
                ],
            )
        migrate(db, "head")
        assert owed(db) == [("alert:1", "alert_opened"), ("alert:3", "alert_recovered")]

        clock.advance(timedelta(seconds=5))  # due since the migration ran
        notifier = RecordingNotifier()
        gatehouse = Gatehouse(db, clock=clock)
        assert OutboxSender(gatehouse.rt, notifier=notifier).deliver_due() == 2
        assert [(event, view.id) for event, view in notifier.events] == [
            ("alert_opened", 1),
            ("alert_recovered", 3),
        ]

        migrate(db, "0011", down=True)
        assert owed(db) == []
        with db.transaction() as conn:
            details = {
                row.id: row.details
                for row in conn.execute(select(alerts_table.c.id, alerts_table.c.details))
            }
        assert details[4] == {"recovered_reply_ts": "1.4", "opened_post": "posted"} | {
            "recovered_post": "posted"
        }
        assert details[1] == {"opened_post": "2026-11-01T00:00:00|dead-worker"}  # still owed
        migrate(db, "head")
        assert [a.id for a in list_alerts(Gatehouse(db, clock=clock).rt)] != []
    finally:
        db.dispose()


def test_an_interrupted_review_thread_is_owed_after_the_migration(any_db_url: str) -> None:
    clock = FakeClock(datetime.now(UTC))
    db = Database(any_db_url)
    try:
        migrate(db, "0011", down=True)
        now = clock.now()
        with db.transaction() as conn:
            conn.execute(
                insert(review_weeks_table),
                [
                    {"id": 1, "week_start": now - timedelta(days=7), "picked_at": now}
                    | {"status": "summarized", "channel": "C", "parent_ts": "1.1"},
                    {"id": 2, "week_start": now, "picked_at": now}
                    | {"status": "posting", "channel": "C", "parent_ts": "2.1"},
                ],
            )
        migrate(db, "head")
        assert owed(db) == [("review:2", "review_thread")]
        clock.advance(timedelta(seconds=5))
        notifier = RecordingNotifier()
        assert OutboxSender(Gatehouse(db, clock=clock).rt, notifier=notifier).deliver_due() == 1
        assert [(event, week.id) for event, week in notifier.events] == [("review_thread", 2)]
        migrate(db, "0011", down=True)
        assert owed(db) == []
    finally:
        db.dispose()
