"""The audit chain's hash format (a contract: entries already written are verified with it
forever) and the key that makes it keyed: scheme "v1" is plain SHA-256, "k1" HMAC-SHA256 with
GATEHOUSE_AUDIT_KEY (storage/audit.py says why and how the two meet in one chain).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Engine

from storage.db import Database

GENESIS = "0" * 64
"""`prev_hash` of the first entry: the chain starts here (migration 0006 chained older rows)."""

PLAIN = "v1"
"""`hash_scheme` of an entry hashed with plain SHA-256 (every entry before a key was set)."""
KEYED = "k1"
"""`hash_scheme` of an entry HMAC-SHA256'd with GATEHOUSE_AUDIT_KEY."""
SCHEME_NAMES = {PLAIN: "sha256", KEYED: "hmac-sha256"}

# The key of each engine's chain. A registry rather than a parameter: the engine appends from
# a dozen places that hold only a connection, and the key belongs to the database they write.
_KEYS: WeakKeyDictionary[Engine, bytes] = WeakKeyDictionary()


def use_audit_key(db: Database, key: str | None) -> None:
    """Entries appended through `db` from now on are keyed with `key` (None: plain), and its
    verifiers check keyed entries with it."""
    if key:
        _KEYS[db.engine] = key.encode("utf-8")
    else:
        _KEYS.pop(db.engine, None)


def audit_key(db: Database) -> bytes | None:
    return _KEYS.get(db.engine)


def engine_key(engine: Engine) -> bytes | None:
    """The key entries through `engine` are hashed with (None: plain)."""
    return _KEYS.get(engine)


def _canonical_json(value: Any) -> Any:
    """Integral floats as ints: PostgreSQL's jsonb prints 1e16 as 10000000000000000 and SQLite
    may read a bare 1.0 back as 1, so the hash must not depend on which one comes back."""
    kind = type(value)
    if kind is str or kind is int or value is None or kind is bool:
        return value
    if kind is float:
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {str(k): _canonical_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical_json(v) for v in value]
    return value


# Built once: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def entry_hash(
    *,
    at: datetime,
    event: str,
    actor: str | None,
    run_id: str | None,
    call_id: str | None,
    tool: str | None,
    approval_id: str | None,
    idempotency_key: str | None,
    detail: Any,
    prev_hash: str,
    key: bytes | None = None,
) -> str:
    """Format v1: SHA-256 (hex) of the compact, key-sorted, ASCII JSON array
    `["v1", at (UTC ISO 8601, microseconds), event, actor, run_id, call_id, tool, approval_id,
    idempotency_key, detail, prev_hash]`. The id is left out: the database assigns it after.
    With `key`, format k1: the same array with "k1" first, HMAC-SHA256'd with the key."""
    fields = [
        PLAIN if key is None else KEYED,
        (at if at.tzinfo is UTC else at.astimezone(UTC)).isoformat(timespec="microseconds"),
        _text(event),
        _text(actor),
        _text(run_id),
        _text(call_id),
        _text(tool),
        _text(approval_id),
        _text(idempotency_key),
        _canonical_json(detail),
        prev_hash,
    ]
    message = _ENCODER.encode(fields).encode("ascii")
    if key is None:
        return hashlib.sha256(message).hexdigest()
    keyed = _keyed(key).copy()
    keyed.update(message)
    return keyed.hexdigest()


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    """The HMAC with its key pads already hashed: a copy of it costs a third less than a new one
    on every append."""
    return hmac.new(key, digestmod=hashlib.sha256)
