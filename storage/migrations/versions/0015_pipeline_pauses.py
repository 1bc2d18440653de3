"""A `pipeline_pauses` table (a pipeline's circuit breaker: paused or not, by whom, why, from
what source, since when; the history is in the audit log), and `schedule_fires.reason`, why a
fire was skipped (a paused pipeline).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 01:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_pauses",
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("changed_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pipeline"),
    )
    with op.batch_alter_table("schedule_fires") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedule_fires") as batch:
        batch.drop_column("reason")
    op.drop_table("pipeline_pauses")
