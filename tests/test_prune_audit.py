"""The audit chain after a prune: the checkpoint is an entry hashed like the others (keyed with
GATEHOUSE_AUDIT_KEY), verify starts from it, and cutting more, deleting the checkpoint or
editing it is caught."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from pipelines.retention import prune_runs
from storage.audit import ExpectedHead, use_audit_key, verify_database
from storage.audit_checkpoint import CHECKPOINT_EVENT
from storage.db import Database
from tests.prune_history import seed
from tests.test_prune import NOW, engine, roll_old_history


@pytest.fixture
def pruned(any_db_url: str) -> Iterator[Database]:
    """600 old runs pruned: the chain's first 90 entries (up to the waiting run's) cut."""
    db = Database(any_db_url)
    seed(db, 600)
    with db.transaction() as conn:
        fifth = conn.execute(text("SELECT hash FROM audit_log ORDER BY id LIMIT 1 OFFSET 4"))
        db.info_fifth = ExpectedHead(str(fifth.scalar_one()), 5)  # type: ignore[attr-defined]
    gatehouse = engine(db)
    roll_old_history(db, gatehouse)
    report = prune_runs(gatehouse.rt, older_than=timedelta(days=90), now=NOW, user="ops")
    assert report.audit_entries == 90
    yield db
    db.dispose()


def first_left(db: Database) -> int:
    with db.transaction() as conn:
        return int(conn.execute(text("SELECT min(id) FROM audit_log")).scalar_one())


def test_verify_starts_from_the_checkpoint_and_keeps_positions(pruned: Database) -> None:
    result = verify_database(pruned)
    assert result.ok, result.reason
    assert result.pruned == 90 and result.count == result.pruned + result.checked
    # A head recorded before the prune, inside the pruned range, is vouched for by the checkpoint.
    early = verify_database(pruned, expect=pruned.info_fifth)  # type: ignore[attr-defined]
    assert early.ok, early.reason
    with pruned.transaction() as conn:
        event, actor = conn.execute(
            text("SELECT event, actor FROM audit_log ORDER BY id DESC LIMIT 1 OFFSET 1")
        ).one()
    assert (event, actor) == (CHECKPOINT_EVENT, "ops")


def test_deleting_more_after_the_prune_is_caught(pruned: Database) -> None:
    first = first_left(pruned)
    with pruned.transaction() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": first})
    result = verify_database(pruned)
    assert not result.ok and result.problem == "unlinked"
    assert "last pruned entry" in (result.reason or "")


def test_deleting_the_checkpoint_is_caught(pruned: Database) -> None:
    with pruned.transaction() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE event = :e"), {"e": CHECKPOINT_EVENT})
    result = verify_database(pruned)
    assert not result.ok and result.problem == "unlinked"


def test_editing_the_checkpoint_is_caught(pruned: Database) -> None:
    with pruned.transaction() as conn:
        if pruned.engine.dialect.name == "postgresql":
            edit = "UPDATE audit_log SET detail = jsonb_set(detail, '{position}', '3') WHERE event = :e"
        else:
            edit = (
                "UPDATE audit_log SET detail = json_set(detail, '$.position', 3) WHERE event = :e"
            )
        conn.execute(text(edit), {"e": CHECKPOINT_EVENT})
    result = verify_database(pruned)
    assert not result.ok and result.problem == "altered"


def test_with_a_key_the_checkpoint_is_keyed_and_verifies(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    use_audit_key(db, "k" * 32)
    seed(db, 200)
    gatehouse = engine(db)
    roll_old_history(db, gatehouse)
    prune_runs(gatehouse.rt, older_than=timedelta(days=90), now=NOW)
    with db.transaction() as conn:
        scheme = conn.execute(
            text("SELECT hash_scheme FROM audit_log WHERE event = :e"), {"e": CHECKPOINT_EVENT}
        ).scalar_one()
    assert scheme == "k1"
    result = verify_database(db)
    assert result.ok, result.reason
    use_audit_key(db, None)
    assert verify_database(db).problem == "needs_key"
    db.dispose()
