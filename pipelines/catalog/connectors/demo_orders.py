"""DEMO CONNECTOR — not a real payment system.

A tiny order book and refund ledger kept in Gatehouse's own database (`demo_orders`,
`demo_refunds`), so the example refunds pipeline can look orders up, "issue" refunds and reverse
them without any outside service. Replace it with your payment provider's client.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, insert, select, update

from pipelines.catalog.connectors.demo_ledger import insert_once, mark_once
from pipelines.catalog.connectors.tables import connector_database, orders, refunds

SEED_ORDERS = [
    ("ord_1001", "ada@example.com", 4_999, "EUR"),
    ("ord_1002", "grace@example.com", 25_000, "EUR"),
    ("ord_1003", "linus@example.com", 12_50, "EUR"),
    ("ord_1004", "barbara@example.com", 89_900, "EUR"),
]


@dataclass(frozen=True)
class OrderRecord:
    id: str
    customer: str
    amount_cents: int
    currency: str
    refunded_cents: int


@dataclass(frozen=True)
class RefundRecord:
    id: int
    order_id: str
    amount_cents: int
    status: str


def seed_orders() -> bool:
    """Insert the demo orders if the table is empty; True when it inserted them."""
    with connector_database().transaction() as conn:
        if conn.execute(select(func.count()).select_from(orders)).scalar_one() != 0:
            return False
        conn.execute(
            insert(orders),
            [
                {
                    "id": i,
                    "customer": c,
                    "amount_cents": a,
                    "currency": cur,
                    "refunded_cents": 0,
                }
                for i, c, a, cur in SEED_ORDERS
            ],
        )
    return True


# Built once: a read tool may look an order up on every case of an eval.
_ORDER_BY_ID = select(orders).where(orders.c.id == bindparam("order_id"))


def _order(order_id: str) -> OrderRecord | None:
    with connector_database().transaction() as conn:
        row = conn.execute(_ORDER_BY_ID, {"order_id": order_id}).first()
    if row is None:
        return None
    return OrderRecord(row.id, row.customer, row.amount_cents, row.currency, row.refunded_cents)


def find_order(order_id: str) -> OrderRecord | None:
    """The order, from a book seeded on first use. The lookup comes first: a found order means
    the book is seeded already, so the common case costs one query, not a count and a query
    (an eval reads it once per case)."""
    found = _order(order_id)
    if found is None and seed_orders():
        return _order(order_id)
    return found


def issue_refund(
    order_id: str, amount_cents: int, *, idempotency_key: str, now: datetime
) -> RefundRecord:
    """Idempotent by key: a second call with the same key returns the first refund."""
    with connector_database().transaction() as conn:
        refund, inserted = insert_once(
            conn,
            refunds,
            {
                "idempotency_key": idempotency_key,
                "order_id": order_id,
                "amount_cents": amount_cents,
                "status": "issued",
                "issued_at": now,
                "reversed_at": None,
            },
        )
        if inserted:
            conn.execute(
                update(orders)
                .where(orders.c.id == order_id)
                .values(refunded_cents=orders.c.refunded_cents + amount_cents)
            )
    return RefundRecord(refund.id, refund.order_id, refund.amount_cents, refund.status)


def reverse_refund(refund_id: int, *, now: datetime) -> RefundRecord:
    with connector_database().transaction() as conn:
        row, changed = mark_once(
            conn,
            refunds,
            refund_id,
            status="reversed",
            at_column="reversed_at",
            now=now,
            what="demo refund",
        )
        if changed:
            conn.execute(
                update(orders)
                .where(orders.c.id == row.order_id)
                .values(refunded_cents=orders.c.refunded_cents - row.amount_cents)
            )
    return RefundRecord(row.id, row.order_id, row.amount_cents, "reversed")


def refunds_for_order(order_id: str) -> list[RefundRecord]:
    with connector_database().transaction() as conn:
        rows = conn.execute(
            select(refunds).where(refunds.c.order_id == order_id).order_by(refunds.c.id)
        ).all()
    return [RefundRecord(r.id, r.order_id, r.amount_cents, r.status) for r in rows]
