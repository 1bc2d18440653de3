"""Approvals get a `validator` JSON column: the validation model's verdict, reason and confidence
when it handed the call to a person (the approval card shows them).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 22:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import JSONValue

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("validator", JSONValue, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_column("validator")
