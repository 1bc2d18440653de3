"""The append-only audit log: who did what to which tool call, approval or run — hash-chained.

Each entry carries `prev_hash` (the hash of the entry before it, `GENESIS` for the first) and
`hash`, the SHA-256 of a canonical serialization of its own fields and `prev_hash` (format v1,
below; it is a contract: entries already written are verified with it forever). Changing an
entry breaks its hash; deleting, inserting or reordering entries breaks the link of the entry
after. `verify_chain` walks the log in id order and names the first entry that fails.

Appends are serialized so the chain never forks: on SQLite every write transaction is already
`BEGIN IMMEDIATE` (storage/db.py), so reading the head and inserting after it cannot interleave
with another writer; on PostgreSQL `gatehouse_audit_head()` (migration 0006) takes a
transaction-scoped advisory lock and then reads the head with a fresh snapshot, in one round
trip. The lock is held until the appending transaction ends, so the next appender reads this
entry as its head. Callers append after the rows they lock (calls, approvals, tasks) and before
the run's row, so lock order stays the same everywhere.

A hash chain without a secret proves the log was not edited *in part*: someone who can write
the database can still rewrite every hash after the entry they changed. Recording the head hash
elsewhere now and then (`gatehouse audit verify` prints it) closes that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, select

from storage.db import Database
from storage.fastsql import fast_insert, fast_scalar
from storage.models import AuditEntry
from storage.rows import AuditEntryRow

audit_table: Table = AuditEntry.__table__  # type: ignore[assignment]

GENESIS = "0" * 64
"""`prev_hash` of the first entry: the chain starts here (migration 0006 chained older rows)."""

_HEAD_SQL = {
    "sqlite": "SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1",
    "postgresql": "SELECT gatehouse_audit_head()",
}


def _canonical_json(value: Any) -> Any:
    """Integral floats as ints: PostgreSQL's jsonb prints 1e16 as 10000000000000000 and SQLite
    may read a bare 1.0 back as 1, so the hash must not depend on which one comes back."""
    kind = type(value)
    if kind is str or kind is int or value is None or kind is bool:
        return value
    if kind is float:
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {str(k): _canonical_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical_json(v) for v in value]
    return value


# Built once: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def entry_hash(
    *,
    at: datetime,
    event: str,
    actor: str | None,
    run_id: str | None,
    call_id: str | None,
    tool: str | None,
    approval_id: str | None,
    idempotency_key: str | None,
    detail: Any,
    prev_hash: str,
) -> str:
    """Format v1: SHA-256 (hex) of the compact, key-sorted, ASCII JSON array
    `["v1", at (UTC ISO 8601, microseconds), event, actor, run_id, call_id, tool, approval_id,
    idempotency_key, detail, prev_hash]`. The id is left out: the database assigns it after."""
    fields = [
        "v1",
        (at if at.tzinfo is UTC else at.astimezone(UTC)).isoformat(timespec="microseconds"),
        _text(event),
        _text(actor),
        _text(run_id),
        _text(call_id),
        _text(tool),
        _text(approval_id),
        _text(idempotency_key),
        _canonical_json(detail),
        prev_hash,
    ]
    return hashlib.sha256(_ENCODER.encode(fields).encode("ascii")).hexdigest()


def chain_head(conn: Connection) -> str:
    """The hash of the last entry (GENESIS when empty), with the chain locked for this
    transaction on PostgreSQL. Runs on the driver: it works inside `driver_transaction`."""
    head = fast_scalar(conn, _HEAD_SQL[conn.dialect.name])
    return GENESIS if head is None else str(head)


def append_audit(
    conn: Connection,
    *,
    event: str,
    at: datetime,
    actor: str | None = None,
    run_id: str | None = None,
    call_id: str | None = None,
    tool: str | None = None,
    approval_id: str | None = None,
    idempotency_key: str | None = None,
    detail: Any = None,
) -> None:
    """Append one entry to the chain, inside the caller's transaction (one extra statement: the
    head read; the hash is computed here)."""
    prev_hash = chain_head(conn)
    fields = {
        "event": event,
        "at": at,
        "actor": actor,
        "run_id": run_id,
        "call_id": call_id,
        "tool": tool,
        "approval_id": approval_id,
        "idempotency_key": idempotency_key,
        "detail": detail,
    }
    row = {**fields, "prev_hash": prev_hash, "hash": entry_hash(**fields, prev_hash=prev_hash)}
    fast_insert(conn, audit_table, row)


# -- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """`ok`, how many entries were checked, the hash the chain ends with (up to the break), and
    for a broken chain the first entry that fails (`broken_id`), what failed (`problem`:
    "altered" = its fields no longer match its hash; "unlinked" = its `prev_hash` is not the
    previous entry's hash, so an entry was deleted or inserted; "unhashed") and `reason`."""

    ok: bool
    checked: int
    head_hash: str
    broken_id: int | None = None
    problem: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head_hash": self.head_hash,
            "broken_id": self.broken_id,
            "problem": self.problem,
            "reason": self.reason,
        }


PAGE = 5000  # entries read at a time by the verifiers

_CHAIN_COLUMNS = (
    "id",
    "at",
    "event",
    "actor",
    "run_id",
    "call_id",
    "tool",
    "approval_id",
    "idempotency_key",
    "detail",
    "prev_hash",
    "hash",
)


def _page(conn: Connection, after: int, size: int) -> list[Any]:
    columns = [audit_table.c[name] for name in _CHAIN_COLUMNS]
    query = select(*columns).where(audit_table.c.id > after).order_by(audit_table.c.id)
    return list(conn.execute(query.limit(size)).all())


def _entries(read_page: Callable[[int], list[Any]]) -> Iterator[Any]:
    """Every entry in id order, in keyset pages."""
    after = -1
    while True:
        rows = read_page(after)
        yield from rows
        if len(rows) < PAGE:
            return
        after = rows[-1].id


def verify_chain(conn: Connection) -> VerifyResult:
    """Walk the log in id order on one connection; stop at the first entry whose hash or link is
    wrong."""
    return _verify(_entries(lambda after: _page(conn, after, PAGE)))


def verify_database(db: Database) -> VerifyResult:
    """`verify_chain` with each page read in its own short transaction, so a long log does not
    hold SQLite's write lock (every transaction there is `BEGIN IMMEDIATE`) for the whole walk.
    Entries appended meanwhile are checked too: they only extend the chain."""

    def read_page(after: int) -> list[Any]:
        with db.transaction() as conn:
            return _page(conn, after, PAGE)

    return _verify(_entries(read_page))


def _verify(entries: Iterator[Any]) -> VerifyResult:
    expected_prev = GENESIS
    checked = 0
    for row in entries:
        checked += 1
        if row.hash is None or row.prev_hash is None:
            return VerifyResult(
                False,
                checked,
                expected_prev,
                row.id,
                "unhashed",
                f"entry {row.id} ({row.event}) has no hash: it was written outside the chain",
            )
        computed = entry_hash(
            at=row.at,
            event=row.event,
            actor=row.actor,
            run_id=row.run_id,
            call_id=row.call_id,
            tool=row.tool,
            approval_id=row.approval_id,
            idempotency_key=row.idempotency_key,
            detail=row.detail,
            prev_hash=row.prev_hash,
        )
        if computed != row.hash:
            return VerifyResult(
                False,
                checked,
                expected_prev,
                row.id,
                "altered",
                f"entry {row.id} ({row.event}) does not match its hash: "
                "it was changed after it was written",
            )
        if row.prev_hash != expected_prev:
            before = "the start of the log" if expected_prev == GENESIS else "the entry before it"
            return VerifyResult(
                False,
                checked,
                expected_prev,
                row.id,
                "unlinked",
                f"entry {row.id} ({row.event}) does not follow {before}: an entry between them "
                "was deleted or inserted, or this one was",
            )
        expected_prev = row.hash
    return VerifyResult(True, checked, expected_prev)


def list_entries(
    conn: Connection, *, run_id: str | None = None, limit: int = 50
) -> list[AuditEntryRow]:
    """The latest `limit` entries (of one run), oldest first."""
    query = select(audit_table).order_by(audit_table.c.id.desc()).limit(limit)
    if run_id is not None:
        query = query.where(audit_table.c.run_id == run_id)
    return [AuditEntryRow(*row) for row in reversed(conn.execute(query).all())]
