"""Claims by unique key: `INSERT … ON CONFLICT DO NOTHING` on SQLite and PostgreSQL.

Whoever inserts the row owns what it names (a schedule fire, a webhook delivery); everybody
else's insert does nothing and reports False, without an error that would abort a PostgreSQL
transaction. Concurrent inserts of one key wait for the first to commit or roll back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_unless_taken(
    conn: Connection, table: Table, values: Mapping[str, Any], key: Sequence[str]
) -> bool:
    """Insert `values` unless a row with the same `key` columns exists; True when inserted."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=key)
        # RETURNING, not rowcount: psycopg reports -1 for an INSERT that returns rows, and
        # SQLAlchemy adds RETURNING for the autoincrement id on its own.
        .returning(*(table.c[name] for name in key))
    )
    return conn.execute(statement).first() is not None


def upsert(conn: Connection, table: Table, values: Mapping[str, Any], key: Sequence[str]) -> None:
    """Insert `values`, or update the row with the same `key` columns to them."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(**values)
    updates = {name: statement.excluded[name] for name in values if name not in key}
    conn.execute(statement.on_conflict_do_update(index_elements=key, set_=updates))
