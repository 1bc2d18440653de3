"""The audit trail as a stream for a SIEM: one dict per entry with stable field names and the
chain's hashes, read in keyset pages of short transactions (never the whole log in memory).

An export is a contiguous piece of the chain: from the first entry at or after `since` to the
head, in id order, so the receiver can check every link (`prev_hash` of an entry is the `hash`
of the one before) and recompute each plain hash with the v1 format (storage/audit_hash.py).
`position` is the entry's place in the chain since its start (pruned entries counted), the
COUNT of a `COUNT:HASH` head.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from storage.audit_checkpoint import latest_checkpoint
from storage.audit_verify import PAGE, audit_table
from storage.db import Database

FIELDS = (
    "id",
    "position",
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


def export_entries(db: Database, *, since: datetime, page: int = PAGE) -> Iterator[dict[str, Any]]:
    """Every entry from the first one at or after `since` to the head, as `FIELDS` dicts."""
    t = audit_table
    with db.transaction() as conn:
        first = conn.execute(select(func.min(t.c.id)).where(t.c.at >= since)).scalar()
        if first is None:
            return
        checkpoint = latest_checkpoint(conn)
        after = -1 if checkpoint is None else checkpoint.through_id
        base = 0 if checkpoint is None else checkpoint.position
        before = conn.execute(
            select(func.count()).where(t.c.id > after, t.c.id < first)
        ).scalar_one()
    position = base + int(before)
    columns = [t.c[name] for name in FIELDS if name != "position"]
    last = int(first) - 1
    while True:
        with db.transaction() as conn:
            rows = list(
                conn.execute(select(*columns).where(t.c.id > last).order_by(t.c.id).limit(page))
            )
        for row in rows:
            position += 1
            yield _entry(row, position)
        if len(rows) < page:
            return
        last = rows[-1].id


def _entry(row: Any, position: int) -> dict[str, Any]:
    at: datetime = row.at
    return {
        "id": row.id,
        "position": position,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "event": row.event,
        "actor": row.actor,
        "run_id": row.run_id,
        "call_id": row.call_id,
        "tool": row.tool,
        "approval_id": row.approval_id,
        "idempotency_key": row.idempotency_key,
        "detail": row.detail,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
        "hash_scheme": row.hash_scheme,
    }
