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
from storage.audit_verify import CHAIN_COLUMNS, PAGE, audit_table, chain_entries, chain_page
from storage.db import Database

FIELDS = ("id", "position", *CHAIN_COLUMNS[1:])


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

    def read_page(after: int) -> list[Any]:
        with db.transaction() as conn:
            return chain_page(conn, after, page)

    for row in chain_entries(read_page, int(first) - 1, page):
        position += 1
        yield _entry(row, position)


def _entry(row: Any, position: int) -> dict[str, Any]:
    at: datetime = row.at
    entry = {name: position if name == "position" else getattr(row, name) for name in FIELDS}
    return entry | {"at": at.astimezone(UTC).isoformat(timespec="microseconds")}
