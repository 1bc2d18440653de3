"""Is the database's schema the one this code was written for? Answered without Alembic.

Importing Alembic and walking its script directory costs a one-shot command more than the
command itself, so the read-only CLI commands ask here instead: the code's head revision comes
from the `revision = "…"` / `down_revision = "…"` lines of the migration files (read as text,
never imported; tests/test_cli_startup.py checks it agrees with Alembic's own head), and the
database's from its `alembic_version` row. Migrating stays Alembic's job (`Database.upgrade`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text

from storage.db import MIGRATIONS_DIR, Database, DatabaseConfigError

VERSIONS_DIR = MIGRATIONS_DIR / "versions"
_ASSIGNMENT = re.compile(
    r"^(revision|down_revision)\s*(?::[^=]+)?=\s*(?:None|[\"']([^\"']+)[\"'])", re.MULTILINE
)


class SchemaBehind(DatabaseConfigError):
    """The database was migrated by older code: `gatehouse db upgrade` brings it up to date."""


class SchemaUnknown(DatabaseConfigError):
    """The database is at a revision this code does not know (a newer Gatehouse migrated it)."""


class SchemaState(StrEnum):
    CURRENT = "current"
    EMPTY = "empty"  # no alembic_version table: nothing was ever migrated here
    BEHIND = "behind"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SchemaCheck:
    state: SchemaState
    database: str | None  # the revision in alembic_version, None when there is none
    code: str  # the head revision of this code's migrations


@functools.cache
def migration_graph() -> dict[str, str | None]:
    """revision -> down_revision, from the migration files' text."""
    graph: dict[str, str | None] = {}
    for path in sorted(VERSIONS_DIR.glob("*.py")):
        found = dict(_ASSIGNMENT.findall(path.read_text(encoding="utf-8")))
        if found.get("revision"):
            graph[found["revision"]] = found.get("down_revision") or None
    return graph


def code_head() -> str:
    """The one revision no other migration builds on (Alembic's `head`)."""
    graph = migration_graph()
    heads = sorted(set(graph) - {down for down in graph.values() if down})
    if len(heads) != 1:
        raise DatabaseConfigError(
            f"the migrations in {VERSIONS_DIR} have {len(heads)} heads ({', '.join(heads)}); "
            "each must build on the one before it"
        )
    return heads[0]


def database_revision(db: Database) -> tuple[bool, str | None]:
    """(has an alembic_version table, the revision in it)."""
    with db.engine.connect() as conn:
        if not sa_inspect(conn).has_table("alembic_version"):
            return False, None
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return True, (str(row[0]) if row is not None else None)


def check_schema(db: Database) -> SchemaCheck:
    head = code_head()
    has_table, revision = database_revision(db)
    if not has_table or revision is None:
        return SchemaCheck(SchemaState.EMPTY, None, head)
    if revision == head:
        return SchemaCheck(SchemaState.CURRENT, revision, head)
    state = SchemaState.BEHIND if revision in migration_graph() else SchemaState.UNKNOWN
    return SchemaCheck(state, revision, head)


def require_current_schema(db: Database, shown_url: str) -> SchemaCheck:
    """Raise SchemaBehind / SchemaUnknown unless the schema is this code's (or not there yet:
    the caller decides whether to create it). `shown_url` is the URL without its password."""
    check = check_schema(db)
    if check.state is SchemaState.BEHIND:
        raise SchemaBehind(
            f"the database {shown_url} is at schema revision {check.database}, behind this "
            f"code's {check.code}: run `gatehouse db upgrade` to migrate it, then try again"
        )
    if check.state is SchemaState.UNKNOWN:
        raise SchemaUnknown(
            f"the database {shown_url} is at schema revision {check.database}, which this code "
            f"does not know (its latest is {check.code}): a newer Gatehouse migrated it; "
            "run this command with that version"
        )
    return check
