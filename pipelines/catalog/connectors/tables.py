"""DEMO CONNECTOR tables: the example connectors' order book, refunds, companies, CRM leads and
email outbox, kept in Gatehouse's database but in their own metadata.

They are not Gatehouse's schema: no production migration creates them. The first connector call
on a database creates them (`connector_database()`), so the demo, the tests and a team trying the
example pipelines get them, and a production database that never runs an example never has them.
"""

from __future__ import annotations

import threading
import weakref

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, inspect
from sqlalchemy.exc import DatabaseError

from pipelines.runtime import current_database
from storage.db import Database
from storage.types import UTCDateTime

metadata = MetaData()

orders = Table(
    "demo_orders",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("customer", String(200), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("refunded_cents", Integer, nullable=False, default=0),
)

refunds = Table(
    "demo_refunds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(400), nullable=False, unique=True),
    Column("order_id", String(40), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("issued_at", UTCDateTime(), nullable=False),
    Column("reversed_at", UTCDateTime(), nullable=True),
)

companies = Table(
    "demo_companies",
    metadata,
    Column("domain", String(200), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("employees", Integer, nullable=False),
    Column("industry", String(100), nullable=False),
    Column("country", String(2), nullable=False),
    Column("revenue_band", String(20), nullable=False),
)

crm_leads = Table(
    "demo_crm_leads",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(400), nullable=False, unique=True),
    Column("email", String(320), nullable=False),
    Column("company", String(200), nullable=False),
    Column("role", String(200), nullable=False),
    Column("score", Integer, nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("status", String(20), nullable=False),
    Column("added_at", UTCDateTime(), nullable=False),
    Column("removed_at", UTCDateTime(), nullable=True),
)

outbox = Table(
    "demo_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(400), nullable=False, unique=True),
    Column("to_address", String(320), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("sent_at", UTCDateTime(), nullable=False),
    Column("recalled_at", UTCDateTime(), nullable=True),
)

_created: weakref.WeakSet[Database] = weakref.WeakSet()
_lock = threading.Lock()


def create_tables(db: Database) -> None:
    """Create the tables a database lacks (checked once per `Database` handle).

    Two processes may race to create them (several workers on one PostgreSQL): the loser's
    CREATE fails, and it is fine as long as the tables are there afterwards.
    """
    if db in _created:
        return
    with _lock:
        if db in _created:
            return
        try:
            metadata.create_all(db.engine, checkfirst=True)
        except DatabaseError:
            present = set(inspect(db.engine).get_table_names())
            if not present.issuperset(metadata.tables):
                raise
        _created.add(db)


def connector_database() -> Database:
    """The running engine's database, with the connector tables in it."""
    db = current_database()
    create_tables(db)
    return db
