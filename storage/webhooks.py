"""Webhook deliveries: an Idempotency-Key is claimed once per pipeline, with its body's hash
and the run it created, so a retry finds the run instead of creating another."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Table, select

from storage.claims import insert_unless_taken
from storage.models import WebhookDelivery
from storage.rows import WebhookDeliveryRow

deliveries_table: Table = WebhookDelivery.__table__  # type: ignore[assignment]


def claim_delivery(
    conn: Connection,
    *,
    pipeline: str,
    idempotency_key: str,
    body_sha256: str,
    run_id: str,
    now: datetime,
) -> bool:
    """Record the delivery; False when this key was already used for this pipeline."""
    values = {
        "pipeline": pipeline,
        "idempotency_key": idempotency_key,
        "body_sha256": body_sha256,
        "run_id": run_id,
        "received_at": now,
    }
    return insert_unless_taken(conn, deliveries_table, values, ("pipeline", "idempotency_key"))


def find_delivery(
    conn: Connection, pipeline: str, idempotency_key: str
) -> WebhookDeliveryRow | None:
    """The delivery row for this key, or None."""
    query = select(deliveries_table).where(
        deliveries_table.c.pipeline == pipeline,
        deliveries_table.c.idempotency_key == idempotency_key,
    )
    row = conn.execute(query).first()
    return None if row is None else WebhookDeliveryRow(*row)
