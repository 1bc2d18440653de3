"""`audit_log.hash_scheme`: which scheme made each entry's hash — "v1" (plain SHA-256, every
entry so far) or "k1" (HMAC-SHA256 with GATEHOUSE_AUDIT_KEY) — so an existing chain moves to
keyed hashing at the first entry written with the key (storage/audit.py).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(
            sa.Column("hash_scheme", sa.String(length=8), nullable=False, server_default="v1")
        )


def downgrade() -> None:
    # Keyed entries would be checked as plain ones after this: it only suits a chain that was
    # never keyed (`gatehouse audit verify` says so otherwise).
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("hash_scheme")
