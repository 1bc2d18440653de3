"""`approvals.edited`: an approval given with edits (`@tool(editable=…)`): who edited, when, the
original arguments and each changed field's old and new value.

Revision ID: 0019
Revises: 0017
Create Date: 2026-12-04 03:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import JSONValue

revision = "0019"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("edited", JSONValue, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("edited")
