"""Benchmark: how throughput scales with worker processes on PostgreSQL, beside its floor.

    python bench/replicas.py [--runs 1500] [--workers 1,2,4,8] [--batch 8] [--postgres URL]

For each worker count, in a fresh schema: N runs of a 3-step pipeline (`replicas_three_steps`,
below) are queued and held, K real `gatehouse worker` processes are started (each claiming up
to `--batch` runs at a time, GATEHOUSE_WORKER_BATCH_SIZE) and, once every one of them is
polling, the whole queue is released in one UPDATE. Reported per count: runs/s (N over release
→ last finish), p50/p95 of claimed→finished (one run's own cost under that concurrency; with a
batch it includes the wait behind the runs claimed before it), the load average before and
after, and the floor: a raw psycopg loop (SKIP LOCKED claim, three step rows, finish: 5 commits
a run) measured just before, with as many processes, on the machine as it is now, with the
ratio of the two. DESIGN.md's idle-machine floor (~450 / 760 / 1,100 runs/s) is shown beside.

The target (issue 19): at least 50 % of the floor at every count, and still rising at 4
workers (more runs/s than at 2). The last line says whether it was met.

Processes rather than threads: a worker executes one run at a time on its own pool, and threads
in one process would share its GIL; K processes are what a deployment with K workers runs.
Run by hand; not a test. The machine is shared: note the load average beside the numbers.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import create_engine, text

from pipelines import Context, pipeline

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FLOOR = {1: 450, 2: 760, 4: 1100}  # DESIGN.md: raw psycopg, SKIP LOCKED, 5 commits a run


class Job(BaseModel):
    n: int


def _double(n: int) -> int:
    return n * 2


@pipeline("replicas_three_steps", input=Job)
def replicas_three_steps(ctx: Context, job: Job) -> dict[str, Any]:
    a = ctx.step("one", _double, job.n)
    b = ctx.step("two", _double, a)
    return {"n": ctx.step("three", _double, b)}


def _schema_url(base: str, schema: str) -> str:
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{schema}"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _floor_worker(dsn: str, schema: str) -> None:
    """The DESIGN.md floor's loop: claim with SKIP LOCKED, three step rows, finish; 5 commits."""
    import psycopg

    with psycopg.connect(dsn, options=f"-csearch_path={schema}") as conn:
        while True:
            with conn.transaction():
                row = conn.execute(
                    "SELECT id FROM floor_runs WHERE status = 'queued' ORDER BY id LIMIT 1 "
                    "FOR UPDATE SKIP LOCKED"
                ).fetchone()
                if row is None:
                    return
                conn.execute(
                    "UPDATE floor_runs SET status = 'running', started = clock_timestamp() "
                    "WHERE id = %s",
                    row,
                )
            for step in range(3):
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO floor_steps (run_id, step, output) VALUES (%s, %s, %s)",
                        (row[0], step, '{"n": 1}'),
                    )
            with conn.transaction():
                conn.execute(
                    "UPDATE floor_runs SET status = 'succeeded', finished = clock_timestamp() "
                    "WHERE id = %s",
                    row,
                )


def measure_floor(base_url: str, runs: int, workers: int) -> float:
    """Runs/s of the raw floor with `workers` processes, measured now (same machine, same load)."""
    import multiprocessing

    dsn = base_url.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
    schema = f"bench_floor_{secrets.token_hex(4)}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(text(f'SET search_path = "{schema}"'))
        conn.execute(
            text(
                "CREATE TABLE floor_runs (id serial PRIMARY KEY, status text NOT NULL, "
                "started timestamptz, finished timestamptz)"
            )
        )
        conn.execute(text("CREATE INDEX ON floor_runs (status, id)"))
        conn.execute(
            text(
                "CREATE TABLE floor_steps (run_id int, step int, output jsonb, PRIMARY KEY (run_id, step))"
            )
        )
        conn.execute(
            text("INSERT INTO floor_runs (status) SELECT 'queued' FROM generate_series(1, :n)"),
            {"n": runs},
        )
    try:
        procs = [
            multiprocessing.Process(target=_floor_worker, args=(dsn, schema))
            for _ in range(workers)
        ]
        began = time.perf_counter()
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        return runs / (time.perf_counter() - began)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def measure(base_url: str, runs: int, workers: int, poll: float, batch: int) -> dict[str, Any]:
    from pipelines import Gatehouse
    from storage.db import Database

    schema = f"bench_replicas_{secrets.token_hex(4)}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = _schema_url(base_url, schema)
    procs: list[subprocess.Popen[bytes]] = []
    logs = Path(tempfile.mkdtemp(prefix="gatehouse-replicas-"))
    try:
        db = Database(url)
        db.upgrade()
        gh = Gatehouse(db)
        for n in range(runs):
            gh.trigger("replicas_three_steps", {"n": n}, run_here=False)
        with db.transaction() as conn:  # held until every worker polls
            conn.execute(text("UPDATE runs SET status = 'waiting'"))

        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "SLACK_"))}
        env.update(
            GATEHOUSE_DATABASE_URL=url,
            GATEHOUSE_PIPELINES="replicas",
            GATEHOUSE_LOG_LEVEL="warning",
            GATEHOUSE_WORKER_BATCH_SIZE=str(batch),
            PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "bench"), str(REPO_ROOT)]),
        )
        for i in range(workers):
            with (logs / f"worker-{i}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bot.cli", "worker", "--poll", str(poll)],
                        cwd=REPO_ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + 120
        while not all(
            "polling every" in (logs / f"worker-{i}.log").read_text() for i in range(workers)
        ):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise SystemExit(f"a worker did not start; logs in {logs}")
            time.sleep(0.05)

        load_before = os.getloadavg()[0]
        released = datetime.now(UTC)
        with db.transaction() as conn:
            conn.execute(text("UPDATE runs SET status = 'queued'"))
        while True:
            with db.transaction() as conn:
                left = conn.execute(
                    text("SELECT count(*) FROM runs WHERE status <> 'succeeded'")
                ).scalar_one()
            if left == 0:
                break
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a worker died; logs in {logs}")
            time.sleep(0.05)
        load_after = os.getloadavg()[0]
        with db.transaction() as conn:
            rows = conn.execute(text("SELECT started_at, finished_at FROM runs")).all()
        db.dispose()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    last = max(r.finished_at for r in rows)
    waited = [(r.finished_at - released).total_seconds() * 1000 for r in rows]
    own = [(r.finished_at - r.started_at).total_seconds() * 1000 for r in rows]
    return {
        "workers": workers,
        "runs_per_s": runs / (last - released).total_seconds(),
        "p50_queued": statistics.median(waited),
        "p95_queued": _percentile(waited, 0.95),
        "p50_run": statistics.median(own),
        "p95_run": _percentile(own, 0.95),
        "load": (load_before, load_after),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1500)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--batch", type=int, default=8, help="GATEHOUSE_WORKER_BATCH_SIZE")
    parser.add_argument("--poll", type=float, default=0.01, help="idle poll of each worker")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("GATEHOUSE_TEST_POSTGRES_URL", DEFAULT_URL),
        help="a PostgreSQL URL (each count gets a fresh schema, dropped after)",
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    print(
        f"{args.runs} runs of a 3-step pipeline per count, batch {args.batch}, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'workers':>7} {'runs/s':>7} {'floor now':>9} {'ratio':>6} {'≥50%':>5} {'DESIGN':>7} "
        f"{'p50 run':>8} {'p95 run':>8}  load (before → after)"
    )
    rates: dict[int, float] = {}
    ratios: dict[int, float] = {}
    for count in counts:
        floor_now = measure_floor(args.postgres, args.runs * 2, count)
        r = measure(args.postgres, args.runs, count, args.poll, args.batch)
        rate = rates[count] = r["runs_per_s"]
        ratio = ratios[count] = rate / floor_now
        print(
            f"{count:>7} {rate:>7.0f} {floor_now:>9.0f} {ratio:>5.0%} "
            f"{'yes' if ratio >= 0.5 else 'no':>5} {FLOOR.get(count) or '-':>7} "
            f"{r['p50_run']:>6.1f}ms {r['p95_run']:>6.1f}ms  "
            f"{r['load'][0]:.2f} → {r['load'][1]:.2f}",
            flush=True,
        )
    print(verdict(rates, ratios))


def verdict(rates: dict[int, float], ratios: dict[int, float]) -> str:
    """The target's verdict: ≥ 50 % of the floor at every count, and rising at 4 (over 2)."""
    misses = [
        f"{count} workers at {ratio:.0%} of the floor"
        for count, ratio in ratios.items()
        if ratio < 0.5
    ]
    if 4 in rates and 2 in rates and rates[4] <= rates[2]:
        misses.append(f"not rising at 4 ({rates[4]:.0f} runs/s ≤ {rates[2]:.0f} at 2)")
    elif not (4 in rates and 2 in rates):
        misses.append("rising at 4 not measured (needs 2 and 4 in --workers)")
    if misses:
        return "target MISSED: " + "; ".join(misses)
    return "target met: ≥ 50 % of the floor at every count, and still rising at 4"


if __name__ == "__main__":
    main()
