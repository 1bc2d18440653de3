"""The engine across real processes: durable replay after an approval, kill -9 at three points
of a run, a rate limit shared by two processes, concurrent decisions and workers draining a
queue on SQLite and PostgreSQL.

Children run `python -m tests.proc_driver …` (the public API, configured from the environment)
with the pipelines of `tests/proc_pipelines.py`, which count every execution and effect in a
ledger file shared by all processes. Synchronisation is by files: a child writes a marker and
blocks (crash points) or waits for a `go` file (races); the test only polls for files to appear.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import tests.proc_pipelines  # noqa: F401  (the test process triggers and inspects p_ runs)
from pipelines import Gatehouse, StaticDirectory
from pipelines.errors import AlreadyDecided
from pipelines.inspect import run_history
from tests.proc_pipelines import LEDGER_ENV, crash_marker, read_ledger

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
GROUPS = {"finance-leads": ["alice", "bob"]}
CHILD_TIMEOUT = 45.0
EXIT_ALREADY_DECIDED = 3


@dataclass
class Result:
    pid: int
    returncode: int
    out: list[dict[str, Any]]
    err: str


@dataclass
class Children:
    """Child processes sharing one database and one ledger; all killed at teardown."""

    url: str
    workdir: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def ledger(self) -> Path:
        return self.workdir / "ledger.jsonl"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "P_"))}
        env.update(
            GATEHOUSE_DATABASE_URL=self.url,
            GATEHOUSE_PIPELINES="tests.proc_pipelines",
            GATEHOUSE_GROUPS=json.dumps(GROUPS),
            GATEHOUSE_LOG_LEVEL="warning",
            PYTHONDONTWRITEBYTECODE="1",
        )
        env[LEDGER_ENV] = str(self.ledger)
        env.update(extra)
        return env

    def start(
        self, *args: str, module: str = "tests.proc_driver", **env: str
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[str], *, expect: int | None = 0) -> Result:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        result = Result(proc.pid, proc.returncode, lines, err)
        if expect is not None:
            assert proc.returncode == expect, (
                f"{proc.args!r} exited {proc.returncode}:\n{out}\n{err}"
            )
        return result

    def run(self, *args: str, expect: int | None = 0, **env: str) -> Result:
        return self.finish(self.start(*args, **env), expect=expect)

    def wait_for_file(self, path: Path, *watched: subprocess.Popen[str]) -> None:
        """Poll for a marker a child writes; fail at once if a watched child exits first."""
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not path.exists():
            for proc in watched:
                if proc.poll() is not None:
                    out, err = proc.communicate()
                    pytest.fail(
                        f"{proc.args!r} exited {proc.returncode} before {path.name}:\n{out}\n{err}"
                    )
            if time.monotonic() > deadline:
                pytest.fail(f"{path} did not appear within {CHILD_TIMEOUT}s")
            time.sleep(0.01)

    def release_together(self, *args_per_child: tuple[str, ...], **env: str) -> list[Result]:
        """Start children that each build their engine, then let them act at the same moment."""
        go = self.workdir / f"go-{time.monotonic_ns()}"
        started = []
        for i, args in enumerate(args_per_child):
            ready = self.workdir / f"ready-{go.name}-{i}"
            proc = self.start(*args, "--ready", str(ready), "--go", str(go), **env)
            started.append((proc, ready))
        for proc, ready in started:
            self.wait_for_file(ready, proc)
        go.touch()
        return [self.finish(proc, expect=None) for proc, _ in started]

    def ledger_entries(self) -> list[dict[str, Any]]:
        return read_ledger(self.ledger)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
                proc.communicate(timeout=10)


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Callable[[str], Children]]:
    made: list[Children] = []

    def make(url: str) -> Children:
        workdir = tmp_path / f"procs-{len(made)}"
        workdir.mkdir()
        made.append(Children(url, workdir))
        return made[-1]

    try:
        yield make
    finally:
        for group in made:
            group.kill_all()


@pytest.fixture
def engines() -> Iterator[Callable[[str], Gatehouse]]:
    """Gatehouse objects in the test process (each its own connection pool), disposed after."""
    made: list[Gatehouse] = []

    def make(url: str) -> Gatehouse:
        made.append(Gatehouse(url, directory=StaticDirectory(GROUPS)))
        return made[-1]

    yield make
    for gh in made:
        gh.db.dispose()


def executions(
    entries: list[dict[str, Any]], run_id: str | None = None
) -> Counter[tuple[str, str]]:
    return Counter((e["what"], e["name"]) for e in entries if run_id is None or e["run"] == run_id)


def pids_of(entries: list[dict[str, Any]], what: str, name: str) -> list[int]:
    return [e["pid"] for e in entries if e["what"] == what and e["name"] == name]


# -- 1. durable replay across processes ---------------------------------------------------


@pytest.mark.parametrize("resumed_by", ["approver", "worker"])
def test_run_waiting_for_approval_resumes_in_another_process_and_runs_each_call_once(
    any_db_url: str,
    children: Callable[[str], Children],
    engines: Callable[[str], Gatehouse],
    resumed_by: str,
) -> None:
    procs = children(any_db_url)
    trigger = procs.run(
        "trigger", "p_approval_flow", '{"tag": "a", "amount": 250}', "--user", "carol"
    )
    [triggered] = trigger.out
    assert triggered["status"] == "waiting"
    [approval_id] = triggered["waiting_for"]

    if resumed_by == "approver":
        approve = procs.run("approve", approval_id, "--user", "alice")
        assert approve.out[0]["status"] == "approved"
        assert approve.out[0]["run"]["status"] == "succeeded"
        finisher = approve.pid
    else:
        approve = procs.run("approve", approval_id, "--user", "alice", "--no-run")
        assert approve.out[0]["status"] == "approved"
        worker = procs.run("worker", "--until-idle")
        assert worker.out[0]["executed"] == 1
        finisher = worker.pid

    entries = procs.ledger_entries()
    assert executions(entries) == {
        ("step", "p_prepare"): 1,
        ("effect", "p_lookup"): 1,
        ("effect", "p_pay"): 1,
        ("step", "p_summarize"): 1,
    }
    assert pids_of(entries, "step", "p_prepare") == [trigger.pid]
    assert pids_of(entries, "effect", "p_lookup") == [trigger.pid]
    assert pids_of(entries, "effect", "p_pay") == [finisher]
    assert pids_of(entries, "step", "p_summarize") == [finisher]

    run = engines(any_db_url).run(triggered["id"])
    assert run.status == "succeeded"
    assert run.output["paid"] == "paid-a-250"
    assert [(c.key, c.status) for c in run.calls] == [
        ("p_prepare#1", "succeeded"),
        ("p_lookup#1", "succeeded"),
        ("p_pay#1", "succeeded"),
        ("p_summarize#1", "succeeded"),
    ]
    assert [(a.status, a.decided_by) for a in run.approvals] == [("approved", "alice")]


# -- 2. kill -9 at three points of a run ----------------------------------------------------

CRASHES = [
    pytest.param("before", False, "sigkill", id="before-tool"),
    pytest.param("inside", False, "sigkill", id="inside-non-idempotent-tool"),
    pytest.param("inside", False, "self", id="inside-non-idempotent-tool-self-kill"),
    pytest.param("after", False, "sigkill", id="after-tool"),
    pytest.param("inside", True, "sigkill", id="inside-idempotent-tool"),
]


@pytest.mark.parametrize(("point", "idempotent", "how"), CRASHES)
def test_worker_killed_mid_run_never_repeats_an_effect_and_the_next_worker_finishes_right(
    any_db_url: str,
    children: Callable[[str], Children],
    engines: Callable[[str], Gatehouse],
    point: str,
    idempotent: bool,
    how: str,
) -> None:
    procs = children(any_db_url)
    gh = engines(any_db_url)
    run_id = gh.trigger("p_crashable", {"tag": "c", "idempotent": idempotent}, run_here=False).id

    victim = procs.start("worker", "--until-idle", P_CRASH_AT=point, P_CRASH_HOW=how)
    if how == "sigkill":
        procs.wait_for_file(crash_marker(procs.ledger, point, victim.pid), victim)
        os.kill(victim.pid, signal.SIGKILL)
    procs.finish(victim, expect=-signal.SIGKILL)  # also reaps it: its pid is gone now
    assert gh.run(run_id).status == "running"  # still claimed by the dead worker

    rescuer = procs.run("worker", "--until-idle")
    assert rescuer.out[0]["executed"] == 1

    run = gh.run(run_id)
    entries = procs.ledger_entries()
    tool = "p_upsert" if idempotent else "p_send"
    key = f"{run_id}:{tool}#1"
    seen = executions(entries, run_id)
    if point == "before":  # pure steps are recorded with the tool's start, never reached
        assert pids_of(entries, "step", "p_prepare") == [victim.pid, rescuer.pid]
    else:  # recorded with the tool's `started` row, before the crash
        assert pids_of(entries, "step", "p_prepare") == [victim.pid]
    assert seen[("effect", tool)] == 1

    if point == "before":
        assert run.status == "succeeded", run.error
        assert pids_of(entries, "effect", tool) == [rescuer.pid]
        assert seen[("step", "p_checkpoint")] == 1
        assert seen[("step", "p_after")] == 1
    elif point == "inside" and not idempotent:
        assert run.status == "needs_attention"
        assert key in (run.error or ""), run.error
        assert "not idempotent" in (run.error or "")
        assert pids_of(entries, "effect", tool) == [victim.pid]
        assert seen[("step", "p_after")] == 0
        call = next(c for c in run.calls if c.name == tool)
        assert (call.status, call.idempotency_key) == ("outcome_unknown", key)
    elif point == "inside":
        assert run.status == "succeeded", run.error
        attempts = [e for e in entries if e["what"] == "attempt"]
        assert [(e["key"], e["pid"]) for e in attempts] == [
            (key, victim.pid),
            (key, rescuer.pid),
        ]
        assert pids_of(entries, "effect", tool) == [victim.pid]  # deduplicated by its key
        assert seen[("step", "p_after")] == 1
        audit = [a["event"] for a in run_history(gh.rt, run_id)["audit"]]
        assert audit.count("tool.retried") == 1
    else:  # after
        assert run.status == "succeeded", run.error
        assert pids_of(entries, "effect", tool) == [victim.pid]  # not run again
        assert pids_of(entries, "step", "p_after") == [rescuer.pid]
        assert run.output["receipt"] == "sent-c"
        call = next(c for c in run.calls if c.name == tool)
        assert call.output["pid"] == victim.pid  # the replay returned the recorded result


def test_worker_killed_between_steps_replays_only_the_steps_after_the_last_boundary(
    any_db_url: str, children: Callable[[str], Children], engines: Callable[[str], Gatehouse]
) -> None:
    """Pure steps are not committed on their own: a kill -9 between two steps leaves the record
    as the last durable boundary (the tool's start and outcome) wrote it, and the next worker
    re-runs only the deterministic steps after it, to the output an unbroken run has; the
    write before them is not repeated."""
    procs = children(any_db_url)
    gh = engines(any_db_url)
    run_id = gh.trigger("p_steps_after_a_tool", {"tag": "k"}, run_here=False).id

    victim = procs.start("worker", "--until-idle", P_CRASH_AT="between")
    procs.wait_for_file(crash_marker(procs.ledger, "between", victim.pid), victim)
    os.kill(victim.pid, signal.SIGKILL)
    procs.finish(victim, expect=-signal.SIGKILL)
    crashed = gh.run(run_id)
    assert crashed.status == "running"
    # p_prepare went with the tool's `started` row; p_middle ran but waited for a boundary.
    assert [(c.key, c.status) for c in crashed.calls] == [
        ("p_prepare#1", "succeeded"),
        ("p_record#1", "succeeded"),
    ]

    rescuer = procs.run("worker", "--until-idle")
    assert rescuer.out[0]["executed"] == 1
    run = gh.run(run_id)
    assert run.status == "succeeded", run.error
    assert run.output == {  # what the unbroken run returns
        "prepared": "prepared-k",
        "receipt": "recorded-prepared-k",
        "between": "between-middle-recorded-prepared-k",
    }
    assert [(c.key, c.status) for c in run.calls] == [
        ("p_prepare#1", "succeeded"),
        ("p_record#1", "succeeded"),
        ("p_middle#1", "succeeded"),
        ("p_between#1", "succeeded"),
    ]
    entries = [e for e in procs.ledger_entries() if e["run"] == run_id]
    assert pids_of(entries, "step", "p_prepare") == [victim.pid]
    assert pids_of(entries, "effect", "p_record") == [victim.pid]  # never again
    assert pids_of(entries, "step", "p_middle") == [victim.pid, rescuer.pid]  # re-run, same value
    assert pids_of(entries, "step", "p_between") == [rescuer.pid]


def test_one_worker_finishes_every_run_left_by_several_killed_workers(
    any_db_url: str, children: Callable[[str], Children], engines: Callable[[str], Gatehouse]
) -> None:
    procs = children(any_db_url)
    gh = engines(any_db_url)
    run_ids = [gh.trigger("p_crashable", {"tag": f"o{i}"}, run_here=False).id for i in range(2)]
    victims = []
    for _ in run_ids:  # one at a time, so that each holds exactly one run when it dies
        victim = procs.start("worker", "--until-idle", P_CRASH_AT="after")
        procs.wait_for_file(crash_marker(procs.ledger, "after", victim.pid), victim)
        victims.append(victim)
    for victim in victims:
        os.kill(victim.pid, signal.SIGKILL)
        procs.finish(victim, expect=-signal.SIGKILL)
    assert [gh.run(r).status for r in run_ids] == ["running", "running"]

    rescuer = procs.run("worker", "--until-idle")
    assert rescuer.out[0]["executed"] == 2
    assert [gh.run(r).status for r in run_ids] == ["succeeded", "succeeded"]
    entries = procs.ledger_entries()
    for run_id in run_ids:
        assert executions(entries, run_id)[("effect", "p_send")] == 1
        assert executions(entries, run_id)[("step", "p_after")] == 1


@pytest.mark.skipif(
    importlib.util.find_spec("bot.cli") is None, reason="bot/cli/ (gatehouse worker) is missing"
)
def test_killed_gatehouse_worker_leaves_a_half_sent_message_for_a_human(
    sqlite_url: str, children: Callable[[str], Children], engines: Callable[[str], Gatehouse]
) -> None:
    """The real `gatehouse worker` (polling, as deployed) SIGKILLed inside a non-idempotent
    tool; `gatehouse worker --once` takes the run over and hands it to a human."""
    procs = children(sqlite_url)
    gh = engines(sqlite_url)
    run_id = gh.trigger("p_crashable", {"tag": "g"}, run_here=False).id

    victim = procs.start("worker", "--poll", "0.05", module="bot.cli", P_CRASH_AT="inside")
    procs.wait_for_file(crash_marker(procs.ledger, "inside", victim.pid), victim)
    os.kill(victim.pid, signal.SIGKILL)
    procs.finish(victim, expect=-signal.SIGKILL)

    rescuer = procs.start("worker", "--once", module="bot.cli")
    out, err = rescuer.communicate(timeout=CHILD_TIMEOUT)
    assert rescuer.returncode == 0, out + err
    assert "executed 1 run" in out

    run = gh.run(run_id)
    assert run.status == "needs_attention"
    assert f"{run_id}:p_send#1" in (run.error or "")
    assert pids_of(procs.ledger_entries(), "effect", "p_send") == [victim.pid]


# -- 3. a rate limit shared by two processes ------------------------------------------------


def test_rate_limit_is_shared_by_two_processes_triggering_at_the_same_time(
    any_db_url: str, children: Callable[[str], Children], engines: Callable[[str], Gatehouse]
) -> None:
    procs = children(any_db_url)
    trigger = ("trigger", "p_rate_limited", '{"tag": "r"}', "--user", "carol", "--count", "3")
    results = procs.release_together(trigger, trigger)
    assert [r.returncode for r in results] == [0, 0], [r.err for r in results]
    triggered = [run for r in results for run in r.out]
    assert len(triggered) == 6
    assert Counter(run["status"] for run in triggered) == {"succeeded": 3, "waiting": 3}

    assert executions(procs.ledger_entries()) == {("effect", "p_limited"): 3}
    gh = engines(any_db_url)
    for summary in triggered:
        run = gh.run(summary["id"])
        [call] = run.calls
        expected = "succeeded" if summary["status"] == "succeeded" else "rate_limited"
        assert (run.status, call.status) == (summary["status"], expected)


# -- 4. concurrent decisions and workers ---------------------------------------------------


def _waiting_approval(gh: Gatehouse, tag: str) -> tuple[str, str]:
    """(run id, approval id) of a run triggered here and now waiting for its approval."""
    run = gh.trigger("p_approval_flow", {"tag": tag, "amount": 500}, user="carol")
    assert run.status == "waiting"
    return run.id, run.waiting_for[0]


def test_two_processes_deciding_one_approval_at_once_record_one_decision(
    postgres_url: str,
    children: Callable[[str], Children],
    engines: Callable[[str], Gatehouse],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    procs = children(postgres_url)
    monkeypatch.setenv(LEDGER_ENV, str(procs.ledger))
    gh = engines(postgres_url)
    run_id, approval_id = _waiting_approval(gh, "d")

    results = procs.release_together(
        ("approve", approval_id, "--user", "alice", "--no-run"),
        ("approve", approval_id, "--user", "bob", "--no-run"),
    )
    assert sorted(r.returncode for r in results) == [0, EXIT_ALREADY_DECIDED]
    [winner] = [r for r in results if r.returncode == 0]
    [loser] = [r for r in results if r.returncode == EXIT_ALREADY_DECIDED]
    assert loser.out[0]["error"] == "AlreadyDecided"

    run = gh.run(run_id)
    [approval] = run.approvals
    decided_by = "alice" if winner is results[0] else "bob"
    assert (approval.status, approval.decided_by) == ("approved", decided_by)
    audit = [a["event"] for a in run_history(gh.rt, run_id)["audit"]]
    assert audit.count("approval.approved") == 1
    assert run.status == "queued"  # queued once, for one worker
    assert gh.resume(run_id) is not None
    assert gh.run(run_id).status == "succeeded"
    assert executions(procs.ledger_entries())[("effect", "p_pay")] == 1


def test_racing_engines_decide_each_approval_exactly_once(
    any_db_url: str,
    tmp_path: Path,
    engines: Callable[[str], Gatehouse],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four engines (own pools, own worker ids) in threads, released by a barrier per approval;
    half approve, half reject: each approval gets one decision and three AlreadyDecided."""
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / "ledger.jsonl"))
    setup = engines(any_db_url)
    waiting = dict(_waiting_approval(setup, f"race{i}")[::-1] for i in range(8))
    approval_ids = list(waiting)
    racers = [engines(any_db_url) for _ in range(4)]
    moves = [("alice", True), ("bob", True), ("alice", False), ("bob", False)]
    barrier = threading.Barrier(len(racers))
    outcomes: dict[str, list[tuple[int, str]]] = {aid: [] for aid in approval_ids}
    lock = threading.Lock()

    def race(index: int) -> None:
        gh, (user, approve) = racers[index], moves[index]
        for aid in approval_ids:
            barrier.wait(timeout=CHILD_TIMEOUT)
            try:
                if approve:
                    gh.approve(aid, user=user)
                else:
                    gh.reject(aid, user=user, reason="race")
                result = "won"
            except AlreadyDecided:
                result = "already decided"
            except Exception as exc:  # reported by the assertion below, not lost in a thread
                result = f"{type(exc).__name__}: {exc}"
            with lock:
                outcomes[aid].append((index, result))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(racers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=CHILD_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)

    for aid, results in outcomes.items():
        assert Counter(r for _, r in results) == {"won": 1, "already decided": 3}, aid
        [winner] = [i for i, r in results if r == "won"]
        user, approve = moves[winner]
        run = setup.run(waiting[aid])
        [approval] = run.approvals
        assert (approval.status, approval.decided_by) == (
            "approved" if approve else "rejected",
            user,
        )
        audit = [a["event"] for a in run_history(setup.rt, run.id)["audit"]]
        decisions = [e for e in audit if e in ("approval.approved", "approval.rejected")]
        assert decisions == [f"approval.{approval.status}"]
        assert run.status == "queued"


@pytest.mark.parametrize(
    ("database", "workers"),
    [
        pytest.param("sqlite", 2, id="sqlite-2-workers"),
        pytest.param("postgres", 3, id="postgres-3-workers", marks=pytest.mark.postgres),
    ],
)
def test_worker_processes_drain_a_queue_running_each_run_exactly_once(
    request: pytest.FixtureRequest,
    children: Callable[[str], Children],
    engines: Callable[[str], Gatehouse],
    database: str,
    workers: int,
) -> None:
    url = str(request.getfixturevalue(f"{database}_url"))
    procs = children(url)
    gh = engines(url)
    queued = {gh.trigger("p_counted", {"tag": f"q{i}"}, run_here=False).id for i in range(60)}

    results = procs.release_together(*[("worker", "--until-idle")] * workers)
    assert [r.returncode for r in results] == [0] * workers, [r.err for r in results]
    assert sum(r.out[0]["executed"] for r in results) == 60

    entries = procs.ledger_entries()
    for what, name in (("step", "p_prepare"), ("effect", "p_record")):
        per_run = Counter(e["run"] for e in entries if (e["what"], e["name"]) == (what, name))
        assert set(per_run) == queued
        assert set(per_run.values()) == {1}, [r for r, n in per_run.items() if n > 1]
    finished = gh.runs(pipeline="p_counted", limit=100)
    assert len(finished) == 60
    assert {run.status for run in finished} == {"succeeded"}
