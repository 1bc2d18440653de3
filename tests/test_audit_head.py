"""An audit trail that cannot be shortened or rewritten unnoticed: a head recorded earlier
(`gatehouse audit head`, COUNT:HASH) catches the last entries deleted and a chain recomputed
after an edit — which plain `verify` cannot see — while still passing once the log has grown;
and with GATEHOUSE_AUDIT_KEY, a chain recomputed without the key fails plain `verify` itself.
On SQLite and PostgreSQL, through the storage API and the `gatehouse audit` CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, update
from typer.testing import CliRunner, Result

from bot.cli.main import app
from pipelines import Gatehouse, StaticDirectory
from storage.audit import (
    GENESIS,
    KEYED,
    PLAIN,
    BadExpectedHead,
    ExpectedHead,
    audit_table,
    entry_hash,
    use_audit_key,
    verify_database,
)
from storage.db import Database
from tests import engine_pipelines as ep
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock
from tests.test_audit_chain import _migrate, entries, workload

KEY = "audit-key-kept-away-from-the-database-7f3a9c"
HASHED = ("at", "event", "actor", "run_id", "call_id", "tool", "approval_id")
HASHED += ("idempotency_key", "detail")


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


@pytest.fixture
def engine(any_db_url: str, clock: FakeClock) -> Iterator[Gatehouse]:
    gatehouse = Gatehouse(any_db_url, clock=clock, directory=StaticDirectory(GROUPS))
    yield gatehouse
    gatehouse.db.dispose()


def delete_last(db: Database, count: int) -> None:
    gone = [row.id for row in entries(db)[-count:]]
    with db.transaction() as conn:
        conn.execute(delete(audit_table).where(audit_table.c.id.in_(gone)))


def recompute_from(
    db: Database,
    index: int,
    change: dict[str, Any],
    *,
    key: bytes | None = None,
    scheme: str | None = None,
) -> None:
    """What someone with database access does: change entry `index`, then rehash it and every
    entry after it (plain SHA-256 unless they hold `key`), each linked to the one before."""
    rows = entries(db)
    prev = rows[index].prev_hash
    with db.transaction() as conn:
        for offset, row in enumerate(rows[index:]):
            fields = {name: getattr(row, name) for name in HASHED}
            if offset == 0:
                fields |= change
            digest = entry_hash(**fields, prev_hash=prev, key=key)
            values = (change if offset == 0 else {}) | {"prev_hash": prev, "hash": digest}
            if scheme is not None:
                values["hash_scheme"] = scheme
            conn.execute(update(audit_table).where(audit_table.c.id == row.id).values(values))
            prev = digest


# -- the expected head ----------------------------------------------------------------------


def test_deleting_the_last_entries_passes_plain_verify_but_not_the_recorded_head(
    engine: Gatehouse, clock: FakeClock
) -> None:
    workload(engine, clock)
    recorded = verify_database(engine.db)
    assert recorded.ok and recorded.head == f"{recorded.checked}:{entries(engine.db)[-1].hash}"

    delete_last(engine.db, 3)

    assert verify_database(engine.db).ok  # what the chain alone cannot see
    result = verify_database(engine.db, expect=ExpectedHead.parse(recorded.head))
    assert (result.ok, result.problem) == (False, "truncated")
    assert f"expected entry {recorded.checked} with hash {recorded.head_hash}" in str(result.reason)
    assert f"only {recorded.checked - 3} entries" in str(result.reason)
    bare = verify_database(engine.db, expect=ExpectedHead.parse(recorded.head_hash))
    assert (bare.ok, bare.problem) == (False, "truncated")


def test_an_edit_with_every_later_hash_recomputed_fails_against_the_recorded_head(
    engine: Gatehouse, clock: FakeClock
) -> None:
    workload(engine, clock)
    recorded = verify_database(engine.db)
    target = next(i for i, r in enumerate(entries(engine.db)) if r.event == "approval.approved")

    recompute_from(engine.db, target, {"actor": "mallory"})

    assert verify_database(engine.db).ok  # a consistent chain, ending elsewhere
    result = verify_database(engine.db, expect=ExpectedHead.parse(recorded.head))
    assert (result.ok, result.problem) == (False, "rewritten")
    assert f"expected entry {recorded.checked} to have hash {recorded.head_hash}, found " in str(
        result.reason
    )


def test_a_head_recorded_yesterday_still_verifies_after_more_entries(
    engine: Gatehouse, clock: FakeClock
) -> None:
    workload(engine, clock)
    yesterday = verify_database(engine.db)
    assert engine.trigger("t_pay_only", {"amount": 5}, user="carol").waiting_for

    today = verify_database(engine.db, expect=ExpectedHead.parse(yesterday.head))

    assert today.ok, today.reason
    assert today.checked > yesterday.checked and today.head_hash != yesterday.head_hash


def test_an_empty_chain_has_a_head_that_verifies(engine: Gatehouse) -> None:
    empty = verify_database(engine.db)
    assert empty.head == f"0:{GENESIS}"
    assert verify_database(engine.db, expect=ExpectedHead.parse(empty.head)).ok


@pytest.mark.parametrize(
    "text", ["abc", "12:" + "g" * 64, "-1:" + "a" * 64, "0:" + "a" * 64, "12:" + "a" * 63]
)
def test_an_expected_head_not_in_count_hash_form_is_refused(text: str) -> None:
    with pytest.raises(BadExpectedHead, match=r"COUNT:HASH|an empty chain"):
        ExpectedHead.parse(text)


# -- a key -----------------------------------------------------------------------------------


def test_with_the_key_a_chain_recomputed_without_it_fails_plain_verify(
    engine: Gatehouse, clock: FakeClock
) -> None:
    use_audit_key(engine.db, KEY)
    workload(engine, clock)
    rows = entries(engine.db)
    assert {row.hash_scheme for row in rows} == {KEYED}
    target = next(i for i, r in enumerate(rows) if r.event == "approval.approved")

    recompute_from(engine.db, target, {"actor": "mallory"})

    result = verify_database(engine.db)
    assert (result.ok, result.broken_id, result.problem) == (False, rows[target].id, "altered")
    assert "keyed hash" in str(result.reason)


def test_with_the_key_a_chain_recomputed_as_plain_is_a_downgrade(
    engine: Gatehouse, clock: FakeClock
) -> None:
    use_audit_key(engine.db, KEY)
    workload(engine, clock)
    rows = entries(engine.db)
    target = len(rows) // 2

    recompute_from(engine.db, target, {"actor": "mallory"}, scheme=PLAIN)

    result = verify_database(engine.db)
    assert (result.ok, result.broken_id, result.problem) == (False, rows[target].id, "downgraded")
    assert "without GATEHOUSE_AUDIT_KEY" in str(result.reason)


def test_with_the_key_a_whole_chain_recomputed_as_plain_is_found(
    engine: Gatehouse, clock: FakeClock
) -> None:
    use_audit_key(engine.db, KEY)
    workload(engine, clock)

    recompute_from(engine.db, 0, {"actor": "mallory"}, scheme=PLAIN)

    result = verify_database(engine.db)
    assert (result.ok, result.problem) == (False, "unkeyed")
    assert "none of the" in str(result.reason) and "is keyed" in str(result.reason)


def test_a_plain_chain_moves_to_keyed_at_the_first_entry_written_with_the_key(
    engine: Gatehouse, clock: FakeClock
) -> None:
    workload(engine, clock)
    plain = len(entries(engine.db))
    use_audit_key(engine.db, KEY)
    engine.trigger("t_credit_and_stamp", {"amount": 2}, user="carol")

    rows = entries(engine.db)
    assert [r.hash_scheme for r in rows] == [PLAIN] * plain + [KEYED] * (len(rows) - plain)
    result = verify_database(engine.db)
    assert result.ok, result.reason
    assert result.keyed == len(rows) - plain > 0
    # What was recorded before the switch still holds.
    use_audit_key(engine.db, None)
    keyless = verify_database(engine.db)
    assert (keyless.ok, keyless.problem, keyless.broken_id) == (False, "needs_key", rows[plain].id)
    assert "set GATEHOUSE_AUDIT_KEY" in str(keyless.reason)
    assert f"the {plain} plain entries before them" in str(keyless.reason)


def test_migration_0014_marks_the_existing_chain_plain_and_steps_back(
    engine: Gatehouse, clock: FakeClock
) -> None:
    workload(engine, clock)
    before = verify_database(engine.db)
    _migrate(engine.db, "0013", down=True)
    _migrate(engine.db, "0014")
    assert {row.hash_scheme for row in entries(engine.db)} == {PLAIN}
    assert verify_database(engine.db) == before
    _migrate(engine.db, "head")  # the later revisions, which the engine's writes need
    use_audit_key(engine.db, KEY)
    engine.trigger("t_credit_and_stamp", {"amount": 2}, user="carol")
    assert verify_database(engine.db, expect=ExpectedHead.parse(before.head)).ok


def test_a_keyed_chain_checked_with_another_key_is_named(
    engine: Gatehouse, clock: FakeClock
) -> None:
    use_audit_key(engine.db, KEY)
    workload(engine, clock)
    use_audit_key(engine.db, "some-other-key")
    result = verify_database(engine.db)
    assert (result.problem, result.broken_id) == ("altered", entries(engine.db)[0].id)
    assert "not the key it was written with" in str(result.reason)


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, any_db_url: str) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", any_db_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", json.dumps(GROUPS))
    for name in ("GATEHOUSE_USER", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_OPERATORS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GATEHOUSE_AUDIT_KEY", raising=False)
    yield any_db_url


def gh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def worked(url: str, clock: FakeClock, key: str | None = None) -> Database:
    gatehouse = Gatehouse(url, clock=clock, directory=StaticDirectory(GROUPS))
    use_audit_key(gatehouse.db, key)
    workload(gatehouse, clock)
    return gatehouse.db


def test_the_head_the_cli_prints_is_what_verify_accepts(cli_db: str, clock: FakeClock) -> None:
    db = worked(cli_db, clock)
    last = entries(db)[-1]
    count = len(entries(db))

    shown = gh("audit", "head")
    assert shown.exit_code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"head      {count}:{last.hash}"
    assert f"{count}: the entries walked in id order, from the database at" in lines[1]
    assert "recomputed (sha256; GATEHOUSE_AUDIT_KEY unset)" in lines[2]
    assert f"entry {last.id} ({last.event}) at {last.at:%Y-%m-%d %H:%M:%S} UTC" in lines[3]
    report = json.loads(gh("audit", "head", "--json").stdout)
    assert report["head"] == f"{count}:{last.hash}" and report["entry_id"] == last.id
    assert report["count"] == count and report["scheme"] == "sha256"

    accepted = gh("audit", "verify", "--expect-head", report["head"], "--min-entries", str(count))
    assert accepted.exit_code == 0, accepted.stderr
    assert accepted.stdout.strip() == (
        f"audit log intact: {count} entries verified; head {report['head']}; "
        f"it holds the expected head {report['head']}"
    )
    db.dispose()


def test_verify_against_the_printed_head_fails_after_the_last_rows_are_deleted(
    cli_db: str, clock: FakeClock
) -> None:
    db = worked(cli_db, clock)
    head = json.loads(gh("audit", "head", "--json").stdout)["head"]
    count = int(head.split(":")[0])
    delete_last(db, 2)
    db.dispose()

    assert gh("audit", "verify").exit_code == 0  # the old check passes
    result = gh("audit", "verify", "--expect-head", head)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: audit log truncated: expected entry {count} with hash ")
    assert f"only {count - 2} entries" in line and "restore the log from a backup" in line
    too_few = gh("audit", "verify", "--min-entries", str(count))
    assert too_few.exit_code == 1
    assert f"expected at least {count} entries, found {count - 2}" in too_few.stderr
    as_json = json.loads(gh("audit", "verify", "--expect-head", head, "--json").stdout)
    assert (as_json["ok"], as_json["problem"]) == (False, "truncated")


def test_verify_against_the_printed_head_fails_after_a_recomputed_edit(
    cli_db: str, clock: FakeClock
) -> None:
    db = worked(cli_db, clock)
    head = json.loads(gh("audit", "head", "--json").stdout)["head"]
    recompute_from(db, 4, {"actor": "mallory"})
    db.dispose()

    assert gh("audit", "verify").exit_code == 0
    result = gh("audit", "verify", "--expect-head", head)
    assert result.exit_code == 1
    assert "error: audit log rewritten: expected entry" in result.stderr
    assert "every later hash recomputed" in result.stderr


def test_a_malformed_expected_head_is_refused_with_the_form_to_use(cli_db: str) -> None:
    result = gh("audit", "verify", "--expect-head", "yesterday")
    assert result.exit_code == 2
    assert "COUNT:HASH" in result.stderr


def test_with_the_key_the_cli_keys_and_finds_a_keyless_recomputation(
    cli_db: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = worked(cli_db, clock, key=KEY)
    monkeypatch.setenv("GATEHOUSE_AUDIT_KEY", KEY)
    shown = json.loads(gh("audit", "head", "--json").stdout)
    assert shown["scheme"] == "hmac-sha256" and shown["keyed_entries"] == shown["count"]
    assert gh("audit", "verify", "--expect-head", shown["head"]).exit_code == 0

    recompute_from(db, 3, {"actor": "mallory"})  # without the key
    db.dispose()

    result = gh("audit", "verify")
    assert result.exit_code == 1
    assert "(altered)" in result.stderr and "keyed hash" in result.stderr
    assert gh("audit", "head").exit_code == 1  # no head to record from a broken chain
    monkeypatch.delenv("GATEHOUSE_AUDIT_KEY")
    keyless = gh("audit", "verify")
    assert keyless.exit_code == 1
    assert "(needs_key)" in keyless.stderr and "set GATEHOUSE_AUDIT_KEY" in keyless.stderr
