"""Signatures seen: a signed request is accepted once within its window.

The first insert of a (scope, digest) wins, through the same `ON CONFLICT DO NOTHING` claim as
schedule fires and webhook keys, so two replicas handed the same replay at once accept it once.
A row whose window has closed may be claimed again (the caller's timestamp check refuses such a
request before it gets here; reusing the row keeps a clock skew from locking one out forever),
and is deleted by `forget_expired`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, update
from sqlalchemy.dialects import sqlite

from storage.claims import insert_unless_taken
from storage.models import SeenSignature

seen_table: Table = SeenSignature.__table__  # type: ignore[assignment]


def _record_statement() -> Any:
    statement = sqlite.insert(seen_table)
    return statement.on_conflict_do_update(
        index_elements=("scope", "digest"), set_={"expires_at": statement.excluded.expires_at}
    )


# Built once: constructing it (its `excluded` columns) cost the writer a tenth of the
# interpreter's time under a flood of Slack requests (py-spy of bench/ack_load.py).
RECORD_SIGHTINGS = _record_statement()


def signature_digest(signature: str) -> str:
    """What is stored of a signature: its SHA-256, so the column has one width whatever the
    scheme, and the table holds nothing a sender could reuse."""
    return hashlib.sha256(signature.encode()).hexdigest()


def first_sighting(
    conn: Connection, *, scope: str, signature: str, now: datetime, expires_at: datetime
) -> bool:
    """True when `signature` was not seen in `scope` before (or its row has expired), and
    records it until `expires_at`; False for a replay."""
    digest = signature_digest(signature)
    values = {"scope": scope, "digest": digest, "expires_at": expires_at}
    if insert_unless_taken(conn, seen_table, values, ("scope", "digest")):
        return True
    reclaimed = conn.execute(
        update(seen_table)
        .where(
            seen_table.c.scope == scope,
            seen_table.c.digest == digest,
            seen_table.c.expires_at <= now,
        )
        .values(expires_at=expires_at)
    )
    return reclaimed.rowcount == 1


def forget_expired(conn: Connection, now: datetime) -> int:
    """Delete the rows whose window closed before `now`; how many went."""
    result = conn.execute(delete(seen_table).where(seen_table.c.expires_at <= now))
    return result.rowcount or 0


def forget_sighting(conn: Connection, *, scope: str, signature: str) -> bool:
    """Delete one sighting, so the same signature is taken again (a delivery that was refused
    after it was recorded); whether there was one."""
    result = conn.execute(
        delete(seen_table).where(
            seen_table.c.scope == scope, seen_table.c.digest == signature_digest(signature)
        )
    )
    return bool(result.rowcount)


def record_sightings(conn: Connection, sightings: Sequence[Mapping[str, Any]]) -> None:
    """Write sightings already known to be first (SQLite's in-memory check decided), many in
    one statement: each row is inserted, or an expired row of the same key takes the new window.
    `sightings` holds `scope`, `signature` and `expires_at`."""
    if not sightings:
        return
    conn.execute(
        RECORD_SIGHTINGS,
        [
            {
                "scope": s["scope"],
                "digest": signature_digest(s["signature"]),
                "expires_at": s["expires_at"],
            }
            for s in sightings
        ],
    )
