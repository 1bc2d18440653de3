"""The database an eval reads through: the production database, opened read-only.

`read` tools and connectors (`current_database()`) see production data during an eval, and the
database itself refuses any write made on this handle: SQLite connections have `PRAGMA
query_only`, PostgreSQL sessions are `READ ONLY` (psycopg's `read_only`). So a read tool that
writes after all, or any engine path an eval was not meant to reach, fails the case loudly
instead of changing production. SQLite transactions here start deferred (`BEGIN`), so eval reads
never queue behind production writers for the write lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from pipelines.errors import GatehouseError
from storage.db import Database


class NoFileToRead(GatehouseError):
    """An in-memory SQLite database cannot be opened a second time, read-only."""


class ReadOnlyDatabase(Database):
    """A second engine on `db`'s URL whose connections cannot write."""

    def __init__(self, db: Database, *, pool_size: int = 8) -> None:
        self.url = db.url
        url = make_url(db.url)
        if url.get_backend_name() == "sqlite":
            if not url.database or url.database == ":memory:" or "mode=memory" in str(url):
                raise NoFileToRead(
                    "an eval needs a database file (an in-memory SQLite database cannot be "
                    "opened a second time, read-only)"
                )
            # As many pooled connections as cases run at once: past the default five, each
            # case's connection would be an overflow one, opened and closed per checkout.
            self.engine = create_engine(
                db.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args={"check_same_thread": False, "timeout": 30},
            )
            _read_only_sqlite(self.engine)
        else:
            self.engine = create_engine(
                db.url,
                pool_pre_ping=True,
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args={"connect_timeout": 5},
            )
            _read_only_postgres(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def upgrade(self, revision: str = "head") -> None:
        raise RuntimeError("an eval's database is read-only: migrate the production one")


def _read_only_sqlite(engine: Any) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.connection.driver_connection.execute("BEGIN")  # type: ignore[union-attr]


def _read_only_postgres(engine: Any) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.read_only = True  # psycopg 3: every transaction BEGIN READ ONLY
