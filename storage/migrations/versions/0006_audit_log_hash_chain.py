"""Audit log hash chain: `prev_hash` and `hash` on every entry; existing entries are chained.

Entries written before this migration are chained here, in id order, from the genesis marker
(`storage.audit.GENESIS`), with the same format v1 the engine uses from now on; so the whole log
verifies, old entries included (they are vouched for from this moment on, not before it).
On PostgreSQL, `gatehouse_audit_head()` locks the chain for the calling transaction (an advisory
lock per schema) and returns the head hash read *after* the lock: a PL/pgSQL function takes a
fresh snapshot per statement, so an appender always sees the entry committed just before it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import JSONValue, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# 0x67617465 ("gate"): the class of the two-key advisory lock, a key space of its own (the rate
# limits use the one-key form); the second key is the schema, so schemas chain independently.
HEAD_FUNCTION = """
CREATE OR REPLACE FUNCTION gatehouse_audit_head() RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1734439013, hashtext(current_schema()));
    RETURN (SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1);
END
$$
"""

_audit = sa.table(
    "audit_log",
    sa.column("id", sa.Integer()),
    sa.column("at", UTCDateTime()),
    sa.column("event", sa.String()),
    sa.column("actor", sa.String()),
    sa.column("run_id", sa.String()),
    sa.column("call_id", sa.String()),
    sa.column("tool", sa.String()),
    sa.column("approval_id", sa.String()),
    sa.column("idempotency_key", sa.String()),
    sa.column("detail", JSONValue),
    sa.column("prev_hash", sa.String()),
    sa.column("hash", sa.String()),
)


def _chain_existing_entries(batch: int = 5000) -> None:
    # The format is storage.audit's v1, a contract that never changes once entries exist.
    from storage.audit import GENESIS, entry_hash

    conn = op.get_bind()
    prev, after = GENESIS, -1
    fields = ("at", "event", "actor", "run_id", "call_id", "tool", "approval_id")
    while True:
        rows = conn.execute(
            sa.select(_audit).where(_audit.c.id > after).order_by(_audit.c.id).limit(batch)
        ).all()
        updates = []
        for row in rows:
            digest = entry_hash(
                **{name: getattr(row, name) for name in fields},
                idempotency_key=row.idempotency_key,
                detail=row.detail,
                prev_hash=prev,
            )
            updates.append({"entry_id": row.id, "prev": prev, "digest": digest})
            prev = digest
        if updates:
            conn.execute(
                _audit.update()
                .where(_audit.c.id == sa.bindparam("entry_id"))
                .values(prev_hash=sa.bindparam("prev"), hash=sa.bindparam("digest")),
                updates,
            )
        if len(rows) < batch:
            return
        after = rows[-1].id


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    _chain_existing_entries()
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(HEAD_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS gatehouse_audit_head()")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
