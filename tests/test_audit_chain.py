"""The audit log's hash chain: intact after real work on SQLite and PostgreSQL, every kind of
tampering named at the first broken entry, older entries chained by the migration, concurrent
appenders never forking it, and `gatehouse audit verify | list` on top."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Integer, String, column, delete, func, insert, select, table, update
from typer.testing import CliRunner, Result

from bot.cli.main import app
from pipelines import Gatehouse, StaticDirectory
from storage.audit import (
    GENESIS,
    append_audit,
    audit_table,
    entry_hash,
    verify_chain,
    verify_database,
)
from storage.db import MIGRATIONS_DIR, Database
from storage.types import JSONValue, UTCDateTime
from tests import engine_pipelines as ep
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock

SMALL = {"order_id": "ord_1001", "amount": "12.50", "reason": "arrived scratched"}
LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


@pytest.fixture
def engine(any_db_url: str, clock: FakeClock) -> Iterator[Gatehouse]:
    gatehouse = Gatehouse(any_db_url, clock=clock, directory=StaticDirectory(GROUPS))
    yield gatehouse
    gatehouse.db.dispose()


def workload(gatehouse: Gatehouse, clock: FakeClock) -> None:
    """Runs with tools, an approval refused then granted, a rejection, a human task, a rate
    limit, an undo and an undo refused: every place that writes the audit log."""
    small = gatehouse.trigger("refund_request", SMALL, user="carol")
    assert small.status == "succeeded", small.error
    large = gatehouse.trigger("refund_request", LARGE, user="alice")
    [approval_id] = large.waiting_for
    with pytest.raises(Exception, match="four-eyes"):
        gatehouse.approve(approval_id, user="alice")
    gatehouse.approve(approval_id, user="bob")
    assert gatehouse.resume(large.id) is not None
    rejected = gatehouse.trigger("t_pay_only", {"amount": 5}, user="carol")
    gatehouse.reject(rejected.waiting_for[0], user="dave", reason="not this week")
    gatehouse.resume(rejected.id)
    asked = gatehouse.trigger("t_ask_price", {"item": "gizmo"}, user="carol")
    gatehouse.answer(asked.waiting_for[0], user="olga", answer={"price_cents": 250})
    gatehouse.resume(asked.id)
    for _ in range(3):
        gatehouse.trigger("t_limited_send", {"amount": 1}, user="carol")
    clock.advance(timedelta(minutes=1))
    credit = gatehouse.trigger("t_credit_and_stamp", {"amount": 7}, user="carol")
    credit_call = next(c for c in gatehouse.run(credit.id).calls if c.name == "t_credit")
    with pytest.raises(Exception, match="may not undo"):
        gatehouse.undo(credit_call.id, user="mallory")
    gatehouse.undo(credit_call.id, user="alice")
    refund_call = next(c for c in gatehouse.run(small.id).calls if c.name == "issue_refund")
    gatehouse.undo(refund_call.id, user="bob")


def entries(db: Database) -> list[Any]:
    with db.transaction() as conn:
        return list(conn.execute(select(audit_table).order_by(audit_table.c.id)).all())


def test_chain_is_intact_after_runs_with_tools_approvals_tasks_and_undo(
    engine: Gatehouse, clock: FakeClock
) -> None:
    workload(engine, clock)

    rows = entries(engine.db)
    events = {row.event for row in rows}
    assert {"tool.started", "tool.succeeded", "approval.requested", "approval.approved"} <= events
    assert {"approval.rejected", "task.opened", "task.answered", "tool.rate_limited"} <= events
    assert {"tool.reverse_started", "tool.reversed", "refused"} <= events
    assert rows[0].prev_hash == GENESIS
    assert [row.prev_hash for row in rows[1:]] == [row.hash for row in rows[:-1]]
    with engine.db.transaction() as conn:
        result = verify_chain(conn)
    assert result.ok, result.reason
    assert result.checked == len(rows) and result.head_hash == rows[-1].hash
    assert verify_database(engine.db) == result


def test_an_empty_log_verifies_and_ends_at_genesis(engine: Gatehouse) -> None:
    result = verify_database(engine.db)
    assert (result.ok, result.checked, result.head_hash) == (True, 0, GENESIS)


def _tamper(db: Database, statement: Any) -> None:
    with db.transaction() as conn:
        conn.execute(statement)


def test_an_altered_detail_is_named_as_altered(engine: Gatehouse, clock: FakeClock) -> None:
    workload(engine, clock)
    target = next(r for r in entries(engine.db) if r.event == "approval.approved")
    _tamper(
        engine.db,
        update(audit_table)
        .where(audit_table.c.id == target.id)
        .values(detail={"reason": "approved by the CFO"}),
    )

    result = verify_database(engine.db)

    assert not result.ok
    assert (result.broken_id, result.problem) == (target.id, "altered")
    assert f"entry {target.id} (approval.approved)" in (result.reason or "")
    assert result.checked == sum(1 for r in entries(engine.db) if r.id <= target.id)


@pytest.mark.parametrize("column", ["actor", "at", "event", "tool"])
def test_any_altered_field_breaks_the_entry(
    engine: Gatehouse, clock: FakeClock, column: str
) -> None:
    workload(engine, clock)
    target = next(r for r in entries(engine.db) if r.event == "tool.started")
    value = target.at + timedelta(seconds=1) if column == "at" else "someone-else"
    _tamper(
        engine.db, update(audit_table).where(audit_table.c.id == target.id).values({column: value})
    )
    result = verify_database(engine.db)
    assert (result.broken_id, result.problem) == (target.id, "altered")


def test_a_rehashed_edit_breaks_the_link_of_the_entry_after(
    engine: Gatehouse, clock: FakeClock
) -> None:
    workload(engine, clock)
    rows = entries(engine.db)
    target, after = rows[5], rows[6]
    forged = entry_hash(
        at=target.at,
        event=target.event,
        actor="mallory",
        run_id=target.run_id,
        call_id=target.call_id,
        tool=target.tool,
        approval_id=target.approval_id,
        idempotency_key=target.idempotency_key,
        detail=target.detail,
        prev_hash=target.prev_hash,
    )
    _tamper(
        engine.db,
        update(audit_table)
        .where(audit_table.c.id == target.id)
        .values(actor="mallory", hash=forged),
    )
    result = verify_database(engine.db)
    assert (result.broken_id, result.problem) == (after.id, "unlinked")


def test_a_deleted_entry_is_found_at_the_entry_after_it(
    engine: Gatehouse, clock: FakeClock
) -> None:
    workload(engine, clock)
    rows = entries(engine.db)
    gone = next(i for i, r in enumerate(rows) if r.event == "refused")
    _tamper(engine.db, delete(audit_table).where(audit_table.c.id == rows[gone].id))

    result = verify_database(engine.db)

    assert not result.ok
    assert (result.broken_id, result.problem) == (rows[gone + 1].id, "unlinked")
    assert "deleted or inserted" in (result.reason or "")


def test_deleting_the_first_entry_is_found(engine: Gatehouse, clock: FakeClock) -> None:
    workload(engine, clock)
    rows = entries(engine.db)
    _tamper(engine.db, delete(audit_table).where(audit_table.c.id == rows[0].id))
    result = verify_database(engine.db)
    assert (result.broken_id, result.problem) == (rows[1].id, "unlinked")
    assert "the start of the log" in (result.reason or "")


@pytest.mark.parametrize("forged_hash", ["f" * 64, None])
def test_a_forged_entry_is_named(
    engine: Gatehouse, clock: FakeClock, forged_hash: str | None
) -> None:
    workload(engine, clock)
    head = entries(engine.db)[-1]
    values: dict[str, Any] = {
        "at": clock.now(),
        "event": "approval.approved",
        "actor": "bob",
        "detail": {"reason": "backdated"},
        "prev_hash": head.hash,
        "hash": forged_hash if forged_hash is not None else "",
    }
    _tamper(engine.db, insert(audit_table).values(values))
    forged = entries(engine.db)[-1]

    result = verify_database(engine.db)

    assert (result.broken_id, result.problem) == (forged.id, "altered")


def test_a_forged_entry_in_the_middle_breaks_the_entry_after(
    engine: Gatehouse, clock: FakeClock
) -> None:
    """Ids leave no gap to slip into, so a forger must move the rest: the chain sees it."""
    workload(engine, clock)
    rows = entries(engine.db)
    middle = rows[len(rows) // 2]
    fields = {"at": middle.at, "event": "approval.approved", "actor": "bob"}
    fields |= {"run_id": None, "call_id": None, "tool": None, "approval_id": None}
    fields |= {"idempotency_key": None, "detail": None}
    with engine.db.transaction() as conn:
        top = conn.execute(select(func.max(audit_table.c.id))).scalar_one()
        shifted = [r for r in rows if r.id > middle.id]
        conn.execute(
            update(audit_table)
            .where(audit_table.c.id > middle.id)
            .values(id=audit_table.c.id + top)
        )
        forged_hash = entry_hash(**fields, prev_hash=middle.hash)
        conn.execute(
            insert(audit_table).values(
                id=middle.id + 1, prev_hash=middle.hash, hash=forged_hash, **fields
            )
        )
    result = verify_database(engine.db)
    assert (result.broken_id, result.problem) == (shifted[0].id + top, "unlinked")


def test_hash_ignores_how_the_database_gives_numbers_back() -> None:
    """jsonb prints 1e16 as an integer and SQLite reads a bare 1.0 as 1: same hash."""
    common: dict[str, Any] = {"at": FakeClock().now(), "event": "e", "actor": None}
    common |= {"run_id": None, "call_id": None, "tool": None, "approval_id": None}
    common |= {"idempotency_key": None, "prev_hash": GENESIS}
    assert entry_hash(**common, detail={"n": 1e16, "x": [1.0, 0.5]}) == entry_hash(
        **common, detail={"x": [1, 0.5], "n": 10**16}
    )
    assert entry_hash(**common, detail={"n": 2}) != entry_hash(**common, detail={"n": 3})


def _migrate(db: Database, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)


def test_the_migration_chains_entries_written_before_it(any_db_url: str) -> None:
    db = Database(any_db_url)
    try:
        _migrate(db, "0005", down=True)
        clock = FakeClock()
        legacy = [
            {"at": clock.now() + timedelta(seconds=i), "event": "tool.started", "tool": "t"}
            | {"actor": f"user{i}", "detail": {"args": {"amount": i, "rate": i / 3}}}
            for i in range(7)
        ]
        old = table(
            "audit_log",
            column("id", Integer()),
            column("at", UTCDateTime()),
            column("event", String()),
            column("tool", String()),
            column("actor", String()),
            column("detail", JSONValue),
        )
        with db.transaction() as conn:
            conn.execute(insert(old), legacy)
        _migrate(db, "0006")
        _migrate(db, "head")  # 0014 marks them plain ("v1"), as the entries after them
        with db.transaction() as conn:
            append_audit(conn, event="after.upgrade", at=clock.now(), actor="carol")

        result = verify_database(db)

        assert result.ok, result.reason
        assert result.checked == 8
        rows = entries(db)
        assert rows[0].prev_hash == GENESIS and rows[-1].prev_hash == rows[-2].hash
        assert {row.hash_scheme for row in rows} == {"v1"}
    finally:
        db.dispose()


# -- concurrency ---------------------------------------------------------------------------------


def test_concurrent_appenders_never_fork_the_chain(any_db_url: str) -> None:
    """Eight sessions append at once (each entry its own transaction, some two per
    transaction): every entry links to the one before it."""
    clock = FakeClock()
    databases = [Database(any_db_url) for _ in range(8)]
    start = threading.Barrier(len(databases))
    errors: list[BaseException] = []

    def append_many(index: int, db: Database) -> None:
        try:
            start.wait()
            for n in range(40):
                with db.transaction() as conn:
                    append_audit(conn, event="load", at=clock.now(), actor=f"w{index}")
                    if n % 5 == 0:
                        append_audit(conn, event="load.twice", at=clock.now(), actor=f"w{index}")
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=append_many, args=(i, db)) for i, db in enumerate(databases)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        rows = entries(databases[0])
        assert len(rows) == 8 * (40 + 8)
        assert len({row.prev_hash for row in rows}) == len(rows)  # no two share a parent
        result = verify_database(databases[0])
        assert result.ok, result.reason
    finally:
        for db in databases:
            db.dispose()


@pytest.mark.postgres
def test_concurrent_engine_runs_on_postgres_keep_one_chain(postgres_url: str) -> None:
    """Whole runs (tool starts under the rate-limit lock, decisions, finishes on the driver's
    fast path) from four engines at once."""
    clock = FakeClock()
    errors: list[BaseException] = []
    with ep.engines(postgres_url, clock) as make:
        engines = [make(f"w{i}") for i in range(4)]
        start = threading.Barrier(len(engines))

        def work(gatehouse: Gatehouse) -> None:
            try:
                start.wait()
                for _ in range(6):
                    run = gatehouse.trigger("t_pay_only", {"amount": 3}, user="carol")
                    gatehouse.approve(run.waiting_for[0], user="dave")
                    gatehouse.resume(run.id)
                    gatehouse.trigger("t_credit_and_stamp", {"amount": 2}, user="carol")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(g,)) for g in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        result = verify_database(engines[0].db)
        assert result.ok, result.reason
        assert result.checked == len(entries(engines[0].db)) >= 4 * 6 * 5


# -- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", json.dumps(GROUPS))
    for name in ("GATEHOUSE_USER", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_OPERATORS"):
        monkeypatch.delenv(name, raising=False)
    yield sqlite_url


def gh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_audit_verify_prints_the_head_and_exits_zero(cli_db: str, clock: FakeClock) -> None:
    gatehouse = Gatehouse(cli_db, clock=clock, directory=StaticDirectory(GROUPS))
    workload(gatehouse, clock)
    head = entries(gatehouse.db)[-1]
    count = len(entries(gatehouse.db))
    gatehouse.db.dispose()

    result = gh("audit", "verify")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == (
        f"audit log intact: {count} entries verified; head {count}:{head.hash}"
    )
    report = json.loads(gh("audit", "verify", "--json").stdout)
    assert report["ok"] is True and report["checked"] == count


def test_audit_verify_names_the_first_broken_entry_and_exits_one(
    cli_db: str, clock: FakeClock
) -> None:
    gatehouse = Gatehouse(cli_db, clock=clock, directory=StaticDirectory(GROUPS))
    workload(gatehouse, clock)
    rows = entries(gatehouse.db)
    _tamper(gatehouse.db, delete(audit_table).where(audit_table.c.id == rows[3].id))
    gatehouse.db.dispose()

    result = gh("audit", "verify")

    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: audit log broken at entry {rows[4].id} (unlinked): ")
    assert "3 entries before it verified" in line
    as_json = gh("audit", "verify", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["broken_id"] == rows[4].id


def test_audit_list_shows_the_latest_entries_of_a_run(cli_db: str, clock: FakeClock) -> None:
    gatehouse = Gatehouse(cli_db, clock=clock, directory=StaticDirectory(GROUPS))
    run = gatehouse.trigger("refund_request", SMALL, user="carol")
    gatehouse.trigger("refund_request", SMALL, user="dave")
    gatehouse.db.dispose()

    listed = json.loads(gh("audit", "list", "--run", run.id, "--json").stdout)
    assert [e["event"] for e in listed] == [
        "tool.started",
        "tool.succeeded",
        "tool.started",
        "tool.succeeded",
    ]
    assert {e["run_id"] for e in listed} == {run.id}
    text = gh("audit", "list", "--limit", "2").stdout.splitlines()
    assert len(text) == 2 and "tool.succeeded" in text[-1]
