"""Column types that behave the same on SQLite and PostgreSQL.

Text a database refuses is stored escaped and read back as it was given. PostgreSQL's text and
jsonb refuse NUL (`\\u0000`), and no UTF-8 database can hold a lone surrogate (`\\ud800`, which
Python strings may carry, e.g. from `json.loads`); a tool result holding one must still be
recorded, or the effect it reports is lost. Such a string is stored as `gh-escaped:` followed by
the string with `\\`, NUL and surrogates written `\\\\` and `\\uXXXX`; so is any string that happens
to start with `gh-escaped:`, so reading back is exact. Escaping, not replacing: a replay must
see the value the tool returned. Every other string (all but a handful in practice) is stored as
it is, which keeps the check cheap (one regex search over the JSON text being written anyway)
and SQL over JSON fields working.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, DateTime, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy.types import TypeEngine

    JSONValue: TypeEngine[Any]

ESCAPED = "gh-escaped:"
_REFUSED = re.compile(r"[\\\x00\ud800-\udfff]")  # what the escaped form spells out
_SPELLED = re.compile(r"\\\\|\\u[0-9a-f]{4}")
# In `json.dumps` text (ASCII): NUL, a surrogate (paired ones too: the walk tells), the prefix.
_MAY_NEED = re.compile(r"\\u0000|\\ud[89a-f]|gh-escaped:")


def storable_text(value: str) -> str:
    """`value` as any database can store it (itself unless it must be escaped)."""
    if value.startswith(ESCAPED) or "\x00" in value or not _encodes(value):
        return ESCAPED + _REFUSED.sub(_spell, value)
    return value


def stored_text(value: str) -> str:
    """The string `storable_text` was given."""
    if value.startswith(ESCAPED):
        return _SPELLED.sub(_unspell, value[len(ESCAPED) :])
    return value


def _encodes(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _spell(match: re.Match[str]) -> str:
    char = match.group()
    return "\\\\" if char == "\\" else f"\\u{ord(char):04x}"


def _unspell(match: re.Match[str]) -> str:
    spelled = match.group()
    return "\\" if spelled == "\\\\" else chr(int(spelled[2:], 16))


def _map_strings(value: Any, convert: Any) -> Any:
    if isinstance(value, str):
        return convert(value)
    if isinstance(value, dict):
        return {
            (convert(k) if isinstance(k, str) else k): _map_strings(v, convert)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_map_strings(v, convert) for v in value]
    return value


def dump_json(value: Any) -> str:
    """JSON text for a JSON column (the engine's serializer on both databases)."""
    text = json.dumps(value)
    if _MAY_NEED.search(text):
        text = json.dumps(_map_strings(value, storable_text))
    return text


def load_json(text: str | bytes) -> Any:
    """A JSON column's value as it was written (the engine's deserializer)."""
    value = json.loads(text)
    marker: str | bytes = ESCAPED if isinstance(text, str) else ESCAPED.encode()
    return _map_strings(value, stored_text) if marker in text else value  # type: ignore[operator]


def __getattr__(name: str) -> Any:
    """`JSONValue`, JSON with PostgreSQL's jsonb as its variant there: built on first use, as
    naming JSONB imports SQLAlchemy's whole PostgreSQL dialect, which a one-shot command on
    SQLite never needs (`gatehouse runs` takes UTCDateTime from here, never the models or
    this)."""
    if name == "JSONValue":
        from sqlalchemy.dialects.postgresql import JSONB

        value = JSON().with_variant(JSONB(), "postgresql")
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SafeText(TypeDecorator[str]):
    """Text that may hold anything a Python string holds (errors, reasons, notes): see the
    module docstring."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else storable_text(str(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else stored_text(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes everywhere.

    SQLite has no time zone type, so values are stored as naive UTC and given their zone back
    on the way out; comparisons in SQL then work the same on both databases.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use clock.now() (UTC, aware)")
        utc: datetime = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        aware: datetime = (
            value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        )
        return aware
