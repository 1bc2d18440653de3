"""DEMO CONNECTOR plumbing: the two writes every demo connector makes.

An effect recorded once per idempotency key (a retried tool call finds the first record), and
an undo that marks the record once (a second undo changes nothing).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, insert, select, update


def insert_once(conn: Connection, table: Table, values: dict[str, Any]) -> tuple[Any, bool]:
    """The row whose `idempotency_key` is `values`'; inserted first if absent.
    Returns (row, whether this call inserted it)."""
    by_key = select(table).where(table.c.idempotency_key == values["idempotency_key"])
    existing = conn.execute(by_key).first()
    if existing is not None:
        return existing, False
    conn.execute(insert(table), values)
    return conn.execute(by_key).one(), True


def mark_once(
    conn: Connection,
    table: Table,
    row_id: int,
    *,
    status: str,
    at_column: str,
    now: datetime,
    what: str,
) -> tuple[Any, bool]:
    """Set the row's `status` (and `at_column` to `now`) unless it has that status already.
    Returns (the row as it was, whether this call changed it); LookupError naming `what`."""
    row = conn.execute(select(table).where(table.c.id == row_id)).first()
    if row is None:
        raise LookupError(f"{what} {row_id} does not exist")
    if row.status == status:
        return row, False
    conn.execute(
        update(table).where(table.c.id == row_id).values({"status": status, at_column: now})
    )
    return row, True
