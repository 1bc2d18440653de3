"""PostgreSQL going away mid-run costs no run: the worker and the outbox sender wait it out and
carry on, and a run the restart interrupted is replayed from its record with each tool effect
once. The restart is simulated for this test's connections only (`pg_terminate_backend` on the
backends tagged with its application_name), never by stopping the shared server."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import create_engine, text

from pipelines import Context, Gatehouse, StaticDirectory, Worker, pipeline, tool
from pipelines.outbox import OutboxSender
from storage import outbox as outbox_rows
from storage.db import is_disconnect
from tests.conftest import GROUPS, POSTGRES_URL
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier

pytestmark = pytest.mark.postgres

effects: Counter[str] = Counter()
kill_switch: dict[str, Callable[[], None] | None] = {"during_step": None, "during_tool": None}


class Job(BaseModel):
    n: int = 1


class Effect(BaseModel):
    what: str


class Done(BaseModel):
    key: str


def _effect(what: str, idempotency_key: str) -> Done:
    effects[f"{what}:{idempotency_key}"] += 1
    return Done(key=idempotency_key)


@tool(kind="write", approval="never")
def dbr_write_once(args: Effect, *, idempotency_key: str) -> Done:
    return _effect(args.what, idempotency_key)


@tool(kind="write", approval="never", idempotent=True)
def dbr_write_keyed(args: Effect, *, idempotency_key: str) -> Done:
    # Idempotent by its key, as a real API would be: a repeat with the same key changes nothing.
    if effects[f"{args.what}:{idempotency_key}"]:
        return Done(key=idempotency_key)
    done = _effect(args.what, idempotency_key)
    kill = kill_switch["during_tool"]
    if kill is not None:  # the effect happened; the database goes before it is recorded
        kill_switch["during_tool"] = None
        kill()
    return done


def _maybe_kill(n: int) -> int:
    kill = kill_switch["during_step"]
    if kill is not None:
        kill_switch["during_step"] = None
        kill()
    return n


@pipeline("dbr_restart_mid_step", input=Job)
def dbr_restart_mid_step(ctx: Context, job: Job) -> dict[str, Any]:
    ctx.tool(dbr_write_once, Effect(what="before"))
    ctx.step("restart", _maybe_kill, job.n)
    ctx.tool(dbr_write_once, Effect(what="after"))
    return {"n": job.n}


@pipeline("dbr_restart_mid_tool", input=Job)
def dbr_restart_mid_tool(ctx: Context, job: Job) -> dict[str, Any]:
    ctx.tool(dbr_write_keyed, Effect(what="keyed"))
    ctx.tool(dbr_write_once, Effect(what="after"))
    return {"n": job.n}


@pytest.fixture
def tagged_url(postgres_url: str) -> Iterator[tuple[str, Callable[[], None]]]:
    """The test schema's URL with an application_name, and a function that terminates every
    backend with that name (what a restart does to this process's connections)."""
    app = f"gh_dbr_{secrets.token_hex(4)}"
    url = f"{postgres_url}&application_name={app}"
    assert POSTGRES_URL is not None
    admin = create_engine(POSTGRES_URL)
    killed: list[int] = []

    def restart() -> None:
        with admin.begin() as conn:
            pids = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :app"
                ),
                {"app": app},
            ).all()
        killed.append(len(pids))

    effects.clear()
    yield url, restart
    kill_switch.update(during_step=None, during_tool=None)
    admin.dispose()
    assert killed and all(count > 0 for count in killed)  # the restart really cut connections


def run_worker_until(worker: Worker, done: Callable[[], bool], timeout: float = 30.0) -> None:
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if done():
                    break
            except Exception as exc:  # this poll's own connection was cut by the restart
                if not is_disconnect(exc):
                    raise
            time.sleep(0.02)
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


def engine(url: str, notifier: Any = None) -> Gatehouse:
    return Gatehouse(
        url,
        clock=FakeClock(),
        notifier=notifier or RecordingNotifier(),
        directory=StaticDirectory(GROUPS),
    )


def test_a_restart_mid_step_is_waited_out_and_the_run_completes_with_each_effect_once(
    tagged_url: tuple[str, Callable[[], None]],
) -> None:
    url, restart = tagged_url
    gh = engine(url)
    queued = gh.trigger("dbr_restart_mid_step", {"n": 7}, run_here=False)
    kill_switch["during_step"] = restart
    worker = Worker(gh.rt, poll_seconds=0.01, max_backoff=0.2)
    run_worker_until(worker, lambda: gh.run(queued.id).status == "succeeded")
    run = gh.run(queued.id)
    assert run.status == "succeeded" and run.output == {"n": 7}
    assert worker.database_errors >= 1
    assert sorted(effects) == [
        f"after:{queued.id}:dbr_write_once#2",
        f"before:{queued.id}:dbr_write_once#1",
    ]
    assert set(effects.values()) == {1}
    gh.db.dispose()


def test_a_restart_inside_an_idempotent_tool_replays_it_with_its_key_and_the_effect_stays_once(
    tagged_url: tuple[str, Callable[[], None]],
) -> None:
    url, restart = tagged_url
    gh = engine(url)
    queued = gh.trigger("dbr_restart_mid_tool", {}, run_here=False)
    kill_switch["during_tool"] = restart
    worker = Worker(gh.rt, poll_seconds=0.01, max_backoff=0.2)
    run_worker_until(worker, lambda: gh.run(queued.id).status == "succeeded")
    assert gh.run(queued.id).status == "succeeded"
    assert effects == Counter(
        {f"keyed:{queued.id}:dbr_write_keyed#1": 1, f"after:{queued.id}:dbr_write_once#1": 1}
    )
    gh.db.dispose()


def test_the_outbox_sender_waits_out_a_restart_and_delivers_what_was_owed(
    tagged_url: tuple[str, Callable[[], None]],
) -> None:
    url, restart = tagged_url
    delivered = RecordingNotifier()
    bot = engine(url, delivered)
    sender = OutboxSender(bot.rt, poll_seconds=0.02)
    bot.rt.sender = sender
    sender.start()
    try:
        deadline = time.monotonic() + 5
        maker = engine(url)  # a CLI process: owes cards, does not deliver them
        first = maker.trigger("refund_request", _large(), user="alice")
        while len(delivered.events) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        restart()
        second = maker.trigger("refund_request", _large(), user="alice")
        deadline = time.monotonic() + 20
        while len(delivered.events) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sender.stop()
    assert [view.id for _, view in delivered.events] == [
        first.waiting_for[0],
        second.waiting_for[0],
    ]
    with bot.db.transaction() as conn:
        assert outbox_rows.counts(conn) == {"delivered": 2}
    maker.db.dispose()
    bot.db.dispose()


def test_disconnects_are_told_apart_from_statement_errors(
    tagged_url: tuple[str, Callable[[], None]],
) -> None:
    url, restart = tagged_url
    gh = engine(url)
    with gh.db.connection() as conn:
        conn.execute(text("SELECT 1"))
        restart()
        with pytest.raises(Exception) as lost:
            conn.execute(text("SELECT 1"))
    assert is_disconnect(lost.value)
    with gh.db.connection() as conn, pytest.raises(Exception) as wrong:
        conn.execute(text("SELECT * FROM no_such_table"))
    assert not is_disconnect(wrong.value)
    gh.db.dispose()


def _large() -> dict[str, str]:
    return {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}


def test_a_run_interrupted_outside_the_worker_is_taken_back_by_its_own_process_after_its_lease(
    tagged_url: tuple[str, Callable[[], None]],
) -> None:
    """A Slack click or `/gatehouse trigger` executes a run on the bot's pool, under the process's
    worker id; the restart leaves it `running` with nobody executing it. Once its lease is over
    the same process's worker takes it back (no other process needed) and finishes it."""
    url, restart = tagged_url
    gh = engine(url)
    kill_switch["during_step"] = restart
    with pytest.raises(Exception) as lost:
        gh.trigger("dbr_restart_mid_step", {"n": 3})
    assert is_disconnect(lost.value)
    [run] = gh.runs(pipeline="dbr_restart_mid_step")
    assert run.status == "running"
    worker = Worker(gh.rt, poll_seconds=0.01)
    assert worker.run_until_idle() == 0  # still within its lease: it might be executing
    clock = gh.rt.clock
    assert isinstance(clock, FakeClock)
    clock.advance(gh.rt.lease)
    assert worker.run_until_idle() == 1
    assert gh.run(run.id).status == "succeeded"
    assert set(effects.values()) == {1} and len(effects) == 2
    gh.db.dispose()
