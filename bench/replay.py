"""Benchmark: `gatehouse replay --since … --check` over 1,000 recorded 3-step runs on SQLite.

    python bench/replay.py [--runs 1000] [--target 10]

Records `--runs` runs of a 3-step pipeline on a temporary SQLite database, then times (1) the
check in-process (`pipelines.replay_check.check_replays`: read the runs and their calls in a few
queries, replay each on today's code) and (2) the command a CI job would run,
`gatehouse replay --since 1d --check`, as a subprocess (start-up and imports included). Prints
runs/s and whether the target (every run checked in under `--target` seconds) is met. Run by
hand; not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from pipelines import Gatehouse, pipeline
from pipelines.logs import configure_logging
from pipelines.replay_check import check_replays
from storage.db import Database

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # the shared steps, also when `gatehouse replay` imports this module

from three_steps import BenchInput, three_steps  # noqa: E402

pipeline("bench_replay_three_steps", input=BenchInput)(three_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--target", type=float, default=10.0, help="seconds for every run")
    options = parser.parse_args()
    configure_logging(level="warning")
    with tempfile.TemporaryDirectory() as workdir:
        url = f"sqlite:///{workdir}/replay.db"
        db = Database(url)
        db.upgrade()
        gatehouse = Gatehouse(db)
        began = time.perf_counter()
        for n in range(options.runs):
            gatehouse.trigger("bench_replay_three_steps", {"n": n})
        recorded = time.perf_counter() - began
        print(f"recorded {options.runs} runs in {recorded:.2f} s")

        since = gatehouse.rt.clock.now() - timedelta(days=1)
        result = check_replays(gatehouse.rt, since=since)
        assert len(result.runs) == options.runs and result.ok, result.summary()
        _report("in-process check", options.runs, result.seconds, options.target)
        db.dispose()

        env = os.environ | {
            "GATEHOUSE_DATABASE_URL": url,
            "GATEHOUSE_PIPELINES": "bench.replay",
            "GATEHOUSE_LOG_LEVEL": "warning",
        }
        command = [sys.executable, "-m", "bot.cli", "replay", "--since", "1d", "--check"]
        cpu_before = _children_cpu()
        began = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - began
        cpu = _children_cpu() - cpu_before
        if done.returncode != 0:
            sys.exit(f"gatehouse replay --check exited {done.returncode}: {done.stderr.strip()}")
        print("  " + "\n  ".join(done.stdout.splitlines()[:2]))
        _report("gatehouse replay --since 1d --check", options.runs, seconds, options.target)
        # On a loaded machine the wall time is mostly waiting for a core: the CPU time is the
        # cost of the command itself (start-up and imports included).
        print(f"  its CPU time (user + system): {cpu:.2f} s")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _report(what: str, runs: int, seconds: float, target: float) -> None:
    verdict = "met" if seconds < target else "NOT met"
    print(
        f"{what}: {runs} runs in {seconds:.2f} s = {runs / seconds:,.0f} runs/s "
        f"(target {runs} in < {target:g} s: {verdict})"
    )


if __name__ == "__main__":
    main()
