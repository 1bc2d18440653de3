"""Exactly-once fires across real processes: several schedulers fire the same list of
(schedule, fire time) pairs at the same moment, and each fire ends with exactly one run —
three processes on PostgreSQL, two on SQLite.

Children run `python -m tests.schedule_driver fire PAIRS` (the engine from the environment,
each on its own fake clock set to every fire time as it comes); they are released together
by a file barrier: each writes a `ready` file, then waits for the `go` file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tests.schedule_pipelines  # noqa: F401  (the test process reads s_ runs)
from pipelines import Gatehouse
from pipelines.operations.schedules import list_fires
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

CHILD_TIMEOUT = 60.0
START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # a Monday


def fire_pairs() -> list[tuple[str, datetime]]:
    """Twelve hourly fires, twelve 10-minute fires and two Monday reports, in time order."""
    pairs = [("s_hourly", START + timedelta(hours=h)) for h in range(12)]
    pairs += [("s_report#2", START + timedelta(minutes=10 * m)) for m in range(12)]
    pairs += [("s_report", START + timedelta(days=7 * w, hours=8)) for w in range(2)]
    return sorted(pairs, key=lambda pair: (pair[1], pair[0]))


def child_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env.update(
        GATEHOUSE_DATABASE_URL=url,
        GATEHOUSE_PIPELINES="tests.schedule_pipelines",
        GATEHOUSE_LOG_LEVEL="warning",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def fire_together(
    url: str, workdir: Path, count: int, procs: list[subprocess.Popen[str]]
) -> list[list[dict[str, Any]]]:
    """Start `count` drivers, wait until each is ready, release them at once; their outputs."""
    pairs = json.dumps([[name, at.isoformat()] for name, at in fire_pairs()])
    go = workdir / "go"
    readies = []
    for number in range(count):
        ready = workdir / f"ready-{number}"
        command = [sys.executable, "-m", "tests.schedule_driver", "fire", pairs]
        command += ["--ready", str(ready), "--go", str(go)]
        procs.append(
            subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=child_env(url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        readies.append(ready)
    deadline = time.monotonic() + CHILD_TIMEOUT
    for proc, ready in zip(procs, readies, strict=True):
        while not ready.exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"a driver exited {proc.returncode} before it was ready:\n{out}{err}")
            assert time.monotonic() < deadline, f"{ready.name} did not appear"
            time.sleep(0.01)
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
        assert proc.returncode == 0, f"a driver exited {proc.returncode}:\n{out}\n{err}"
        outputs.append([json.loads(line) for line in out.splitlines() if line.startswith("{")])
    return outputs


def assert_each_fire_made_exactly_one_run(url: str, outputs: list[list[dict[str, Any]]]) -> None:
    pairs = fire_pairs()
    expected = {(name, at.isoformat()) for name, at in pairs}
    # What the processes said: per fire, one of them fired and every other found it taken.
    for output in outputs:
        assert len(output) == len(pairs)
    said: dict[tuple[str, str], Counter[str]] = {}
    for output in outputs:
        for line in output:
            said.setdefault((line["schedule"], line["fire_time"]), Counter())[line["outcome"]] += 1
    assert set(said) == expected
    for fire_key, outcomes in said.items():
        assert outcomes == {"fired": 1, "taken": len(outputs) - 1}, fire_key

    # What the database holds: one fire row and one queued run per fire, and nothing else.
    gh = Gatehouse(url)
    try:
        fires = list_fires(gh.rt, limit=1000)
        assert sorted((f.schedule, f.fire_time.isoformat()) for f in fires) == sorted(expected)
        runs = [r for r in gh.runs(limit=1000) if r.trigger and r.trigger.startswith("schedule:")]
        assert len(runs) == len(pairs)
        assert {r.id for r in runs} == {f.run_id for f in fires}
        by_schedule = Counter(str(r.trigger) for r in runs)
        assert by_schedule == {
            "schedule:s_hourly": 12,
            "schedule:s_report#2": 12,
            "schedule:s_report": 2,
        }
        fired_by = {line["run_id"] for output in outputs for line in output if line["run_id"]}
        assert fired_by == {r.id for r in runs}
        assert {str(r.status) for r in runs} == {"queued"}
        winners = {f.claimed_by for f in fires}
        assert winners <= {line["worker"] for output in outputs for line in output}
    finally:
        gh.db.dispose()


@pytest.mark.postgres
def test_three_schedulers_on_postgresql_create_exactly_one_run_per_fire(
    postgres_url: str, tmp_path: Path, spawned: list[subprocess.Popen[str]]
) -> None:
    outputs = fire_together(postgres_url, tmp_path, 3, spawned)
    assert_each_fire_made_exactly_one_run(postgres_url, outputs)


def test_two_schedulers_on_sqlite_create_exactly_one_run_per_fire(
    sqlite_url: str, tmp_path: Path, spawned: list[subprocess.Popen[str]]
) -> None:
    outputs = fire_together(sqlite_url, tmp_path, 2, spawned)
    assert_each_fire_made_exactly_one_run(sqlite_url, outputs)
