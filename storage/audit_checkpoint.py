"""The audit chain's checkpoint: the entry a prune appends after cutting the chain's old
prefix (storage/audit_prune.py says why), read by the verifier to start where the chain now
starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, select

from storage.models import AuditEntry

audit_table: Table = AuditEntry.__table__  # type: ignore[assignment]

CHECKPOINT_EVENT = "audit.pruned"


class BadCheckpoint(ValueError):
    """A checkpoint entry whose detail is not what a prune writes (it was edited)."""


@dataclass(frozen=True)
class Checkpoint:
    """The newest `audit.pruned` entry: entries up to `through_id` are gone; the last of them
    had hash `last_hash` and was entry number `position` of the chain since its start."""

    entry_id: int
    through_id: int
    last_hash: str
    position: int

    @classmethod
    def of(cls, entry_id: int, detail: Any) -> Checkpoint:
        try:
            through, last, position = (
                detail["through_id"],
                detail["last_hash"],
                detail["position"],
            )
            if not (isinstance(through, int) and isinstance(position, int)):
                raise TypeError("through_id and position must be integers")
            if not (isinstance(last, str) and len(last) == 64):
                raise TypeError("last_hash must be 64 hex digits")
        except (KeyError, TypeError) as exc:
            raise BadCheckpoint(
                f"checkpoint entry {entry_id} ({CHECKPOINT_EVENT}) is not what a prune writes "
                f"({exc}): it was edited"
            ) from None
        return cls(entry_id, through, last, position)


def latest_checkpoint(conn: Connection) -> Checkpoint | None:
    """The newest checkpoint (None: the chain was never cut). Raises BadCheckpoint."""
    t = audit_table
    row = conn.execute(
        select(t.c.id, t.c.detail)
        .where(t.c.tool.is_(None), t.c.event == CHECKPOINT_EVENT)
        .order_by(t.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else Checkpoint.of(int(row[0]), row[1])
