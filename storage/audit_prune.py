"""Cutting the audit chain's old prefix behind a signed checkpoint, so retention reaches the
audit trail and `audit verify` still proves the rest.

A chain can only lose a *prefix*: deleting an entry in the middle unlinks the one after it. So
a prune deletes, in id order, the entries older than the cutoff up to the first one it must keep
— an entry at or after the cutoff, one of a run that still exists (waiting, needing attention,
another pipeline's), or the head itself — and appends a checkpoint entry (`audit.pruned`, hashed
like every entry: keyed with GATEHOUSE_AUDIT_KEY when one is set) whose detail records the last
deleted entry's id and hash and its position in the chain since its start. `verify` starts from
the newest checkpoint: the first entry left must link to that hash, and positions (`COUNT:HASH`
heads recorded before the prune) keep counting from the chain's true start. Deleting the
checkpoint, or more entries after the prune, unlinks the first entry left; editing the
checkpoint fails its own hash.

Entries of pruned runs that come after an entry still kept stay until a later prune reaches
them: retention of the audit trail follows the chain, not each run.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, func, select

from storage.audit import append_audit, audit_table, chain_head
from storage.audit_checkpoint import CHECKPOINT_EVENT, latest_checkpoint
from storage.prune import among
from storage.runs import runs_table

CHUNK = 20_000  # entries deleted a transaction


def prune_audit_prefix(
    conn: Connection,
    *,
    cutoff: datetime,
    now: datetime,
    actor: str | None,
    limit: int = CHUNK,
) -> int:
    """Delete up to `limit` entries of the chain's prunable prefix and append the checkpoint,
    in the caller's transaction (on PostgreSQL holding the chain's lock from the start, so no
    entry is appended meanwhile). Returns how many entries were deleted."""
    chain_head(conn)  # takes the chain's lock on PostgreSQL before anything is read
    previous = latest_checkpoint(conn)
    t = audit_table
    last_id = conn.execute(select(func.max(t.c.id))).scalar()
    if last_id is None:
        return 0
    rows = list(
        conn.execute(
            select(t.c.id, t.c.at, t.c.run_id, t.c.hash)
            .where(t.c.id < last_id)
            .order_by(t.c.id)
            .limit(limit)
        )
    )
    run_ids = sorted({r.run_id for r in rows if r.run_id is not None})
    alive = set(
        conn.execute(select(runs_table.c.id).where(among(conn, runs_table.c.id, run_ids))).scalars()
    )
    cut = 0
    for row in rows:
        if row.at >= cutoff or (row.run_id is not None and row.run_id in alive):
            break
        cut += 1
    if cut == 0:
        return 0
    last = rows[cut - 1]
    position = (previous.position if previous is not None else 0) + cut
    conn.execute(delete(t).where(t.c.id <= last.id))
    append_audit(
        conn,
        event=CHECKPOINT_EVENT,
        at=now,
        actor=actor,
        detail={
            "through_id": int(last.id),
            "last_hash": str(last.hash),
            "position": position,
            "entries": cut,
            "cutoff": cutoff.isoformat(),
        },
    )
    return cut
