"""Who answered a person's part of a run before a given call: the people four-eyes keeps from
approving that call (pipelines/four_eyes.py)."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Connection, select

from storage.approvals import tasks_table
from storage.calls import calls_table
from storage.models import TaskStatus


class EarlierAnswer(NamedTuple):
    task_id: str
    call_key: str
    answered_by: str


def answers_before(conn: Connection, run_id: str, call_id: str) -> list[EarlierAnswer]:
    """The human tasks of `run_id` (`ctx.ask_human` and LLM human exits) answered on calls
    recorded before `call_id`, in the run's order. A call with no position (an out-of-band
    reversal) counts every answer of the run: when unsure, more people are kept out."""
    gated = calls_table.alias("gated")
    position = select(gated.c.seq).where(gated.c.id == call_id).scalar_subquery()
    query = (
        select(tasks_table.c.id, tasks_table.c.call_key, tasks_table.c.answered_by)
        .join(calls_table, calls_table.c.id == tasks_table.c.call_id)
        .where(
            tasks_table.c.run_id == run_id,
            tasks_table.c.status == TaskStatus.ANSWERED.value,
            tasks_table.c.answered_by.is_not(None),
            (calls_table.c.seq < position) | position.is_(None),
        )
        .order_by(calls_table.c.seq)
    )
    return [EarlierAnswer(r.id, r.call_key, r.answered_by) for r in conn.execute(query)]
