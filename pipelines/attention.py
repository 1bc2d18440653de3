"""A stuck run's notice, the engine's side: a run that ends `needs_attention` owes people a
notice (an outbox subject named by the run's id), owed again when someone cancels, retries or
resolves it (`pipelines.run_operations`), so that the notice shows what was done; and what was
last done, read from the audit log. How it looks is the bot's (bot/slack/attention_cards.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from pipelines import inspect
from pipelines.runtime import Runtime
from storage import run_operations as op_rows
from storage.models import RunStatus
from storage.rows import RunRow
from storage.run_operations import RETRIED

# The outbox subject of a run's needs-attention notice (its id is the run's): owed when the run
# ends `needs_attention`, and again when someone cancels, retries or resolves it, so the notice
# shows what was done.
ATTENTION_EVENT = "run_needs_attention"


@dataclass(frozen=True)
class Operation:
    """What a person last did about a stuck run, for its notice: `cancelled`, `retried` or
    `resolved`, by whom, and its audit detail (reason, attempt, happened)."""

    action: str
    actor: str | None
    detail: dict[str, Any]


_OPERATIONS = {"run.cancelled": "cancelled", RETRIED: "retried", "tool.resolved": "resolved"}


def last_operation(rt: Runtime, run_id: str) -> Operation | None:
    """The latest cancel, retry or resolve of the run since it last needed attention."""
    history = inspect.run_history(rt, run_id)
    stuck_at = max(
        (t["at"] for t in history["transitions"] if t["to"] == RunStatus.NEEDS_ATTENTION),
        default=None,
    )
    latest = None
    for entry in history["audit"]:
        action = _OPERATIONS.get(entry["event"])
        if action is not None and (stuck_at is None or entry["at"] >= stuck_at):
            detail = entry["detail"] if isinstance(entry["detail"], dict) else {}
            latest = Operation(action, entry["actor"], detail)
    return latest


def notify_attention(rt: Runtime, run_id: str) -> None:
    """After the commit that owed the notice: deliver it (or tell a local notifier)."""
    rt.notify(ATTENTION_EVENT, inspect.get_run(rt, run_id))


def had_notice(conn: Connection, run: RunRow, now: Any, rt: Runtime) -> bool:
    """Owe the run's notice again (its state now) if it has one: it needed attention once."""
    if run.status != RunStatus.NEEDS_ATTENTION and not op_rows.ever_needed_attention(conn, run.id):
        return False
    rt.enqueue(conn, ATTENTION_EVENT, run.id, now)
    return True
