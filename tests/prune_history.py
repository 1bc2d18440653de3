"""Old history for the retention tests, inserted fast with bulk SQL (executemany on SQLite, COPY
on PostgreSQL), not through the engine: finished runs with LLM calls, approvals (some nudged),
human tasks, review items, outbox rows, Slack message refs, spend, and a hash-chained audit
entry per run; plus one old waiting run and one old needs_attention run, whose audit entries
sit in the middle of the old chain."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from storage.audit import audit_table, chain_head, entry_hash
from storage.db import Database

BASE = datetime(2026, 7, 20, 0, 0, 1, tzinfo=UTC)  # ~105 days before the FakeClock's start
STATUSES = ("succeeded", "failed", "rejected", "cancelled", "invalid_input")
PIPELINES = ("old_a", "old_b")


@dataclass(frozen=True)
class History:
    runs: int  # finished, prunable
    waiting_id: str
    attention_id: str
    blocker_position: int  # 1-based position of the waiting run's audit entry among the old ones
    llm_runs: int
    approvals: int
    tasks: int
    spend_rows: int


def run_id(i: int) -> str:
    return f"run_old{i:07d}"


def _bulk(
    conn: Connection, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    if conn.dialect.name == "postgresql":
        raw: Any = conn.connection.driver_connection
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in columns)
        conn.exec_driver_sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", list(rows)
        )


def seed(db: Database, n: int, *, blocker_at: float = 0.6) -> History:
    pg = db.engine.dialect.name == "postgresql"

    def ts(moment: datetime | None) -> Any:
        if moment is None or pg:
            return moment
        return moment.replace(tzinfo=None).isoformat(" ", "microseconds")

    def js(value: Any) -> Any:
        return None if value is None else json.dumps(value)

    def created(i: int) -> datetime:
        return BASE + timedelta(seconds=i * 1.3)

    def finished(i: int) -> datetime:
        return created(i) + timedelta(seconds=(i % 7) + 0.5)

    waiting, attention = "run_oldwaiting", "run_oldattention"
    with db.transaction() as conn:
        runs = [
            (
                run_id(i),
                PIPELINES[i % 2],
                STATUSES[i % len(STATUSES)],
                f'{{"email": "person{i}@example.com"}}',
                f'{{"ok": {i}}}',
                "api",
                ts(created(i)),
                ts(created(i)),
                ts(finished(i)),
                ts(finished(i)),
            )
            for i in range(n)
        ]
        runs.append(
            (waiting, "old_a", "waiting", js({}), None, "api", ts(BASE), ts(BASE), None, ts(BASE))
        )
        runs.append(
            (
                attention,
                "old_b",
                "needs_attention",
                js({}),
                None,
                "api",
                ts(BASE),
                ts(BASE),
                ts(BASE + timedelta(seconds=5)),
                ts(BASE),
            )
        )
        _bulk(
            conn,
            "runs",
            (
                "id",
                "pipeline",
                "status",
                "input",
                "output",
                "trigger",
                "created_at",
                "started_at",
                "finished_at",
                "updated_at",
            ),
            runs,
        )
        llm = [i for i in range(n) if i % 4 == 0]
        _bulk(
            conn,
            "calls",
            (
                "id",
                "run_id",
                "seq",
                "key",
                "kind",
                "name",
                "status",
                "input",
                "output",
                "started_at",
                "finished_at",
                "meta",
            ),
            (
                (
                    f"call_old{i:07d}",
                    run_id(i),
                    0,
                    "classify#0",
                    "llm",
                    "classify",
                    "succeeded",
                    js({"prompt": f"about person{i}"}),
                    js({"label": "a"}),
                    ts(created(i)),
                    ts(created(i)),
                    js(
                        {
                            "cost_usd": 0.25,
                            "prompt_tokens": 10,
                            "completion_tokens": 5,
                            "model": "m",
                        }
                    ),
                )
                for i in llm
            ),
        )
        decided = [i for i in range(n) if i % 50 == 1]
        approval_status = ("approved", "rejected", "expired")
        _bulk(
            conn,
            "approvals",
            (
                "id",
                "run_id",
                "call_id",
                "call_key",
                "tool",
                "tool_kind",
                "args",
                "four_eyes",
                "status",
                "requested_at",
                "decided_by",
                "decided_at",
            ),
            (
                (
                    f"apr_old{i:07d}",
                    run_id(i),
                    f"call_apr{i:07d}",
                    "pay#1",
                    "pay",
                    "spend",
                    js({"to": f"person{i}"}),
                    bool(i % 2) if pg else i % 2,
                    approval_status[i % 3],
                    ts(created(i) + timedelta(seconds=0.1)),
                    None if i % 3 == 2 else "alice",
                    None if i % 3 == 2 else ts(created(i) + timedelta(seconds=0.1 + i % 11)),
                )
                for i in decided
            ),
        )
        _bulk(
            conn,
            "approval_nudges",
            ("approval_id", "remind_at"),
            ((f"apr_old{i:07d}", ts(created(i))) for i in decided if i % 100 == 1),
        )
        tasks = [i for i in range(n) if i % 40 == 3]
        _bulk(
            conn,
            "human_tasks",
            (
                "id",
                "run_id",
                "call_id",
                "call_key",
                "name",
                "question",
                "output_model",
                "status",
                "opened_at",
                "answer",
            ),
            (
                (
                    f"task_old{i:07d}",
                    run_id(i),
                    f"call_task{i:07d}",
                    "ask#2",
                    "ask",
                    f"what about person{i}?",
                    "Answer",
                    "answered",
                    ts(created(i)),
                    js({"v": i}),
                )
                for i in tasks
            ),
        )
        week = conn.exec_driver_sql(
            "INSERT INTO review_weeks (week_start, picked_at, status) VALUES "
            + ("(%s, %s, 'posted') RETURNING id" if pg else "(?, ?, 'posted') RETURNING id"),
            (ts(BASE), ts(BASE)),
        ).scalar_one()
        _bulk(
            conn,
            "review_items",
            ("week_id", "position", "run_id", "verdict"),
            ((week, p, run_id(p * 7), "flagged") for p in range(1, 21)),
        )
        _bulk(
            conn,
            "outbox",
            ("event", "subject_id", "created_at", "status", "attempts", "next_attempt_at"),
            (
                (
                    "approval_decided",
                    f"apr_old{i:07d}",
                    ts(created(i)),
                    "delivered",
                    1,
                    ts(created(i)),
                )
                for i in decided
            ),
        )
        _bulk(
            conn,
            "slack_messages",
            ("kind", "ref_id", "channel", "ts", "posted_at"),
            (("approval", f"apr_old{i:07d}", "C1", f"{i}.0001", ts(created(i))) for i in decided),
        )
        _bulk(
            conn,
            "model_spend",
            (
                "id",
                "pipeline",
                "run_id",
                "call_key",
                "model",
                "at",
                "status",
                "reserved_usd",
                "cost_usd",
            ),
            (
                (
                    f"spend_old{i:07d}",
                    PIPELINES[i % 2],
                    run_id(i),
                    "classify#0",
                    "m",
                    ts(created(i)),
                    "spent",
                    0.25,
                    0.25,
                )
                for i in llm
            ),
        )
        # An audit entry for every fourth old run, chained; the waiting and needs_attention
        # runs' entries in the middle: a prune can cut the chain's prefix only up to them.
        order = [run_id(i) for i in range(0, n, 4)]
        blocker = int(len(order) * blocker_at)
        prev = chain_head(conn)
        entries = []
        order[blocker:blocker] = [waiting, attention]
        for position, rid in enumerate(order):
            at = BASE + timedelta(seconds=position * 1.3 + 10)
            fields = {
                "at": at,
                "event": "run.finished",
                "actor": None,
                "run_id": rid,
                "call_id": None,
                "tool": None,
                "approval_id": None,
                "idempotency_key": None,
                "detail": None,
            }
            digest = entry_hash(**fields, prev_hash=prev)
            entries.append((ts(at), "run.finished", rid, prev, digest, "v1"))
            prev = digest
        before = conn.execute(select(func.count()).select_from(audit_table)).scalar_one()
        _bulk(
            conn,
            "audit_log",
            ("at", "event", "run_id", "prev_hash", "hash", "hash_scheme"),
            entries,
        )
    return History(
        runs=n,
        waiting_id=waiting,
        attention_id=attention,
        blocker_position=int(before) + blocker + 1,
        llm_runs=len(llm),
        approvals=len(decided),
        tasks=len(tasks),
        spend_rows=len(llm),
    )
