"""Database failures as one line that names the database (its file or its host) and what to do.

SQLite says "unable to open database file" and psycopg "connection refused" without saying
which database; a person with two environments needs the path or the host to fix it.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError


def database_target(url: str | None) -> str:
    """`the SQLite file /abs/path.db`, `PostgreSQL at host:5432/db as user`, or the URL."""
    if not url:
        return "the database"
    try:
        parsed = make_url(url)
    except Exception:  # an unparseable URL is reported by DatabaseConfigError already
        return "the database"
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        name = parsed.database or ""
        if name in ("", ":memory:") or name.startswith("file:"):
            return f"the SQLite database {name or ':memory:'}"
        return f"the SQLite file {Path(name).resolve()}"
    if backend == "postgresql":
        where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"
        who = f" as {parsed.username}" if parsed.username else ""
        return f"PostgreSQL at {where}{who}"
    return parsed.render_as_string(hide_password=True)


def sqlite_open_problem(url: str) -> str | None:
    """Why a SQLite file cannot be opened, when the file system says so; None otherwise."""
    try:
        parsed = make_url(url)
    except Exception:
        return None
    name = parsed.database or ""
    if (
        parsed.get_backend_name() != "sqlite"
        or name in ("", ":memory:")
        or name.startswith("file:")
    ):
        return None
    path = Path(name).resolve()
    if not path.parent.is_dir():
        return (
            f"cannot open the SQLite file {path}: the directory {path.parent} does not exist; "
            "create it, or set GATEHOUSE_DATABASE_URL to a path that exists"
        )
    if path.is_dir():
        return f"cannot open the SQLite file {path}: it is a directory; set GATEHOUSE_DATABASE_URL to a file"
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        missing = "" if path.exists() else " (the file does not exist yet)"
        return (
            f"cannot open the SQLite file {path}{missing}: it is not writable by this user; "
            "fix its permissions, or set GATEHOUSE_DATABASE_URL to another path"
        )
    return None


def database_error_line(exc: SQLAlchemyError, url: str | None) -> str:
    """The `error:` text for a database failure: which database, and the driver's first line."""
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    opening = "unable to open" in first or "readonly database" in first
    problem = sqlite_open_problem(url) if url and opening else None
    if problem is not None:
        return problem
    return f"database error at {database_target(url)}: {first}"
