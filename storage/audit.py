"""The append-only audit log: who did what to which tool call, approval or run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table

from storage.fastsql import fast_insert
from storage.models import AuditEntry

audit_table: Table = AuditEntry.__table__  # type: ignore[assignment]


def append_audit(
    conn: Connection,
    *,
    event: str,
    at: datetime,
    actor: str | None = None,
    run_id: str | None = None,
    call_id: str | None = None,
    tool: str | None = None,
    approval_id: str | None = None,
    idempotency_key: str | None = None,
    detail: Any = None,
) -> None:
    fast_insert(
        conn,
        audit_table,
        {
            "event": event,
            "at": at,
            "actor": actor,
            "run_id": run_id,
            "call_id": call_id,
            "tool": tool,
            "approval_id": approval_id,
            "idempotency_key": idempotency_key,
            "detail": detail,
        },
    )
