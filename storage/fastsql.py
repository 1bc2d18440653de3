"""Precompiled INSERT and conditional UPDATE statements sent straight to the driver.

The engine records every call of every run, so these few statements are its hot path. Going
through SQLAlchemy's statement machinery costs 30-60 µs a statement, which is most of a run's
cost; here the SQL text is built once per (table, columns, dialect) from the same `Table`
objects, values are converted the way the column types store them, and the statement runs on
the DBAPI connection *inside* the SQLAlchemy transaction that is already open, so commits and
rollbacks stay SQLAlchemy's.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

from sqlalchemy import JSON, Boolean, Connection, Table
from sqlalchemy.types import TypeEngine

from storage.types import SafeText, UTCDateTime, dump_json, load_json, storable_text, stored_text

Converter = Callable[[Any], Any]
RowT = TypeVar("RowT", bound=tuple[Any, ...])


def _sqlite_datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is UTC:  # the clock's own: the text without its "+00:00"
        return value.isoformat(" ", "microseconds")[:26]
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_json(value: Any) -> str | None:
    return None if value is None else dump_json(value)


def _postgres_json(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return None if value is None else Jsonb(value, dumps=dump_json)


def _safe_text(value: Any) -> Any:
    return value if value is None else storable_text(str(value))


def _read_safe_text(value: Any) -> Any:
    return value if value is None else stored_text(value)


def _plain(value: Any) -> Any:
    # StrEnum members are str subclasses; drivers adapt exact types most reliably.
    return str(value) if isinstance(value, str) and type(value) is not str else value


def _converter(column_type: TypeEngine[Any], dialect: str) -> Converter | None:
    """How a column's Python value goes to the driver (None: as it is)."""
    if isinstance(column_type, UTCDateTime):
        return _sqlite_datetime if dialect == "sqlite" else None
    if isinstance(column_type, JSON):
        return _sqlite_json if dialect == "sqlite" else _postgres_json
    if isinstance(column_type, SafeText):
        return _safe_text
    if isinstance(column_type, Boolean) and dialect == "sqlite":
        return lambda v: None if v is None else int(bool(v))
    # sqlite3 binds str subclasses (our StrEnums) as text; psycopg gets exact types.
    return None if dialect == "sqlite" else _plain


class _Compiled:
    __slots__ = ("converters", "names", "sql", "where_converters")

    def __init__(
        self,
        sql: str,
        names: Sequence[str],
        converters: Sequence[Converter | None],
        where_converters: Sequence[Converter | None] = (),
    ) -> None:
        self.sql = sql
        self.names = tuple(names)
        self.converters = tuple(converters)
        self.where_converters = tuple(where_converters)

    def values(self, params: Mapping[str, Any]) -> list[Any]:
        get = params.get
        return [
            get(name) if conv is None else conv(get(name))
            for name, conv in zip(self.names, self.converters, strict=True)
        ]


_CACHE: dict[tuple[Any, ...], _Compiled] = {}


def _placeholder(dialect: str) -> str:
    return "?" if dialect == "sqlite" else "%s"


def _compile_insert(table: Table, dialect: str) -> _Compiled:
    key = ("insert", table.name, dialect)
    compiled = _CACHE.get(key)
    if compiled is None:
        columns = [
            c
            for c in table.columns
            if not (c.primary_key and c.autoincrement is True and c.type.python_type is int)
        ]
        marks = ", ".join(_placeholder(dialect) for _ in columns)
        sql = f"INSERT INTO {table.name} ({', '.join(c.name for c in columns)}) VALUES ({marks})"
        compiled = _Compiled(
            sql, [c.name for c in columns], [_converter(c.type, dialect) for c in columns]
        )
        _CACHE[key] = compiled
    return compiled


def _driver(conn: Connection) -> Any:
    return conn.connection.driver_connection


@contextmanager
def driver_transaction(conn: Connection, *, read_only: bool = False) -> Iterator[Connection]:
    """A transaction run on the driver directly, for writes made only with `fast_*`.

    It skips SQLAlchemy's begin/commit bookkeeping (about 25 µs a transaction). The held
    connection must be idle: SQLAlchemy never learns of this transaction, so nothing else may
    use the connection inside it. `read_only`: on SQLite a deferred BEGIN, which takes no write
    lock (a check made before every call must not queue behind writers).
    """
    if conn.in_transaction():
        raise RuntimeError("driver_transaction() needs an idle connection")
    driver = _driver(conn)
    if conn.dialect.name == "sqlite":
        driver.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        driver.rollback()
        raise
    driver.commit()


def is_integrity_error(exc: BaseException) -> bool:
    """A constraint refused the write, whether SQLAlchemy wrapped the driver's error or the
    statement ran here, on the driver, which raises its own (`sqlite3`, `psycopg`)."""
    import sqlite3

    from sqlalchemy.exc import IntegrityError

    if isinstance(exc, IntegrityError | sqlite3.IntegrityError):
        return True
    if type(exc).__module__.startswith("psycopg"):
        import psycopg

        return isinstance(exc, psycopg.IntegrityError)
    return False


def fast_insert(
    conn: Connection, table: Table, rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> None:
    """INSERT one row or many; columns missing from a row are written as NULL."""
    compiled = _compile_insert(table, conn.dialect.name)
    driver = _driver(conn)
    if isinstance(rows, Mapping):
        driver.execute(compiled.sql, compiled.values(rows))
        return
    cursor = driver.cursor()
    try:
        cursor.executemany(compiled.sql, [compiled.values(row) for row in rows])
    finally:
        cursor.close()


def fast_scalar(conn: Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    """The first column of the first row (None without rows) of a statement run on the driver."""
    row = _driver(conn).execute(sql, params).fetchone()
    return None if row is None else row[0]


def fast_update(
    conn: Connection, table: Table, values: Mapping[str, Any], where: Mapping[str, Any]
) -> int:
    """`UPDATE table SET values WHERE col = v AND …`; a tuple matches `IN`, None matches `IS NULL`.
    Returns the number of rows changed (the compare-and-set result)."""
    dialect = conn.dialect.name
    shape = tuple(
        (name, len(v) if isinstance(v, tuple) else (-1 if v is None else 0))
        for name, v in where.items()
    )
    key = ("update", table.name, dialect, tuple(values), shape)
    compiled = _CACHE.get(key)
    mark = _placeholder(dialect)
    if compiled is None:
        sets = ", ".join(f"{name} = {mark}" for name in values)
        clauses = []
        for name, size in shape:
            if size == -1:
                clauses.append(f"{name} IS NULL")
            elif size == 0:
                clauses.append(f"{name} = {mark}")
            else:
                clauses.append(f"{name} IN ({', '.join(mark for _ in range(size))})")
        sql = f"UPDATE {table.name} SET {sets} WHERE {' AND '.join(clauses)}"
        converters = [_converter(table.c[name].type, dialect) for name in values]
        where_converters = [_converter(table.c[name].type, dialect) for name in where]
        compiled = _Compiled(sql, list(values), converters, where_converters)
        _CACHE[key] = compiled
    params = compiled.values(values)
    for value, conv in zip(where.values(), compiled.where_converters, strict=True):
        if isinstance(value, tuple):
            params.extend(v if conv is None else conv(v) for v in value)
        elif value is not None:
            params.append(value if conv is None else conv(value))
    cursor = _driver(conn).execute(compiled.sql, params)
    return int(cursor.rowcount)


def fast_execute(conn: Connection, sql: str, table: Table, binds: Sequence[tuple[str, Any]]) -> int:
    """A hand-written statement (`{mark}` where each value goes) run on the driver, for a shape
    `fast_update` cannot build (an `OR`); `binds` are (column, value) pairs, in order, converted
    as the column's type stores them. Returns the number of rows changed."""
    dialect = conn.dialect.name
    key = ("execute", sql, table.name, dialect, tuple(name for name, _ in binds))
    compiled = _CACHE.get(key)
    if compiled is None:
        names = [name for name, _ in binds]
        converters = [_converter(table.c[name].type, dialect) for name in names]
        compiled = _Compiled(sql.format(mark=_placeholder(dialect)), names, converters)
        _CACHE[key] = compiled
    params = [
        value if conv is None else conv(value)
        for (_, value), conv in zip(binds, compiled.converters, strict=True)
    ]
    return int(_driver(conn).execute(compiled.sql, params).rowcount)


def _sqlite_read_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _sqlite_read_json(value: Any) -> Any:
    # A column declared JSON has NUMERIC affinity in SQLite: a JSON number comes back a number.
    return load_json(value) if isinstance(value, str | bytes) else value


def _postgres_read_datetime(value: Any) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _read_converter(column_type: TypeEngine[Any], dialect: str) -> Converter | None:
    if isinstance(column_type, UTCDateTime):
        return _sqlite_read_datetime if dialect == "sqlite" else _postgres_read_datetime
    if isinstance(column_type, JSON):
        return _sqlite_read_json if dialect == "sqlite" else None  # psycopg: the engine's loads
    if isinstance(column_type, SafeText):
        return _read_safe_text
    if isinstance(column_type, Boolean) and dialect == "sqlite":
        return lambda v: None if v is None else bool(v)
    return None


_ROW_TYPES: dict[str, type[Any]] = {}


def _row_type(table: Table) -> type[Any]:
    if table.name not in _ROW_TYPES:
        fields = [c.name for c in table.columns]
        _ROW_TYPES[table.name] = namedtuple(f"{table.name}_row", fields)
    return _ROW_TYPES[table.name]


@overload
def fast_select(
    conn: Connection,
    table: Table,
    where: Mapping[str, Any],
    row: None = None,
    *,
    order_by: str | None = None,
    limit: int | None = None,
) -> list[Any]: ...


@overload
def fast_select(
    conn: Connection,
    table: Table,
    where: Mapping[str, Any],
    row: type[RowT],
    *,
    order_by: str | None = None,
    limit: int | None = None,
) -> list[RowT]: ...


def fast_select(
    conn: Connection,
    table: Table,
    where: Mapping[str, Any],
    row: type[Any] | None = None,
    *,
    order_by: str | None = None,
    limit: int | None = None,
) -> list[Any]:
    """`SELECT * FROM table WHERE col = v AND …` as named tuples with the columns' Python types:
    `row` (a `storage.rows` type, fields in column order), or an untyped one made for the table.

    For the engine's lookups by key (a run, its calls, an approval): no statement building and
    no result-processing layer, the same values SQLAlchemy would return.
    """
    dialect = conn.dialect.name
    mark = _placeholder(dialect)
    shape = tuple((name, -1 if v is None else 0) for name, v in where.items())
    key = ("select", table.name, dialect, shape, order_by, limit)
    compiled = _CACHE.get(key)
    if compiled is None:
        columns = [c.name for c in table.columns]
        clauses = [f"{name} IS NULL" if size == -1 else f"{name} = {mark}" for name, size in shape]
        sql = f"SELECT {', '.join(columns)} FROM {table.name} WHERE {' AND '.join(clauses)}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        readers = [_read_converter(c.type, dialect) for c in table.columns]
        where_converters = [_converter(table.c[name].type, dialect) for name in where]
        compiled = _Compiled(sql, columns, readers, where_converters)
        _CACHE[key] = compiled
    params = [
        v if conv is None else conv(v)
        for v, conv in zip(where.values(), compiled.where_converters, strict=True)
        if v is not None
    ]
    cursor = _driver(conn).execute(compiled.sql, params)
    rows = cursor.fetchall()
    row_type = _row_type(table) if row is None else row
    converters = compiled.converters
    return [
        row_type(*[v if r is None else r(v) for v, r in zip(found, converters, strict=True)])
        for found in rows
    ]
