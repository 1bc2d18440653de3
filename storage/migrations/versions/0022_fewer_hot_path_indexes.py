"""Two indexes fewer on the hot path: `ix_calls_run` duplicated the unique index of
`uq_calls_run_seq` (the same columns), and `ix_runs_finished` is the leading column of
`ix_runs_finished_pipeline_status`, which serves every query it did. Each was one more b-tree
written by every run's insert, finish and recorded call.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04 04:05:00
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_calls_run", table_name="calls")
    op.drop_index("ix_runs_finished", table_name="runs")


def downgrade() -> None:
    op.create_index("ix_runs_finished", "runs", ["finished_at"], unique=False)
    op.create_index("ix_calls_run", "calls", ["run_id", "seq"], unique=False)
