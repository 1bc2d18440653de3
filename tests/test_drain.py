"""SIGTERM drains: `gatehouse worker` and `gatehouse serve` stop claiming, let the run they are
executing finish or suspend, deliver what it owes, and exit 0 within a bound.

The pipeline below is loaded by the child processes (GATEHOUSE_PIPELINES=tests.test_drain): its
first step writes a marker and waits for a release file, so the test signals mid-run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from pipelines import Context, Gatehouse, StaticDirectory, pipeline, tool
from storage import outbox as outbox_rows
from storage.db import Database
from tests.conftest import GROUPS, REPO_ROOT
from tests.fakes.slack import FakeSlack

DIR_ENV = "DRAIN_TEST_DIR"
EXIT_BOUND = 20.0  # seconds from the release of the step to the process's exit


class Slow(BaseModel):
    tag: str


class Spend(BaseModel):
    amount: int


class Spent(BaseModel):
    ok: bool


def _slow_step(run_tag: str) -> str:
    """Mark that the run is mid-step, then wait (bounded) for the test to release it."""
    folder = Path(os.environ[DIR_ENV])
    (folder / f"started-{run_tag}").touch()
    deadline = time.monotonic() + 30
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return run_tag


@tool(kind="spend", approvers=["@finance-leads"])
def drain_spend(args: Spend, *, idempotency_key: str) -> Spent:
    return Spent(ok=True)


@pipeline("drain_finishes", input=Slow)
def drain_finishes(ctx: Context, inp: Slow) -> dict[str, Any]:
    return {"tag": ctx.step("slow", _slow_step, inp.tag)}


@pipeline("drain_suspends", input=Slow)
def drain_suspends(ctx: Context, inp: Slow) -> dict[str, Any]:
    ctx.step("slow", _slow_step, inp.tag)
    ctx.tool(drain_spend, Spend(amount=500))  # needs approval: the run suspends
    return {"tag": inp.tag}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "drain"
    path.mkdir()
    return path


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Gatehouse]:
    gh = Gatehouse(Database(sqlite_url), directory=StaticDirectory(GROUPS))
    yield gh
    gh.db.dispose()


def child_env(sqlite_url: str, folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "SLACK_"))}
    env.update(
        GATEHOUSE_DATABASE_URL=sqlite_url,
        GATEHOUSE_PIPELINES="tests.test_drain",
        GATEHOUSE_GROUPS=json.dumps(GROUPS),
        GATEHOUSE_LOG_LEVEL="warning",
        GATEHOUSE_WORKER_POLL_SECONDS="0.05",
        PYTHONDONTWRITEBYTECODE="1",
        **{DIR_ENV: str(folder)},
    )
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"{proc.args!r} exited {proc.returncode} before {path.name}:\n{out}\n{err}")
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.01)


def terminate_mid_run(proc: subprocess.Popen[str], folder: Path) -> tuple[int, float, str]:
    """SIGTERM while the step runs, release the step, and time the exit."""
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the signal is taken while the step still runs
    assert proc.poll() is None, "the process exited without finishing its run"
    released = time.monotonic()
    (folder / "release").touch()
    try:
        out, err = proc.communicate(timeout=EXIT_BOUND + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, time.monotonic() - released, out + err


@pytest.mark.parametrize(
    "name, ends", [("drain_finishes", "succeeded"), ("drain_suspends", "waiting")]
)
def test_sigterm_lets_the_worker_finish_or_suspend_its_run_then_exit_0(
    engine: Gatehouse, sqlite_url: str, folder: Path, name: str, ends: str
) -> None:
    current = engine.trigger(name, {"tag": "one"}, run_here=False)
    left = engine.trigger("drain_finishes", {"tag": "two"}, run_here=False)
    worker = start(["worker", "--poll", "0.05"], child_env(sqlite_url, folder))
    wait_for(folder / "started-one", worker)
    code, took, output = terminate_mid_run(worker, folder)
    assert code == 0, output
    assert took < EXIT_BOUND
    assert engine.run(current.id).status == ends
    assert engine.run(left.id).status == "queued"  # it stopped claiming
    assert not (folder / "started-two").exists()
    if ends == "waiting":  # the card it owes waits in the outbox for a delivering process
        with engine.db.transaction() as conn:
            assert outbox_rows.counts(conn) == {"pending": 1}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sigterm_lets_serve_suspend_its_run_post_the_card_once_and_exit_0(
    engine: Gatehouse, sqlite_url: str, folder: Path, fake_slack: FakeSlack
) -> None:
    port = _free_port()
    env = child_env(
        sqlite_url,
        folder,
        SLACK_BOT_TOKEN=fake_slack.token,
        SLACK_SIGNING_SECRET="drain-test-secret",
        SLACK_API_URL=fake_slack.api_url,
        GATEHOUSE_APPROVALS_CHANNEL="C_APPROVALS",
        GATEHOUSE_HTTP_PORT=str(port),
        GATEHOUSE_SERVE_WORKERS="1",
        GATEHOUSE_TRIGGERERS='{"*": ["*"]}',
        GATEHOUSE_OPERATORS='["*"]',
    )
    current = engine.trigger("drain_suspends", {"tag": "one"}, run_here=False)
    left = engine.trigger("drain_finishes", {"tag": "two"}, run_here=False)
    bot = start(["serve"], env)
    try:
        wait_for(folder / "started-one", bot)
        code, took, output = terminate_mid_run(bot, folder)
    finally:
        if bot.poll() is None:
            bot.kill()
    assert code == 0, output
    assert took < EXIT_BOUND
    run = engine.run(current.id)
    assert run.status == "waiting"
    assert engine.run(left.id).status == "queued"
    [card] = fake_slack.messages("C_APPROVALS")
    assert run.waiting_for[0] in json.dumps(card)
    with engine.db.transaction() as conn:
        assert outbox_rows.counts(conn) == {"delivered": 1}
