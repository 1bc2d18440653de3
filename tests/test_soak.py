"""Fault-injection soak: 3 `gatehouse worker --outbox` processes and 1 `gatehouse serve` on
PostgreSQL run a pipeline with a gated, non-idempotent tool while a random worker is SIGKILLed
every few seconds and the database "restarts" once; then the database, the fake Slack and the
fake payment service must agree that nothing happened twice and nothing was lost.

- Decisions come from a test client as signed Slack requests to the server: approve (sometimes
  two people at once), reject with a reason through the modal's submission, or nothing (the
  approval expires after a few seconds).
- The restart: every child process talks to PostgreSQL through a TCP proxy in this process. It
  is stopped (every connection cut, exactly as a server restart cuts them; new ones refused),
  the children's backends are terminated, and it comes back 1.5 s later. The shared server
  itself is never touched.
- Effects are counted by the effect service (tests/soak_pipelines.py) per idempotency key, every
  attempt, independently of the engine's tables.

Sized by `GATEHOUSE_SOAK_RUNS` (default 60 runs, about 30 s: what `make test` runs) and seeded by
`GATEHOUSE_SOAK_SEED` (printed on failure). The issue's full version, 500 runs in under 5 minutes:

    GATEHOUSE_SOAK_RUNS=500 pytest -m soak tests/test_soak.py -s
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import tests.soak_pipelines  # noqa: F401  (the test process triggers soak_payout runs)
from pipelines import Gatehouse, StaticDirectory
from pipelines.pauses import PipelinePaused
from storage.audit import verify_database
from tests.conftest import POSTGRES_URL, REPO_ROOT
from tests.fakes.slack import FakeSlack, SlackSender
from tests.soak_operations import Operator
from tests.soak_pipelines import EFFECTS_ENV, EXPIRES_ENV

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.soak]

SEED = int(os.environ.get("GATEHOUSE_SOAK_SEED") or secrets.randbelow(1_000_000))
RUNS = int(os.environ.get("GATEHOUSE_SOAK_RUNS") or 60)
WORKERS = 3
SIGNING_SECRET = "soak-signing-secret"
CHANNEL = "C_APPROVALS"
APPROVERS = ("U_ALICE", "U_BOB")
EXPIRES_SECONDS = 6
TERMINAL = {"succeeded", "failed", "rejected", "invalid_input", "needs_attention", "cancelled"}


# -- the pieces around the processes ---------------------------------------------------------


class TcpProxy:
    """Loopback TCP forwarder to PostgreSQL; `stop` cuts every connection like a restart."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._conns -= {src, dst}


class EffectService:
    """The outside world the tool pays through: every attempt recorded, nothing deduplicated."""

    def __init__(self) -> None:
        self.attempts: list[dict[str, Any]] = []
        lock = threading.Lock()
        attempts = self.attempts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    attempts.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def by_key(self) -> Counter[str]:
        return Counter(a["key"] for a in list(self.attempts))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Children:
    """The worker and server processes, their logs in files (a full pipe would block them)."""

    env: dict[str, str]
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    server: subprocess.Popen[bytes] | None = None
    every: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_paths: dict[int, Path] = field(default_factory=dict)
    killed: set[int] = field(default_factory=set)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        path = self.logs / f"{args[0]}-{len(self.every)}.log"
        with path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", *args],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.every.append(proc)
        self.log_paths[proc.pid] = path
        return proc

    def ready(self, proc: subprocess.Popen[bytes]) -> bool:
        return self.ready_pid(proc.pid)

    def ready_pid(self, pid: int) -> bool:
        """The worker has its engine and polls (its first line is out); the server has bound
        its port (it says so once it has)."""
        shown = self.log_paths[pid].read_text(errors="replace")
        return "polling every" in shown or "Gatehouse is serving Slack" in shown

    def count_in_logs(self, event: str) -> int:
        return sum(p.read_text(errors="replace").count(event) for p in self.logs.glob("*.log"))

    def restart_refused(self, chaos: Chaos) -> None:
        """As an orchestrator would: a worker that refused to start because the database was
        down (exit 1, `error: database error`) is started again. Any other exit fails later."""
        for index, proc in enumerate(self.workers):
            if proc.poll() == 1 and "error: database error" in self.log_paths[proc.pid].read_text():
                self.killed.add(proc.pid)  # accounted for: not a crash
                chaos.refused_starts += 1
                self.workers[index] = self.start_worker()

    def start_worker(self) -> subprocess.Popen[bytes]:
        return self.start("worker", "--outbox", "--poll", "0.05")

    def stop_all(self, timeout: float = 30.0) -> dict[int, int | None]:
        """SIGTERM (the drain) everything alive; SIGKILL what does not exit in time."""
        alive = [p for p in self.every if p.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return {p.pid: p.returncode for p in alive}

    def tail(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text_lines = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text_lines))
        return "\n".join(out)


# -- the test client -------------------------------------------------------------------------


@dataclass
class Decider:
    """Watches the approvals channel and clicks on new cards as the run's plan says."""

    slack: FakeSlack
    sender: SlackSender
    plans: dict[str, str]  # approval id → approve | reject | double | expire
    rng: random.Random
    acted: set[str] = field(default_factory=set)
    clicks: list[tuple[str, str, str, int]] = field(
        default_factory=list
    )  # approval, what, who, HTTP
    errors: list[str] = field(default_factory=list)
    _due: list[tuple[float, int, str, str, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _serial: int = 0

    def run(self) -> None:
        seen = (-1, -1)
        while not self._stop.is_set():
            # Look again when the channel changed or a plan was learnt; not otherwise (500 cards
            # are megabytes to copy every 50 ms).
            now_seen = (self.slack.version, len(self.plans))
            changed, seen = now_seen != seen, now_seen
            for message in self.slack.messages(CHANNEL) if changed else []:
                approval_id = _pending_approval_on(message)
                if approval_id is None or approval_id in self.acted:
                    continue
                plan = self.plans.get(approval_id)
                if plan is None:  # the card came before the test learnt the approval's plan
                    continue
                self.acted.add(approval_id)
                self._schedule(approval_id, str(message["ts"]), plan)
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                _, _, approval_id, ts, what, user = heapq.heappop(self._due)
                threading.Thread(
                    target=self._click, args=(approval_id, ts, what, user), daemon=True
                ).start()
            self._stop.wait(0.05)

    def _schedule(self, approval_id: str, ts: str, plan: str) -> None:
        at = time.monotonic() + self.rng.uniform(0.0, 1.5)
        user = self.rng.choice(APPROVERS)
        moves = {
            "approve": [("approve", user)],
            "reject": [("reject", user)],
            "double": [("approve", "U_ALICE"), ("reject", "U_BOB")],
            "expire": [],
            "cancel": [],  # the operator cancels the run (tests/soak_operations.py)
        }[plan]
        for what, who in moves:
            self._serial += 1
            heapq.heappush(self._due, (at, self._serial, approval_id, ts, what, who))

    def _click(self, approval_id: str, ts: str, what: str, user: str) -> None:
        try:
            if what == "approve":  # the button on the card as it is in Slack now
                reply = self.sender.block_action("approval.approve", user_id=user, message=ts)
            else:  # the reject modal's submission, as Slack sends it once a reason is typed
                reply = self.sender.view_submission(
                    "approval.reject_reason",
                    {"reason": {"reason": f"soak says no to {approval_id}"}},
                    user_id=user,
                    private_metadata=approval_id,
                )
            self.clicks.append((approval_id, what, user, reply.status))
        except OSError as exc:
            self.errors.append(f"{what} {approval_id}: {exc}")

    def stop(self) -> None:
        self._stop.set()


def _pending_approval_on(message: dict[str, Any]) -> str | None:
    for block in message.get("blocks", []):
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == "approval.approve":
                return str(element.get("value"))
    return None


# -- the test --------------------------------------------------------------------------------


@dataclass
class Chaos:
    kills: int = 0
    restarts: int = 0
    terminated_backends: int = 0
    refused_starts: int = 0  # workers started while the database was down exit 1 at once


def _sizes(runs: int) -> tuple[float, float]:
    """(seconds of chaos, seconds to wait for everything to settle afterwards)."""
    chaos = max(12.0, runs * 0.3)
    return chaos, 45.0 + runs * 0.1


def run_soak(postgres_url: str, tmp_path: Path, runs: int, seed: int) -> None:
    started = time.monotonic()
    rng = random.Random(seed)
    chaos_seconds, settle_seconds = _sizes(runs)
    app = f"gh_soak_{secrets.token_hex(4)}"
    assert POSTGRES_URL is not None
    admin = create_engine(POSTGRES_URL)
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()
    effects = EffectService()
    slack = FakeSlack().start()
    port = _free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    child_url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    child_url += f"&application_name={app}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "SLACK_"))}
    env.update(
        GATEHOUSE_DATABASE_URL=child_url,
        GATEHOUSE_PIPELINES="tests.soak_pipelines",
        GATEHOUSE_LOG_LEVEL="warning",
        GATEHOUSE_WORKER_POLL_SECONDS="0.05",
        GATEHOUSE_RUN_LEASE_SECONDS="6",
        GATEHOUSE_APPROVALS_CHANNEL=CHANNEL,
        GATEHOUSE_HTTP_PORT=str(port),
        GATEHOUSE_SERVE_WORKERS="0",
        GATEHOUSE_HTTP_RATE_LIMIT="0",
        GATEHOUSE_TRIGGERERS='{"*": ["*"]}',
        GATEHOUSE_OPERATORS='["*"]',
        SLACK_BOT_TOKEN=slack.token,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        PYTHONDONTWRITEBYTECODE="1",
        **{EFFECTS_ENV: effects.url, EXPIRES_ENV: f"{EXPIRES_SECONDS}s"},
    )
    children = Children(env, logs)
    gh = Gatehouse(postgres_url, directory=StaticDirectory({"finance-leads": list(APPROVERS)}))
    plans: dict[str, str] = {}
    sender = SlackSender(f"http://127.0.0.1:{port}/slack/events", SIGNING_SECRET, slack)
    decider = Decider(slack, sender, plans, random.Random(seed + 1))
    operator = Operator(gh, effects.by_key, random.Random(seed + 2))
    chaos = Chaos()
    report: dict[str, Any] = {"seed": seed, "runs": runs}
    try:
        children.server = children.start("serve")
        children.workers = [children.start_worker() for _ in range(WORKERS)]
        _wait_for_health(port, children.server)
        threading.Thread(target=decider.run, daemon=True).start()

        # Trigger over the first 60% of the chaos window, kill throughout, restart at half time.
        run_plans: dict[str, str] = {}
        inputs = []
        for i in range(runs):
            amount = rng.choice([50, 150, 250, 400, 900])
            plan = rng.choices(
                ["approve", "reject", "double", "expire", "cancel"], [50, 18, 10, 12, 10]
            )[0]
            inputs.append((f"s{i}", amount, plan))
        chaos_end = time.monotonic() + chaos_seconds
        trigger_every = chaos_seconds * 0.6 / runs
        next_kill = time.monotonic() + rng.uniform(1.5, 3.5)
        restart_at = time.monotonic() + chaos_seconds * 0.5
        next_trigger = next_learn = time.monotonic()
        pending_inputs = list(inputs)
        pause_at = time.monotonic() + chaos_seconds * 0.3
        operator.plan_pause(pause_at, pause_at + min(2.0, chaos_seconds * 0.1))
        while time.monotonic() < chaos_end or pending_inputs:
            now = time.monotonic()
            if pending_inputs and now >= next_trigger:
                tag, amount, plan = pending_inputs[0]
                try:
                    run = gh.trigger(
                        "soak_payout",
                        {"tag": tag, "amount": amount},
                        user="U_CAROL",
                        run_here=False,
                    )
                except PipelinePaused:  # refused, nothing recorded: made again after the resume
                    operator.counts["trigger_refused_paused"] += 1
                    next_trigger = now + 0.05
                    operator.tick(now)
                    time.sleep(0.01)
                    continue
                pending_inputs.pop(0)
                run_plans[run.id] = plan
                if plan == "cancel":
                    operator.plan_cancel(run.id, now)
                next_trigger += trigger_every
            operator.tick(now)
            if now >= next_kill and now < chaos_end:
                # A worker at work: one still importing (seconds on a loaded machine) is spared.
                ready = [i for i, w in enumerate(children.workers) if children.ready(w)]
                if ready:
                    victim = rng.choice(ready)
                    children.workers[victim].send_signal(signal.SIGKILL)
                    children.workers[victim].wait()
                    children.killed.add(children.workers[victim].pid)
                    chaos.kills += 1
                    children.workers[victim] = children.start_worker()
                next_kill = now + rng.uniform(1.5, 3.5)
            children.restart_refused(chaos)
            if restart_at is not None and now >= restart_at:
                restart_at = None
                _restart_database(proxy, admin, app, chaos)
            if now >= next_learn:
                _learn_plans(gh, run_plans, plans)
                next_learn = now + 0.1
            time.sleep(0.01)

        # Settle: every run finished (the unanswered approvals expire), every card delivered.
        deadline = time.monotonic() + settle_seconds
        while True:
            operator.settle(run_plans)  # resolve what needs attention, retry some cancelled
            _learn_plans(gh, run_plans, plans)
            children.restart_refused(chaos)
            state = _state(gh)
            if state["unsettled_runs"] == 0 and state["outbox_pending"] == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"seed {seed}: not settled after {settle_seconds:.0f}s: {state}\n"
                    + children.tail()
                )
            time.sleep(0.2)
        decider.stop()
        time.sleep(0.3)  # the last clicks' threads finish
        died = {p.pid: p.returncode for p in children.every if p.poll() is not None}
        died = {pid: code for pid, code in died.items() if pid not in children.killed}
        assert not died, f"seed {seed}: children died on their own: {died}\n{children.tail()}"
        exits = children.stop_all()
        drained = {pid: code for pid, code in exits.items() if children.ready_pid(pid)}
        assert set(drained.values()) <= {0}, f"SIGTERM did not drain to exit 0: {drained}"
        report.update(
            chaos=chaos.__dict__,
            exits=sorted(exits.values(), key=str),
            seconds=round(time.monotonic() - started),
            outbox_claims_ended=children.count_in_logs("outbox.claim_ended"),
            outbox_taken_over=children.count_in_logs("outbox.taken_over"),
            runs_reclaimed=children.count_in_logs("run.reclaimed"),
        )
        report["operations"] = dict(operator.counts)
        _check(gh, postgres_url, run_plans, effects, slack, decider, report, operator.cancelled)
        if runs <= 500:  # the bound
            assert report["seconds"] < 300, f"seed {seed}: took {report['seconds']} s"
    finally:
        decider.stop()
        children.stop_all(timeout=10)
        proxy.stop()
        slack.stop()
        effects.close()
        gh.db.dispose()
        admin.dispose()
    print(f"\nsoak report: {json.dumps(report, default=str)}")


def _wait_for_health(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90  # a loaded 2-core machine imports slowly
    while time.monotonic() < deadline:
        assert server.poll() is None, "gatehouse serve exited at start"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    pytest.fail("gatehouse serve did not listen within 90 s")


def _restart_database(proxy: TcpProxy, admin: Any, app: str, chaos: Chaos) -> None:
    """What a restart does to the children: their backends end, then for 1.5 s no connection
    gets through (the proxy is down; connections opened in between are cut with it)."""
    with admin.begin() as conn:
        killed = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :app"
            ),
            {"app": app},
        ).all()
    chaos.terminated_backends += len(killed)
    proxy.stop()
    time.sleep(1.5)
    proxy.start()
    chaos.restarts += 1


def _learn_plans(gh: Gatehouse, run_plans: dict[str, str], plans: dict[str, str]) -> None:
    """Map each new approval to its run's plan (approvals are created by the workers)."""
    with gh.db.transaction() as conn:
        rows = conn.execute(text("SELECT id, run_id FROM approvals")).all()
    for approval_id, run_id in rows:
        if approval_id not in plans and run_id in run_plans:
            plans[approval_id] = run_plans[run_id]


def _state(gh: Gatehouse) -> dict[str, int]:
    done = ", ".join(f"'{status}'" for status in sorted(TERMINAL))
    with gh.db.transaction() as conn:
        unsettled = conn.execute(
            text(f"SELECT count(*) FROM runs WHERE status NOT IN ({done})")
        ).scalar_one()
        pending = conn.execute(
            text("SELECT count(*) FROM outbox WHERE status = 'pending'")
        ).scalar_one()
    return {"unsettled_runs": int(unsettled), "outbox_pending": int(pending)}


def _check(
    gh: Gatehouse,
    url: str,
    run_plans: dict[str, str],
    effects: EffectService,
    slack: FakeSlack,
    decider: Decider,
    report: dict[str, Any],
    cancelled: set[str],
) -> None:
    seed = report["seed"]
    with gh.db.transaction() as conn:
        runs = {
            r.id: r for r in conn.execute(text("SELECT id, status, error, input FROM runs")).all()
        }
        calls = conn.execute(
            text("SELECT run_id, name, status, idempotency_key FROM calls WHERE kind = 'tool'")
        ).all()
        approvals = {
            a.id: a
            for a in conn.execute(text("SELECT id, run_id, status, decided_by FROM approvals"))
        }
        decisions = conn.execute(
            text(
                "SELECT approval_id, event FROM audit_log WHERE event IN "
                "('approval.approved', 'approval.rejected', 'approval.expired', "
                "'approval.cancelled')"
            )
        ).all()
        outbox = dict(
            conn.execute(text("SELECT status, count(*) FROM outbox GROUP BY status")).all()
        )
    problems: list[str] = []

    # 1. Every run ended in a terminal state, or in needs_attention naming the key.
    statuses = Counter(r.status for r in runs.values())
    report["statuses"] = dict(statuses)
    assert len(runs) == len(run_plans)
    for run in runs.values():
        if run.status == "needs_attention":
            if f"{run.id}:soak_pay#1" not in (run.error or ""):
                problems.append(f"{run.id} needs attention without naming its key: {run.error}")
        elif run.status == "cancelled" and run.id not in cancelled:
            problems.append(f"{run.id} ended cancelled, but nobody cancelled it")
        elif run.status not in ("succeeded", "rejected", "cancelled"):
            problems.append(f"{run.id} ended {run.status}: {run.error}")

    # 2. No effect twice; exactly once for every succeeded run.
    attempts = effects.by_key()
    report["effects"] = sum(attempts.values())
    twice = {key: n for key, n in attempts.items() if n > 1}
    if twice:
        problems.append(f"effects repeated: {twice}")
    for run in runs.values():
        key = f"{run.id}:soak_pay#1"
        if run.status == "succeeded" and attempts[key] != 1:
            problems.append(f"{run.id} succeeded with {attempts[key]} effects")
        if run.status == "rejected" and attempts[key] != 0:
            problems.append(f"{run.id} was rejected but paid {attempts[key]} times")
    unknown = set(attempts) - {f"{r}:soak_pay#1" for r in runs}
    if unknown:
        problems.append(f"effects with keys no run has: {sorted(unknown)[:5]}")
    for call in calls:
        # A run cancelled while its tool ran and its worker was killed keeps the truth: started.
        if call.status in ("started",) and runs[call.run_id].status != "cancelled":
            problems.append(f"{call.run_id}: tool call left {call.status}")

    # 3. Every approval decided exactly once, by one audited decision.
    decided = Counter(d.approval_id for d in decisions)
    report["approvals"] = dict(Counter(a.status for a in approvals.values()))
    for approval in approvals.values():
        if approval.status == "pending":
            problems.append(f"approval {approval.id} still pending")
        if decided[approval.id] != 1:
            problems.append(f"approval {approval.id}: {decided[approval.id]} decision entries")
    report["clicks"] = dict(Counter(f"{what}:{status}" for _, what, _, status in decider.clicks))
    if decider.errors:
        problems.append(f"clicks failed to reach the server: {decider.errors[:3]}")

    # 4. One card per approval, posted once (updates allowed), showing the final state.
    posts: dict[str, int] = defaultdict(int)
    for params in slack.calls_to("chat.postMessage"):
        dumped = json.dumps(params)
        for approval_id in approvals:
            if approval_id in dumped:
                posts[approval_id] += 1
    report["cards"] = {
        "posted": sum(posts.values()),
        "updates": len(slack.calls_to("chat.update")),
        "outbox": outbox,
    }
    for approval_id in approvals:
        if posts[approval_id] != 1:
            problems.append(f"approval {approval_id}: {posts[approval_id]} cards posted")
    for message in slack.messages(CHANNEL):
        shown = _pending_approval_on(message)
        if shown is not None and approvals[shown].status != "pending":
            problems.append(f"card of {shown} still shows buttons ({approvals[shown].status})")
    if slack.rejected:
        problems.append(f"Slack refused content: {slack.rejected[:2]}")
    if set(outbox) - {"delivered"}:
        problems.append(f"outbox rows not delivered: {outbox}")

    # 5. The audit chain verifies.
    verdict = verify_database(gh.db)
    report["audit_ok"] = verdict.ok
    if not verdict.ok:
        problems.append(f"audit chain: {verdict}")

    assert not problems, f"seed {seed}: {len(problems)} problems:\n" + "\n".join(problems[:40])


def test_soak_workers_killed_and_database_restarted_lose_nothing_and_repeat_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    run_soak(postgres_url, tmp_path, RUNS, SEED)
