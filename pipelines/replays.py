"""Replay protection for signed requests: each signature is accepted once within its window.

A signature (Slack's `v0=…`, a webhook's `v1=…`) is valid while its timestamp is within
`window` of now, so it has to be remembered until its timestamp plus `window`; after that the
timestamp check refuses it and the row can go. The rows live in the database, so every replica
sees the others' (PostgreSQL) and a restart forgets nothing.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from storage.replays import first_sighting, forget_expired

if TYPE_CHECKING:
    from pipelines.runtime import Runtime

SIGNATURE_WINDOW = timedelta(minutes=5)  # Slack's, and the webhooks' ±300 s
PRUNE_EVERY = timedelta(minutes=1)


class ReplayGuard:
    """`first_time(signature, signed_at)` for one scope ("slack", "webhook:NAME"); expired rows
    are deleted at most once per `PRUNE_EVERY` per guard, in the same transaction as a check."""

    def __init__(self, rt: Runtime, scope: str, *, window: timedelta = SIGNATURE_WINDOW) -> None:
        self.rt = rt
        self.scope = scope
        self.window = window
        self._pruned_at: datetime | None = None
        self._lock = threading.Lock()

    def first_time(self, signature: str, signed_at: datetime) -> bool:
        """True for a signature not seen in this scope within its window (now recorded);
        False for a replay, which the caller acknowledges and ignores."""
        now = self.rt.clock.now()
        expires_at = max(now, signed_at) + self.window
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
