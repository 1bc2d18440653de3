"""Hourly and daily stats rollups.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stats_rollups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("span_seconds", sa.Integer(), nullable=False),
        sa.Column("bucket_start", UTCDateTime(), nullable=False),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("invalid_input", sa.Integer(), nullable=False),
        sa.Column("needs_attention", sa.Integer(), nullable=False),
        sa.Column("cancelled", sa.Integer(), nullable=False),
        sa.Column("latency_histogram", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("span_seconds", "bucket_start", "pipeline", name="uq_stats_rollups"),
    )
    op.create_table(
        "stats_rollup_progress",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("hours_until", UTCDateTime(), nullable=True),
        sa.Column("days_until", UTCDateTime(), nullable=True),
        sa.Column("rolled_by", sa.String(length=200), nullable=True),
        sa.Column("rolled_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("stats_rollup_progress")
    op.drop_table("stats_rollups")
