"""Where each Slack card lives (channel, ts), keyed by what it shows (an approval or a task)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Table

from storage.fastsql import fast_insert, fast_select, fast_update
from storage.models import SlackMessage
from storage.rows import SlackMessageRow

messages_table: Table = SlackMessage.__table__  # type: ignore[assignment]


def save_message_ref(
    conn: Connection, *, kind: str, ref_id: str, channel: str, ts: str, now: datetime
) -> None:
    """Remember a card; a re-post of the same approval or task replaces the old reference."""
    where = {"kind": kind, "ref_id": ref_id}
    if (
        fast_update(conn, messages_table, {"channel": channel, "ts": ts, "posted_at": now}, where)
        == 0
    ):
        fast_insert(
            conn,
            messages_table,
            {"kind": kind, "ref_id": ref_id, "channel": channel, "ts": ts, "posted_at": now},
        )


def message_ref(conn: Connection, *, kind: str, ref_id: str) -> SlackMessageRow | None:
    rows = fast_select(conn, messages_table, {"kind": kind, "ref_id": ref_id}, SlackMessageRow)
    return rows[0] if rows else None
