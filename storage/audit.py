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
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Table, select

from storage.db import Database
from storage.fastsql import fast_insert, fast_scalar
from storage.models import AuditEntry
from storage.rows import AuditEntryRow

audit_table: Table = AuditEntry.__table__  # type: ignore[assignment]

GENESIS = "0" * 64
"""`prev_hash` of the first entry: the chain starts here (migration 0006 chained older rows)."""

PLAIN = "v1"
"""`hash_scheme` of an entry hashed with plain SHA-256 (every entry before a key was set)."""
KEYED = "k1"
"""`hash_scheme` of an entry HMAC-SHA256'd with GATEHOUSE_AUDIT_KEY."""
SCHEME_NAMES = {PLAIN: "sha256", KEYED: "hmac-sha256"}

# The key of each engine's chain. A registry rather than a parameter: the engine appends from
# a dozen places that hold only a connection, and the key belongs to the database they write.
_KEYS: WeakKeyDictionary[Engine, bytes] = WeakKeyDictionary()


def use_audit_key(db: Database, key: str | None) -> None:
    """Entries appended through `db` from now on are keyed with `key` (None: plain), and its
    verifiers check keyed entries with it."""
    if key:
        _KEYS[db.engine] = key.encode("utf-8")
    else:
        _KEYS.pop(db.engine, None)


def audit_key(db: Database) -> bytes | None:
    return _KEYS.get(db.engine)


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
    key: bytes | None = None,
) -> str:
    """Format v1: SHA-256 (hex) of the compact, key-sorted, ASCII JSON array
    `["v1", at (UTC ISO 8601, microseconds), event, actor, run_id, call_id, tool, approval_id,
    idempotency_key, detail, prev_hash]`. The id is left out: the database assigns it after.
    With `key`, format k1: the same array with "k1" first, HMAC-SHA256'd with the key."""
    fields = [
        PLAIN if key is None else KEYED,
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
    message = _ENCODER.encode(fields).encode("ascii")
    if key is None:
        return hashlib.sha256(message).hexdigest()
    keyed = _keyed(key).copy()
    keyed.update(message)
    return keyed.hexdigest()


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    """The HMAC with its key pads already hashed: a copy of it costs a third less than a new one
    on every append."""
    return hmac.new(key, digestmod=hashlib.sha256)


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
    key = _KEYS.get(conn.engine)
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


# -- verification ---------------------------------------------------------------------------


class BadExpectedHead(ValueError):
    """An expected head that is not `COUNT:HASH` (or a bare HASH)."""


_HEAD_FORMAT = re.compile(r"(?:(\d+):)?([0-9a-f]{64})")


@dataclass(frozen=True)
class ExpectedHead:
    """A head recorded earlier: the chain had `count` entries and the last one's hash was
    `hash`. The chain may have grown since; the entry at position `count` (1-based, id order)
    must still have that hash. Without a count (a bare HASH), the hash must be at any position:
    weaker, since a chain cut right after it still passes."""

    hash: str
    count: int | None = None

    @classmethod
    def parse(cls, text: str) -> ExpectedHead:
        found = _HEAD_FORMAT.fullmatch(text.strip().lower())
        if found is None:
            raise BadExpectedHead(
                f"{text!r} is not an audit head: use COUNT:HASH as `gatehouse audit head` prints "
                "it (e.g. 1042:3f2a…, the 64 hex digits in full)"
            )
        count = None if found.group(1) is None else int(found.group(1))
        if count == 0 and found.group(2) != GENESIS:
            raise BadExpectedHead(f"{text!r}: an empty chain's head is 0:{GENESIS}")
        return cls(found.group(2), count)

    def __str__(self) -> str:
        return self.hash if self.count is None else f"{self.count}:{self.hash}"


@dataclass(frozen=True)
class VerifyResult:
    """`ok`, how many entries were checked, the hash the chain ends with (up to the break), and
    for a broken chain the first entry that fails (`broken_id`), what failed (`problem`:
    "altered" = its fields no longer match its hash; "unlinked" = its `prev_hash` is not the
    previous entry's hash, so an entry was deleted or inserted; "unhashed"; "downgraded" = a
    plain entry after keyed ones; "unkeyed" = a key is set but no entry is keyed; "needs_key" =
    keyed entries and no key to check them; "truncated" / "rewritten" / "too_few" = the
    expected head or count is not in the chain) and `reason`. The head entry's id, time and
    event, and how many entries are keyed, come with it (`head` is `COUNT:HASH`)."""

    ok: bool
    checked: int
    head_hash: str
    broken_id: int | None = None
    problem: str | None = None
    reason: str | None = None
    head_id: int | None = None
    head_at: datetime | None = None
    head_event: str | None = None
    keyed: int = 0

    @property
    def head(self) -> str:
        return f"{self.checked}:{self.head_hash}"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head_hash": self.head_hash,
            "head": self.head if self.ok else None,
            "head_id": self.head_id,
            "head_at": None if self.head_at is None else self.head_at.isoformat(),
            "keyed_entries": self.keyed,
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
    "hash_scheme",
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


def verify_chain(conn: Connection, *, expect: ExpectedHead | None = None) -> VerifyResult:
    """Walk the log in id order on one connection; stop at the first entry whose hash or link is
    wrong. Keyed entries are checked with the engine's key (`use_audit_key`)."""
    walk = _Walk(_KEYS.get(conn.engine), expect)
    return walk.run(_entries(lambda after: _page(conn, after, PAGE)))


def verify_database(db: Database, *, expect: ExpectedHead | None = None) -> VerifyResult:
    """`verify_chain` with each page read in its own short transaction, so a long log does not
    hold SQLite's write lock (every transaction there is `BEGIN IMMEDIATE`) for the whole walk.
    Entries appended meanwhile are checked too: they only extend the chain."""

    def read_page(after: int) -> list[Any]:
        with db.transaction() as conn:
            return _page(conn, after, PAGE)

    return _Walk(_KEYS.get(db.engine), expect).run(_entries(read_page))


class _Walk:
    """One verification: the entries in order, the key to check keyed ones, and the head the
    caller recorded earlier (checked at its position on the way)."""

    def __init__(self, key: bytes | None, expect: ExpectedHead | None) -> None:
        self.key = key
        self.expect = expect
        self.expected_seen_at: int | None = None  # position where expect.hash was found
        self.unchecked_from: Any = None  # the first keyed entry, when there is no key
        self.hash_at_count: str | None = None  # the hash at position expect.count

    def run(self, entries: Iterator[Any]) -> VerifyResult:
        expected_prev = GENESIS
        checked = keyed = 0
        last: Any = None
        for row in entries:
            checked += 1
            broken = self._check(row, expected_prev, last)
            if broken is not None:
                return VerifyResult(False, checked, expected_prev, row.id, *broken, keyed=keyed)
            keyed += row.hash_scheme == KEYED
            expected_prev = row.hash
            last = row
            if self.expect is not None:
                if row.hash == self.expect.hash and self.expected_seen_at is None:
                    self.expected_seen_at = checked
                if checked == self.expect.count:
                    self.hash_at_count = row.hash
        end = self._end(checked, keyed, last)
        broken_id, problem, reason = end if end is not None else (None, None, None)
        return VerifyResult(
            end is None,
            checked,
            expected_prev,
            broken_id,
            problem,
            reason,
            head_id=None if last is None else last.id,
            head_at=None if last is None else last.at,
            head_event=None if last is None else last.event,
            keyed=keyed,
        )

    def _check(self, row: Any, expected_prev: str, last: Any) -> tuple[str, str] | None:
        label = f"entry {row.id} ({row.event})"
        if row.hash is None or row.prev_hash is None:
            return "unhashed", f"{label} has no hash: it was written outside the chain"
        scheme = row.hash_scheme
        if scheme not in SCHEME_NAMES:
            return "altered", f"{label} names an unknown hash scheme {scheme!r}"
        if scheme == PLAIN and last is not None and last.hash_scheme == KEYED:
            return "downgraded", (
                f"{label} is plain-hashed after keyed entries: the chain was recomputed from "
                "here without GATEHOUSE_AUDIT_KEY (by someone with database access alone)"
            )
        if scheme == KEYED and self.key is None:
            if self.unchecked_from is None:
                self.unchecked_from = row
        elif self._digest(row) != row.hash:
            keyed = " keyed" if scheme == KEYED else ""
            wrong_key = " (or GATEHOUSE_AUDIT_KEY is not the key it was written with)"
            return "altered", (
                f"{label} does not match its{keyed} hash: it was changed after it was written"
                + (wrong_key if scheme == KEYED else "")
            )
        if row.prev_hash != expected_prev:
            before = "the start of the log" if expected_prev == GENESIS else "the entry before it"
            return "unlinked", (
                f"{label} does not follow {before}: an entry between them was deleted or "
                "inserted, or this one was"
            )
        return None

    def _digest(self, row: Any) -> str:
        return entry_hash(
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
            key=self.key if row.hash_scheme == KEYED else None,
        )

    def _end(self, checked: int, keyed: int, last: Any) -> tuple[int | None, str, str] | None:
        """What the whole walk shows once every entry passed on its own."""
        if self.unchecked_from is not None:
            first = self.unchecked_from
            return (
                first.id,
                "needs_key",
                (
                    f"entries from {first.id} on are keyed (HMAC-SHA256): set GATEHOUSE_AUDIT_KEY "
                    f"to verify them; the {checked - keyed} plain entries before them and every "
                    "link were checked"
                ),
            )
        if self.key is not None and checked and not keyed:
            return (
                last.id,
                "unkeyed",
                (
                    f"GATEHOUSE_AUDIT_KEY is set but none of the {checked} entries is keyed: either "
                    "nothing was written since the key was set (verify again after the next run or "
                    "decision), or the keyed entries were deleted or recomputed without the key "
                    "(compare with the head last posted to the alerts channel)"
                ),
            )
        expect = self.expect
        if expect is None:
            return None
        if expect.count is None:
            if self.expected_seen_at is None and expect.hash != GENESIS:
                return (
                    None,
                    "truncated",
                    (
                        f"expected head {expect.hash} is not in the chain ({checked} entries): "
                        "entries were deleted from its end or rewritten; restore the log from a "
                        "backup taken before then"
                    ),
                )
            return None
        if checked < expect.count:
            return (
                None,
                "truncated",
                (
                    f"expected entry {expect.count} with hash {expect.hash}, but the chain has "
                    f"only {checked} entries: the last {expect.count - checked} or more were "
                    "deleted; restore the log from a backup taken before then"
                ),
            )
        found = GENESIS if expect.count == 0 else self.hash_at_count
        if found != expect.hash:
            elsewhere = (
                f" (it is entry {self.expected_seen_at} now: entries before it were deleted)"
                if self.expected_seen_at is not None
                else ""
            )
            return (
                None,
                "rewritten",
                (
                    f"expected entry {expect.count} to have hash {expect.hash}, found {found}"
                    f"{elsewhere}: the chain was rewritten up to there and every later hash "
                    "recomputed; restore the log from a backup, and keep the key away from the "
                    "database (GATEHOUSE_AUDIT_KEY)"
                ),
            )
        return None


def list_entries(
    conn: Connection, *, run_id: str | None = None, limit: int = 50
) -> list[AuditEntryRow]:
    """The latest `limit` entries (of one run), oldest first."""
    query = select(audit_table).order_by(audit_table.c.id.desc()).limit(limit)
    if run_id is not None:
        query = query.where(audit_table.c.run_id == run_id)
    return [AuditEntryRow(*row) for row in reversed(conn.execute(query).all())]
