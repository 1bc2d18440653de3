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
the database can still delete the last entries, or rewrite every hash after the entry they
changed. Two things close that:

- The head (`COUNT:HASH`: how many entries the chain had and the hash of the last) recorded
  outside the database — `gatehouse audit head`, and the daily post to the alerts channel.
  `verify(expect=…)` then checks that the entry at that position still has that hash: the chain
  may have grown since, but not shrunk below it or been rewritten up to it.
- A key (GATEHOUSE_AUDIT_KEY, `use_audit_key`): entries are then HMAC-SHA256'd with it (scheme
  "k1") instead of plain SHA-256 (scheme "v1"), so database access alone cannot recompute them.
  Each entry records its scheme (`hash_scheme`, migration 0014; it is inside the hashed fields),
  so an existing chain moves to keyed hashing at the first entry written with the key, and the
  entries before it stay plain. A plain entry after a keyed one is a rewrite ("downgraded"), and
  with the key set a chain with no keyed entry at all is one too ("unkeyed": the keyed tail was
  deleted or recomputed plain — or nothing was written since the key was set).

The hash format and the keys are storage/audit_hash.py, the verifiers storage/audit_verify.py;
both are importable from here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, select

from storage.audit_hash import (
    GENESIS,
    KEYED,
    PLAIN,
    SCHEME_NAMES,
    audit_key,
    engine_key,
    entry_hash,
    use_audit_key,
)
from storage.audit_verify import (
    BadExpectedHead,
    ExpectedHead,
    VerifyResult,
    verify_chain,
    verify_database,
)
from storage.fastsql import fast_insert, fast_scalar
from storage.models import AuditEntry
from storage.rows import AuditEntryRow

__all__ = [
    "GENESIS",
    "KEYED",
    "PLAIN",
    "SCHEME_NAMES",
    "BadExpectedHead",
    "ExpectedHead",
    "VerifyResult",
    "append_audit",
    "audit_key",
    "audit_table",
    "chain_head",
    "entry_hash",
    "list_entries",
    "use_audit_key",
    "verify_chain",
    "verify_database",
]

audit_table: Table = AuditEntry.__table__  # type: ignore[assignment]

_HEAD_SQL = {
    "sqlite": "SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1",
    "postgresql": "SELECT gatehouse_audit_head()",
}


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
    head read; the hash is computed here), keyed when `use_audit_key` gave its engine a key."""
    key = engine_key(conn.engine)
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
    digest = entry_hash(**fields, prev_hash=prev_hash, key=key)
    scheme = PLAIN if key is None else KEYED
    fast_insert(
        conn, audit_table, {**fields, "prev_hash": prev_hash, "hash": digest, "hash_scheme": scheme}
    )


def list_entries(
    conn: Connection, *, run_id: str | None = None, limit: int = 50
) -> list[AuditEntryRow]:
    """The latest `limit` entries (of one run), oldest first."""
    query = select(audit_table).order_by(audit_table.c.id.desc()).limit(limit)
    if run_id is not None:
        query = query.where(audit_table.c.run_id == run_id)
    return [AuditEntryRow(*row) for row in reversed(conn.execute(query).all())]
