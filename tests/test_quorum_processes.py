"""Quorum votes from two PROCESSES at once on PostgreSQL (replicas sharing one database): the
same person twice counts once, two people release the run exactly once, a rejection racing the
completing approval decides once. Children run `python -m tests.quorum_driver`, each building
its engine and then waiting for a `go` file, so that they decide at the same moment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pipelines import Gatehouse, StaticDirectory
from pipelines.inspect import run_history
from storage.approval_votes import votes_table
from tests import quorum_pipelines
from tests.proc_pipelines import LEDGER_ENV, read_ledger

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parent.parent
GROUPS = {"finance-leads": ["alice", "bob"], "ops": ["olga"]}
CHILD_TIMEOUT = 45.0
ROUNDS = 3


@pytest.fixture
def gh(postgres_url: str) -> Iterator[Gatehouse]:
    quorum_pipelines.PAID.clear()  # what other tests in this worker paid is theirs
    engine = Gatehouse(postgres_url, directory=StaticDirectory(GROUPS))
    yield engine
    engine.db.dispose()


def _env(url: str, ledger: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "P_"))}
    env.update(
        GATEHOUSE_DATABASE_URL=url,
        GATEHOUSE_PIPELINES="tests.quorum_pipelines",
        GATEHOUSE_GROUPS=json.dumps(GROUPS),
        GATEHOUSE_LOG_LEVEL="warning",
        PYTHONDONTWRITEBYTECODE="1",
        **{LEDGER_ENV: str(ledger)},
    )
    return env


def _release_together(url: str, workdir: Path, *decisions: tuple[str, ...]) -> list[dict[str, Any]]:
    """Start one child per decision; once every one is ready, let them all go at once."""
    go = workdir / f"go-{time.monotonic_ns()}"
    started = []
    for i, decision in enumerate(decisions):
        ready = workdir / f"{go.name}-ready-{i}"
        command = [sys.executable, "-m", "tests.quorum_driver", *decision]
        proc = subprocess.Popen(
            [*command, "--ready", str(ready), "--go", str(go)],
            cwd=REPO_ROOT,
            env=_env(url, workdir / "ledger.jsonl"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append((proc, ready))
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT
        for proc, ready in started:
            while not ready.exists():
                if proc.poll() is not None:
                    pytest.fail(f"a child exited {proc.returncode}: {proc.communicate()}")
                if time.monotonic() > deadline:
                    pytest.fail("a child never got ready")
                time.sleep(0.01)
        go.touch()
        results = []
        for proc, _ in started:
            out, err = proc.communicate(timeout=CHILD_TIMEOUT)
            assert proc.returncode in (0, 3), f"exited {proc.returncode}:\n{out}\n{err}"
            [line] = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
            results.append(line)
        return results
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)


def _waiting(gh: Gatehouse) -> tuple[str, str]:
    run = gh.trigger("q_payout", {"amount": 5000}, user="carol")
    assert run.status == "waiting"
    return run.id, run.waiting_for[0]


def _voters(gh: Gatehouse, approval_id: str) -> list[str]:
    with gh.db.transaction() as conn:
        query = select(votes_table.c.voter).where(votes_table.c.approval_id == approval_id)
        return sorted(str(v) for v in conn.execute(query).scalars())


def _decisions(gh: Gatehouse, run_id: str) -> list[str]:
    events = [a["event"] for a in run_history(gh.rt, run_id)["audit"]]
    return [e for e in events if e in ("approval.approved", "approval.rejected")]


def _outcome(result: dict[str, Any]) -> str:
    return str(result.get("error") or result["status"])


def test_two_processes_for_the_same_person_count_one_vote(
    gh: Gatehouse, postgres_url: str, tmp_path: Path
) -> None:
    for _ in range(ROUNDS):
        run_id, approval_id = _waiting(gh)
        results = _release_together(
            postgres_url,
            tmp_path,
            ("approve", approval_id, "--user", "alice"),
            ("approve", approval_id, "--user", "alice"),
        )
        assert sorted(map(_outcome, results)) == ["AlreadyVoted", "pending"]
        assert _voters(gh, approval_id) == ["alice"]
        assert gh.approval(approval_id).status == "pending"
        assert gh.run(run_id).status == "waiting"


def test_two_people_in_two_processes_release_the_run_exactly_once(
    gh: Gatehouse, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / "ledger.jsonl"))
    for _ in range(ROUNDS):
        run_id, approval_id = _waiting(gh)
        results = _release_together(
            postgres_url,
            tmp_path,
            ("approve", approval_id, "--user", "alice"),
            ("approve", approval_id, "--user", "bob"),
        )
        assert sorted(map(_outcome, results)) == ["approved", "pending"]
        assert _voters(gh, approval_id) == ["alice", "bob"]
        assert _decisions(gh, run_id) == ["approval.approved"]
        assert gh.run(run_id).status == "queued"  # queued once, for one worker
        assert gh.resume(run_id) is not None
        assert gh.run(run_id).status == "succeeded"
    paid = [e for e in read_ledger(tmp_path / "ledger.jsonl") if e["name"] == "q_pay"]
    assert len(paid) == ROUNDS  # one payout per run
    assert quorum_pipelines.PAID == [5000] * ROUNDS


def test_a_rejection_racing_the_completing_approval_in_another_process_decides_once(
    gh: Gatehouse, postgres_url: str, tmp_path: Path
) -> None:
    for _ in range(ROUNDS):
        run_id, approval_id = _waiting(gh)
        gh.approve(approval_id, user="alice")
        results = _release_together(
            postgres_url,
            tmp_path,
            ("approve", approval_id, "--user", "bob"),
            ("reject", approval_id, "--user", "olga", "--reason", "no"),
        )
        final = gh.approval(approval_id)
        assert sorted(map(_outcome, results)) == sorted([final.status, "AlreadyDecided"])
        assert _decisions(gh, run_id) == [f"approval.{final.status}"]
        expected = ["alice", "bob"] if final.status == "approved" else ["alice"]
        assert _voters(gh, approval_id) == expected
