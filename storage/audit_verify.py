"""Verifying the audit chain: every entry's hash recomputed and its link checked, in id order,
and a head recorded earlier (`COUNT:HASH`) found at its position — the chain may have grown since,
not shrunk below it or been rewritten up to it (storage/audit.py says why).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, select

from storage.audit_checkpoint import BadCheckpoint, Checkpoint, latest_checkpoint
from storage.audit_hash import GENESIS, KEYED, PLAIN, SCHEME_NAMES, engine_key, entry_hash
from storage.db import Database
from storage.models import AuditEntry

audit_table: Table = AuditEntry.__table__  # type: ignore[assignment]


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
    event, and how many entries are keyed, come with it (`head` is `COUNT:HASH`). After a
    prune (storage/audit_prune.py) the walk starts at the newest checkpoint: `pruned` entries
    came before it, and `count` (the head's COUNT) counts from the chain's true start."""

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
    pruned: int = 0

    @property
    def count(self) -> int:
        """Entries in the chain since its start: the pruned ones and the ones checked."""
        return self.pruned + self.checked

    @property
    def head(self) -> str:
        return f"{self.count}:{self.head_hash}"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head_hash": self.head_hash,
            "head": self.head if self.ok else None,
            "head_id": self.head_id,
            "head_at": None if self.head_at is None else self.head_at.isoformat(),
            "keyed_entries": self.keyed,
            "pruned_entries": self.pruned,
            "broken_id": self.broken_id,
            "problem": self.problem,
            "reason": self.reason,
        }


PAGE = 5000  # entries read at a time by the verifiers

# An entry's columns as the chain hashes and links them; the export and `audit list --json` name
# their fields after these too.
CHAIN_COLUMNS = (
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


def chain_page(conn: Connection, after: int, size: int) -> list[Any]:
    """Up to `size` entries after id `after`, in id order, with the `CHAIN_COLUMNS`."""
    columns = [audit_table.c[name] for name in CHAIN_COLUMNS]
    query = select(*columns).where(audit_table.c.id > after).order_by(audit_table.c.id)
    return list(conn.execute(query.limit(size)).all())


def chain_entries(
    read_page: Callable[[int], list[Any]], after: int = -1, page: int = PAGE
) -> Iterator[Any]:
    """Every entry after id `after` in id order, in keyset pages of `page` read by `read_page`."""
    while True:
        rows = read_page(after)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].id


def verify_chain(conn: Connection, *, expect: ExpectedHead | None = None) -> VerifyResult:
    """Walk the log in id order on one connection; stop at the first entry whose hash or link is
    wrong. Keyed entries are checked with the engine's key (`use_audit_key`)."""
    try:
        checkpoint = latest_checkpoint(conn)
    except BadCheckpoint as exc:
        return _bad_checkpoint(exc)
    walk = _Walk(engine_key(conn.engine), expect, checkpoint)
    return walk.run(chain_entries(lambda after: chain_page(conn, after, PAGE), walk.after))


def verify_database(db: Database, *, expect: ExpectedHead | None = None) -> VerifyResult:
    """`verify_chain` with each page read in its own short transaction, so a long log does not
    hold SQLite's write lock (every transaction there is `BEGIN IMMEDIATE`) for the whole walk.
    Entries appended meanwhile are checked too: they only extend the chain."""

    def read_page(after: int) -> list[Any]:
        with db.transaction() as conn:
            return chain_page(conn, after, PAGE)

    try:
        with db.transaction() as conn:
            checkpoint = latest_checkpoint(conn)
    except BadCheckpoint as exc:
        return _bad_checkpoint(exc)
    walk = _Walk(engine_key(db.engine), expect, checkpoint)
    return walk.run(chain_entries(read_page, walk.after))


def _bad_checkpoint(exc: BadCheckpoint) -> VerifyResult:
    return VerifyResult(False, 0, GENESIS, problem="altered", reason=str(exc))


class _Walk:
    """One verification: the entries in order, the key to check keyed ones, and the head the
    caller recorded earlier (checked at its position on the way)."""

    def __init__(
        self, key: bytes | None, expect: ExpectedHead | None, checkpoint: Checkpoint | None = None
    ) -> None:
        self.key = key
        self.expect = expect
        # After a prune the chain starts after the checkpoint's last pruned entry, linked to
        # its hash, at its position (0 entries before it, GENESIS, when never pruned).
        self.after = -1 if checkpoint is None else checkpoint.through_id
        self.start_hash = GENESIS if checkpoint is None else checkpoint.last_hash
        self.pruned = 0 if checkpoint is None else checkpoint.position
        self.expected_seen_at: int | None = None  # position where expect.hash was found
        self.unchecked_from: Any = None  # the first keyed entry, when there is no key
        self.hash_at_count: str | None = None  # the hash at position expect.count

    def run(self, entries: Iterator[Any]) -> VerifyResult:
        expected_prev = self.start_hash
        checked = keyed = 0
        last: Any = None
        if self.expect is not None and self.pruned:
            # A head recorded before the prune: its entry is gone, and the checkpoint (checked
            # on the walk: it is an entry of the chain) vouches for the position it ended at.
            if self.expect.hash == self.start_hash:
                self.expected_seen_at = self.pruned
            if self.expect.count is not None and self.expect.count <= self.pruned:
                self.hash_at_count = self.expect.hash
                self.expected_seen_at = self.expect.count
            if self.expect.count == self.pruned:
                self.hash_at_count = self.start_hash
        for row in entries:
            checked += 1
            position = self.pruned + checked
            broken = self._check(row, expected_prev, last)
            if broken is not None:
                return VerifyResult(
                    False, checked, expected_prev, row.id, *broken, keyed=keyed, pruned=self.pruned
                )
            keyed += row.hash_scheme == KEYED
            expected_prev = row.hash
            last = row
            if self.expect is not None:
                if row.hash == self.expect.hash and self.expected_seen_at is None:
                    self.expected_seen_at = position
                if position == self.expect.count:
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
            pruned=self.pruned,
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
            if last is not None:
                before = "the entry before it"
            elif self.pruned:
                before = f"the last pruned entry (the checkpoint: entry {self.pruned} of the chain)"
            else:
                before = "the start of the log"
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
        checked += self.pruned
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
            return (
                None,
                "rewritten",
                (
                    f"expected entry {expect.count} to have hash {expect.hash}, found {found}: "
                    "the chain was rewritten up to there and every later hash "
                    "recomputed; restore the log from a backup (GATEHOUSE_AUDIT_KEY, kept outside "
                    "the database, makes such a recomputation impossible)"
                ),
            )
        return None
