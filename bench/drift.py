"""Benchmark: the quiet-failure rules at scale — 1,000,000 runs over 35 days in 50 pipelines, one
LLM call each.

    python bench/drift.py [--runs 1000000] [--repeats 7] [--fresh]

Seeds SQLite straight through the driver (runs with a categorical input and output, and one
`ctx.llm` call each as the engine records it: `meta.human_exit`, `meta.confidence`,
`meta.categorical`), then times, as the median of several repeats:

- the minute check (`pipelines.operations.alerts.evaluate`: the error rate, human exits and confidence per
  LLM call) when nothing changes, and when one pipeline's calls spike (its alerts deleted
  between repeats);
- the drift check (`pipelines.operations.drift.evaluate_drift`: the PSI of 4 categorical fields of each of
  the 50 pipelines, 7 days against 28): the first one, which counts 35 days of history; the
  hourly one once every day is counted; and the one that counts a new day;
- the quiet-failure figures `gatehouse stats` and App Home read (`pipelines.operations.drift.drift_figures`).

The seeded file is cached under /tmp (keyed by the seed parameters and the migrations' text).
Run by hand; not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel
from sqlalchemy import delete

from pipelines import Categorical, Context, Gatehouse, pipeline
from pipelines.logs import configure_logging
from pipelines.operations.alerting import AlertPolicy
from pipelines.operations.alerts import evaluate
from pipelines.operations.drift import drift_figures, evaluate_drift
from storage.alerts import alerts_table
from storage.db import MIGRATIONS_DIR, Database
from storage.drift import counts_table, rolled_table

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DAYS = 35
PIPELINES = 50
CACHE_DIR = Path("/tmp/gatehouse-bench")
SPIKING = "pipeline_03"  # its LLM call takes the human exit 60% of the time, last 10 minutes
SPIKE_RUNS = 40
DRIFTING = ("pipeline_01", "pipeline_05")  # their region mix moves in the last 7 days
REGIONS = ["eu", "us", "apac", "latam"]
QUEUES = ["billing", "support", "sales"]
KINDS = ["refund", "question", "bug"]


class Inquiry(BaseModel):
    text: str
    region: Annotated[str, Categorical]
    channel: Literal["email", "chat", "phone"]


class Routed(BaseModel):
    queue: Literal["billing", "support", "sales"]


def _route(ctx: Context, inquiry: Inquiry) -> Routed:
    return Routed(queue="support")


def names() -> list[str]:
    return [f"pipeline_{i:02d}" for i in range(PIPELINES)]


def register() -> None:
    for name in names():
        pipeline(name, input=Inquiry)(_route)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def schema_key() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted(Path(MIGRATIONS_DIR, "versions").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _t(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def seed(runs: int, fresh: bool) -> str:
    path = CACHE_DIR / f"drift-{runs}-{PIPELINES}p-{DAYS}d-{schema_key()}.db"
    if path.exists() and not fresh:
        log(f"reusing {path}")
        return f"sqlite:///{path}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    Database(f"sqlite:///{partial}").upgrade()
    started = time.perf_counter()
    conn = sqlite3.connect(partial, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
        "AND tbl_name IN ('runs', 'calls') AND sql IS NOT NULL"
    ).fetchall()
    for name, _sql in indexes:
        conn.execute(f"DROP INDEX {name}")
    rng = random.Random(11)
    pipelines = names()
    weights = [1 / (rank + 1) ** 0.8 for rank in range(PIPELINES)]
    span = DAYS * 86400.0
    start = NOW - timedelta(days=DAYS)
    recent = NOW - timedelta(days=7)
    offsets = sorted(rng.random() * span for _ in range(runs - SPIKE_RUNS))
    chosen = rng.choices(pipelines, weights=weights, k=len(offsets))
    # The spike: 40 more runs of one pipeline in the last 10 minutes.
    offsets += [span - 600 + 15 * i for i in range(SPIKE_RUNS)]
    chosen += [SPIKING] * SPIKE_RUNS
    run_sql = (
        "INSERT INTO runs (id, pipeline, status, input, output, trigger, created_at, "
        "started_at, finished_at, updated_at) VALUES (?, ?, ?, ?, ?, 'schedule', ?, ?, ?, ?)"
    )
    call_sql = (
        "INSERT INTO calls (id, run_id, seq, key, kind, name, status, input, output, "
        "started_at, finished_at, meta) VALUES (?, ?, 0, 'classify#1', 'llm', 'classify', ?, "
        "'{}', ?, ?, ?, ?)"
    )
    run_rows: list[tuple[Any, ...]] = []
    call_rows: list[tuple[Any, ...]] = []
    conn.execute("BEGIN")
    for n, (offset, name) in enumerate(zip(offsets, chosen, strict=True)):
        created = start + timedelta(seconds=offset)
        spiking = name == SPIKING and created >= NOW - timedelta(minutes=10)
        shifted = name in DRIFTING and created >= recent
        region = rng.choices(REGIONS, [0.7, 0.1, 0.1, 0.1] if shifted else [0.4, 0.3, 0.2, 0.1])[0]
        channel = rng.choice(["email", "chat", "phone"])
        exited = rng.random() < (0.6 if spiking else 0.05)
        confidence = round(min(1.0, max(0.0, rng.gauss(0.85, 0.08))), 3)
        kind = rng.choice(KINDS)
        when = _t(created)
        run_id = f"run_{n:016x}"
        run_rows.append(
            (
                run_id,
                name,
                "succeeded",
                json.dumps({"text": "hello", "region": region, "channel": channel}),
                json.dumps({"queue": rng.choice(QUEUES)}),
                when,
                when,
                when,
                when,
            )
        )
        meta = {"human_exit": exited, "confidence": confidence, "categorical": ["kind"]}
        call_rows.append(
            (
                f"call_{n:016x}",
                run_id,
                "awaiting_human" if exited else "succeeded",
                "null" if exited else json.dumps({"kind": kind, "confidence": confidence}),
                when,
                when,
                json.dumps(meta),
            )
        )
        if len(run_rows) == 50_000:
            conn.executemany(run_sql, run_rows)
            conn.executemany(call_sql, call_rows)
            run_rows.clear()
            call_rows.clear()
    conn.executemany(run_sql, run_rows)
    conn.executemany(call_sql, call_rows)
    conn.execute("COMMIT")
    for _name, index_sql in indexes:
        conn.execute(index_sql)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for suffix in ("-wal", "-shm"):
        Path(str(partial) + suffix).unlink(missing_ok=True)
    partial.rename(path)
    log(f"seeded {runs:,} runs and LLM calls in {time.perf_counter() - started:.1f}s")
    return f"sqlite:///{path}"


def timed(
    name: str, work: Callable[[], Any], repeats: int, before: Callable[[], Any] | None = None
) -> None:
    walls = []
    for _ in range(repeats):
        if before is not None:
            before()
        started = time.perf_counter()
        work()
        walls.append((time.perf_counter() - started) * 1000)
    print(
        f"{name:<60} median {statistics.median(walls):9.1f} ms   "
        f"min {min(walls):9.1f}   max {max(walls):9.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    configure_logging(level="error")
    register()
    url = seed(args.runs, args.fresh)
    database = Database(url)
    rt = Gatehouse(database).rt
    policy = AlertPolicy()

    def clear_alerts() -> None:
        with database.transaction() as conn:
            conn.execute(delete(alerts_table))

    clear_alerts()
    opened = evaluate(rt, policy, now=NOW)
    log(f"the minute check opened: {sorted((c.alert.rule, c.alert.subject) for c in opened)}")
    timed(
        "minute check, steady (its alerts open)",
        lambda: evaluate(rt, policy, now=NOW),
        args.repeats,
    )
    timed(
        "minute check that opens the LLM-call alerts",
        lambda: evaluate(rt, policy, now=NOW),
        args.repeats,
        before=clear_alerts,
    )
    started = time.perf_counter()
    drifted = evaluate_drift(rt, policy, now=NOW)
    log(f"the drift check opened: {sorted(c.alert.subject for c in drifted)}")
    print(
        f"{'first drift check: counting 35 days of history (once)':<60} "
        f"{(time.perf_counter() - started) * 1000:9.1f} ms",
        flush=True,
    )
    timed(
        "hourly drift check, every day counted: 200 fields",
        lambda: evaluate_drift(rt, policy, now=NOW),
        args.repeats,
    )
    yesterday = NOW.replace(hour=0) - timedelta(days=1)

    def forget_yesterday() -> None:
        with database.transaction() as conn:
            conn.execute(delete(counts_table).where(counts_table.c.day == yesterday))
            conn.execute(delete(rolled_table).where(rolled_table.c.day == yesterday))

    timed(
        "drift check that counts a new day",
        lambda: evaluate_drift(rt, policy, now=NOW),
        max(3, args.repeats // 2),
        before=forget_yesterday,
    )
    timed(
        "quiet-failure figures (stats, App Home)", lambda: drift_figures(rt, now=NOW), args.repeats
    )
    database.dispose()


if __name__ == "__main__":
    main()
