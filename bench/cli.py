"""Benchmark: how fast a one-shot `gatehouse` command starts, beside `python -c pass`.

    python bench/cli.py [--repeats 15] [--runs 20]

Times, in subprocesses, `python -c pass` (the floor: the interpreter alone), `gatehouse --help`
and `gatehouse runs` on a small SQLite database (`--runs` runs of the catalog's refund_request,
made first), interleaved so that a change in the machine's load hits all three alike; prints the
median wall time and CPU time of each, its ratio to the floor, and whether it meets its target
(<= 0.35 s for --help, <= 0.6 s for runs). Bytecode is written as an installed package has it
(PYTHONDONTWRITEBYTECODE is dropped for these processes and one warm-up run of each comes first).
`--rss` also reports the idle resident memory of `gatehouse serve` (bench/rss.py). Not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GATEHOUSE = Path(sys.executable).with_name("gatehouse")
CATALOG_MODULE = "pipelines.catalog"
TARGETS = {"gatehouse --help": 0.35, "gatehouse runs": 0.6}


def child_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "SLACK_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["GATEHOUSE_DATABASE_URL"] = database_url
    env["GATEHOUSE_PIPELINES"] = CATALOG_MODULE  # as a deployment has its pipelines registered
    return env


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) for one run; a failing command stops the bench."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def seed(database_url: str, runs: int) -> None:
    """A small database: migrated, with `runs` runs of the catalog's refund_request (made in
    this process, through the public API; some end waiting for an approval, as they would)."""
    sys.path.insert(0, str(ROOT))
    from pipelines import Gatehouse
    from pipelines.config import Settings

    gatehouse = Gatehouse.from_settings(
        Settings(database_url=database_url, pipelines=CATALOG_MODULE, log_level="error")
    )
    try:
        for index in range(runs):
            payload = {"order_id": f"ord_{1001 + index % 3}", "amount": "5", "reason": "bench"}
            gatehouse.trigger("refund_request", payload, user="U_BENCH")
    finally:
        gatehouse.db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--runs", type=int, default=20, help="runs in the small database")
    parser.add_argument("--rss", action="store_true", help="also measure gatehouse serve's RSS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-cli-") as tmp:
        cwd = Path(tmp)
        database_url = f"sqlite:///{cwd / 'bench.db'}"
        env = child_env(database_url)
        seed(database_url, args.runs)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "gatehouse --help": [str(GATEHOUSE), "--help"],
            "gatehouse runs": [str(GATEHOUSE), "runs"],
        }
        for argv in commands.values():  # warm-up: bytecode written, files in the page cache
            timed(argv, env, cwd)
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, argv in commands.items():
                wall, cpu = timed(argv, env, cwd)
                walls[name].append(wall)
                cpus[name].append(cpu)
    floor = statistics.median(walls["python -c pass"])
    print(f"median of {args.repeats} runs each, {os.cpu_count()} cores, {args.runs} runs in the db")
    if floor > 0.05:  # an idle 2-core machine starts python in ~0.02 s
        print(f"note: python -c pass took {floor:.3f}s: the machine is loaded; the CPU column is")
        print("      the steadier figure, and the targets are for wall time on a quiet machine")
    print(f"{'command':<18} {'wall':>8} {'cpu':>8} {'x floor':>8}  target")
    for name in commands:
        wall = statistics.median(walls[name])
        cpu = statistics.median(cpus[name])
        target = TARGETS.get(name)
        verdict = (
            "(the floor)"
            if target is None
            else f"<= {target:.2f} s: {'met' if wall <= target else 'MISSED'}"
        )
        print(f"{name:<18} {wall:>7.3f}s {cpu:>7.3f}s {wall / floor:>7.1f}x  {verdict}")
    if args.rss:
        sys.path.insert(0, str(ROOT / "bench"))
        import rss

        rss.report()


if __name__ == "__main__":
    main()
