"""The example connectors' tables are the catalog's, not Gatehouse's: production migrations never
create them, and the first connector call on a database does."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect

from pipelines import Gatehouse
from pipelines.catalog.connectors import demo_orders
from pipelines.catalog.connectors.tables import create_tables, metadata
from pipelines.runtime import running_in
from storage.db import Database

DEMO_TABLES = {"demo_orders", "demo_refunds", "demo_companies", "demo_crm_leads", "demo_outbox"}


def table_names(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names())


def test_production_migrations_create_no_example_table(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'prod.db'}")
    db.upgrade()
    try:
        names = table_names(db)
        assert "runs" in names
        assert names.isdisjoint(DEMO_TABLES), names & DEMO_TABLES
    finally:
        db.dispose()


def test_the_first_connector_call_creates_the_tables_and_seeds_the_orders(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    db.upgrade()
    gatehouse = Gatehouse(db)
    try:
        with running_in(gatehouse.rt):
            order = demo_orders.find_order("ord_1001")
        assert order is not None and order.customer == "ada@example.com"
        assert table_names(db) >= DEMO_TABLES
        assert set(metadata.tables) == DEMO_TABLES
    finally:
        db.dispose()


def test_creating_the_tables_again_keeps_what_they_hold(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'again.db'}"
    first = Database(url)
    first.upgrade()
    with running_in(Gatehouse(first).rt):
        demo_orders.find_order("ord_1001")
    first.dispose()

    second = Database(url)  # a new handle (another process, a restart) checks again
    try:
        create_tables(second)
        with running_in(Gatehouse(second).rt):
            assert demo_orders.find_order("ord_1004") is not None
    finally:
        second.dispose()
