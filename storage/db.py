"""The database handle: engine creation, SQLite tuning, transactions, migrations.

SQLite runs in WAL mode with a busy timeout, and every transaction starts with
`BEGIN IMMEDIATE`: the engine's read-then-write transactions (rate-limit counting, claims) would
otherwise fail at once with "database is locked" when two processes upgrade their locks together,
whatever the busy timeout says.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from storage.types import dump_json, load_json

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DEFAULT_DATABASE_URL = "sqlite:///gatehouse.db"


class DatabaseConfigError(ValueError):
    """The database URL cannot be used; the message says why and what to set."""


def normalize_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` and use psycopg 3 for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_disconnect(exc: BaseException) -> bool:
    """Did this error come from losing the database (a restart, a killed backend, a refused
    connection) rather than from the statement? Such work is retried once the database is back.

    The engine's hot path talks to the driver directly (`storage.fastsql`), so psycopg's own
    errors arrive unwrapped; SQLAlchemy's wrap them and flag `connection_invalidated`.
    """
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, OperationalError | InterfaceError) and exc.orig is not None:
            exc = exc.orig
        else:
            return False
    if type(exc).__module__.startswith("psycopg"):
        import psycopg

        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return False


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN instead of pysqlite's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Straight to the driver: this runs for every transaction.
        connection.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]


def create_database_engine(url: str) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse text
        raise DatabaseConfigError(
            f"GATEHOUSE_DATABASE_URL={url!r} is not a database URL ({exc}); "
            "use e.g. sqlite:///gatehouse.db or postgresql+psycopg://user@host/db"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=dump_json,
            json_deserializer=load_json,
        )
        _tune_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        # pre-ping: a pooled connection the server dropped (a restart) is replaced on checkout;
        # connect_timeout: a database that is down fails fast, and the callers back off.
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=10,
            connect_args={"connect_timeout": 5},
            # NUL and lone surrogates stored escaped (storage.types), here and in storage.fastsql.
            json_serializer=dump_json,
            json_deserializer=load_json,
        )
    raise DatabaseConfigError(
        f"GATEHOUSE_DATABASE_URL uses {parsed.get_backend_name()!r}; "
        "Gatehouse supports sqlite and postgresql"
    )


class Database:
    """One engine and a session factory; the only object the rest of the code needs."""

    def __init__(self, url: str = DEFAULT_DATABASE_URL) -> None:
        self.url = normalize_url(url)
        self.engine = create_database_engine(self.url)

    @functools.cached_property
    def sessions(self) -> sessionmaker[Session]:
        """The ORM's session factory, made on first use: the engine itself works in Core, and
        a one-shot read need not import the ORM (`gatehouse runs`)."""
        from sqlalchemy.orm import sessionmaker

        return sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside one transaction, committed on success, rolled back on error."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection held across several transactions (one run's execution)."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def driver_transaction(self) -> Iterator[Connection]:
        """A connection inside one write transaction run on the driver, for work made only of
        `storage.fastsql` statements (`storage.fastsql.driver_transaction`)."""
        from storage.fastsql import driver_transaction

        with self.engine.connect() as conn, driver_transaction(conn):
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection inside one read-only transaction for `storage.fastsql` reads: on SQLite
        a deferred BEGIN (no write lock, so a read does not queue behind writers), and none of
        SQLAlchemy's begin/commit bookkeeping."""
        from storage.fastsql import driver_transaction

        with self.engine.connect() as conn, driver_transaction(conn, read_only=True):
            yield conn

    @staticmethod
    @contextmanager
    def transaction_on(conn: Connection) -> Iterator[Connection]:
        """One transaction on a held connection."""
        with conn.begin():
            yield conn

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    def upgrade(self, revision: str = "head") -> None:
        """Apply the Alembic migrations up to `revision` (idempotent)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        self.engine.dispose()
