"""A run's events read on the driver, for what starts each execution slice (its trace)."""

from __future__ import annotations

from sqlalchemy import Connection

from storage.fastsql import driver_transaction, fast_select
from storage.rows import RunEventRow
from storage.runs import run_events_table


def events_on_driver(conn: Connection, run_id: str) -> list[RunEventRow]:
    """The run's events in order, on the idle held connection without SQLAlchemy's layers: a
    slice's trace reads how many claims came before it and what its `queued` event kept."""
    with driver_transaction(conn, read_only=True):
        return fast_select(conn, run_events_table, {"run_id": run_id}, RunEventRow, order_by="id")
