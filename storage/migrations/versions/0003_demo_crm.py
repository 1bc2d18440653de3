"""Formerly the example lead pipeline's CRM tables (demo_companies, demo_crm_leads, demo_outbox).

Until 2026-12 this revision created them in Gatehouse's schema. They are the example catalog's
own now (pipelines/catalog/connectors/tables.py), created on a database's first connector call,
so a production database never gets them. The revision stays, empty, so that databases migrated
before keep a continuous history; they keep the tables too, and the connectors use them as they are.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing: the example connectors create their own tables."""


def downgrade() -> None:
    """Nothing: this revision no longer creates anything."""
