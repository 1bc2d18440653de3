"""Replay protection for signed requests: each signature is accepted once within its window.

A signature (Slack's `v0=…`, a webhook's `v1=…`) is valid while its timestamp is within
`window` of now, so it has to be remembered until its timestamp plus `window`; after that the
timestamp check refuses it and the row can go. The rows live in the database, so a restart
forgets nothing. Any other token meant to be taken once has its own scope and horizon: Slack's
`event_id`s ("slack-event", bot/slack/events.py) are kept for as long as Slack redelivers.

On PostgreSQL the check is the insert itself: replicas share the table, and a replay sent to
another replica is caught there too. SQLite has one writer at a time, and a check that waited
for the write lock would wait behind every worker's transaction on the path that acks Slack
(measured: p99 of 50 concurrent clicks from 0.25 s to 1.7 s). There the check is made in memory,
shared by every guard of the same database and scope in the process, and the row is written by a
background thread; the sightings still in their window are read back when the first guard of a
process starts. SQLite serves one host, and one `gatehouse serve` there takes Slack's requests;
replicas run on PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select

from storage.replays import (
    first_sighting,
    forget_expired,
    forget_sighting,
    record_sightings,
    seen_table,
    signature_digest,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from pipelines.runtime import Runtime
    from storage.db import Database

log = structlog.get_logger()

# A sighting for SQLite's background writer: scope, signature, expires_at.
Sighting = dict[str, Any]

SIGNATURE_WINDOW = timedelta(minutes=5)  # Slack's, and the webhooks' ±300 s
PRUNE_EVERY = timedelta(minutes=1)


class ReplayGuard:
    """`first_time(signature, signed_at)` for one scope ("slack", "webhook:NAME"); expired rows
    are deleted at most once per `PRUNE_EVERY` per guard, in the same transaction as a write."""

    def __init__(self, rt: Runtime, scope: str, *, window: timedelta = SIGNATURE_WINDOW) -> None:
        self.rt = rt
        self.scope = scope
        self.window = window
        self._pruned_at: datetime | None = None
        self._lock = threading.Lock()
        self._memory = _memory_for(self) if rt.db.is_sqlite else None

    def first_time(self, signature: str, signed_at: datetime) -> bool:
        """True for a signature not seen in this scope within its window (now recorded);
        False for a replay, which the caller acknowledges and ignores."""
        now = self.rt.clock.now()
        expires_at = max(now, signed_at) + self.window
        if self._memory is not None:
            if not self._memory.first_time(signature_digest(signature), now, expires_at):
                return False
            if self._prune_due(now):
                self._memory.write(self.rt.db, lambda conn: forget_expired(conn, now))
            self._memory.write(
                self.rt.db, {"scope": self.scope, "signature": signature, "expires_at": expires_at}
            )
            return True
        return self._record(signature, now, expires_at)

    def forget(self, signature: str) -> None:
        """Take `signature` as unseen again: what it came with was refused after it was
        recorded (a listener that failed), so the sender's retry must not count as a replay."""
        if self._memory is not None:
            self._memory.forget(signature_digest(signature))
            self._memory.write(
                self.rt.db,
                lambda conn: forget_sighting(conn, scope=self.scope, signature=signature),
            )
            return
        self._forget(signature)

    def flush(self) -> None:
        """Wait until every sighting handed to the background writer is in the database."""
        if self._memory is not None:
            self._memory.flush()

    def _forget(self, signature: str) -> None:
        with self.rt.db.transaction() as conn:
            forget_sighting(conn, scope=self.scope, signature=signature)

    def _record(self, signature: str, now: datetime, expires_at: datetime) -> bool:
        with self.rt.db.transaction() as conn:
            if self._prune_due(now):
                forget_expired(conn, now)
            return first_sighting(
                conn, scope=self.scope, signature=signature, now=now, expires_at=expires_at
            )

    def _prune_due(self, now: datetime) -> bool:
        with self._lock:
            if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
                return False
            self._pruned_at = now
            return True


class _Sightings:
    """One SQLite database's sightings in one scope, for the whole process: digest → when its
    window closes, and the one thread that writes them to the table in order."""

    def __init__(self, known: dict[str, datetime]) -> None:
        self._until = known
        self._prune_at = max(1024, 2 * len(known))
        self._lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatehouse-replays")
        self._queued: list[Callable[[Connection], object] | Sighting] = []
        self._draining = False

    def first_time(self, digest: str, now: datetime, expires_at: datetime) -> bool:
        with self._lock:
            until = self._until.get(digest)
            if until is not None and until > now:
                return False
            if len(self._until) > self._prune_at:  # forget the closed windows now and then
                self._until = {d: u for d, u in self._until.items() if u > now}
                # Not again until it has doubled: under load every sighting of the last five
                # minutes is still open, and a rebuild per request was quadratic (30,000 open
                # sightings at 100 a second cost each request a copy of the dict).
                self._prune_at = max(1024, 2 * len(self._until))
            self._until[digest] = expires_at
            return True

    def forget(self, digest: str) -> None:
        with self._lock:
            self._until.pop(digest, None)

    def write(self, db: Database, item: Callable[[Connection], object] | Sighting) -> None:
        """Queue a sighting (or another write, such as a forget) for the writer thread, which
        writes whatever is queued when it wakes in one transaction, consecutive sightings in one
        statement: under load one commit for many requests, not one each."""
        with self._lock:
            self._queued.append(item)
            if self._draining:
                return
            self._draining = True
        self._writer.submit(self._drain, db)

    def _drain(self, db: Database) -> None:
        with self._lock:
            batch, self._queued = self._queued, []
            self._draining = False
        if not batch:
            return
        try:
            with db.transaction() as conn:
                rows: list[Sighting] = []
                for item in batch:
                    if isinstance(item, dict):
                        rows.append(item)
                        continue
                    record_sightings(conn, rows)  # in order: a forget after its sighting
                    rows = []
                    item(conn)
                record_sightings(conn, rows)
        except Exception as exc:  # the sightings still hold in memory for this process
            log.warning("replays.write_failed", error=type(exc).__name__, writes=len(batch))

    def flush(self) -> None:
        self._writer.submit(lambda: None).result()


_SIGHTINGS: dict[tuple[str, str], _Sightings] = {}
_SIGHTINGS_LOCK = threading.Lock()


def _memory_for(guard: ReplayGuard) -> _Sightings:
    key = (str(guard.rt.db.url), guard.scope)
    with _SIGHTINGS_LOCK:
        sightings = _SIGHTINGS.get(key)
        if sightings is None:
            sightings = _Sightings(_still_open(guard))
            _SIGHTINGS[key] = sightings
        return sightings


def _still_open(guard: ReplayGuard) -> dict[str, datetime]:
    """The sightings an earlier process recorded whose windows are still open."""
    now = guard.rt.clock.now()
    with guard.rt.db.transaction() as conn:
        rows = conn.execute(
            select(seen_table.c.digest, seen_table.c.expires_at).where(
                seen_table.c.scope == guard.scope, seen_table.c.expires_at > now
            )
        ).all()
    return {digest: expires_at for digest, expires_at in rows}


def flush_process_sightings() -> None:
    """Wait until every SQLite sighting this process took is in its table (tests that compare
    every row before and after a request)."""
    with _SIGHTINGS_LOCK:
        every = list(_SIGHTINGS.values())
    for sightings in every:
        sightings.flush()


def forget_process_sightings() -> None:
    """As a restarted process: the in-memory sightings go, the table's are read again (tests)."""
    with _SIGHTINGS_LOCK:
        _SIGHTINGS.clear()
