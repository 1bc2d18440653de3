"""A signed request is accepted once within its window, on SQLite and PostgreSQL; concurrent
replays (two replicas handed the same request) accept it once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from pipelines.replays import SIGNATURE_WINDOW, ReplayGuard, forget_process_sightings
from pipelines.runtime import Runtime
from storage.replays import seen_table


def _count(rt: Runtime) -> int:
    with rt.db.connection() as conn:
        return int(conn.execute(select(func.count()).select_from(seen_table)).scalar_one())


@pytest.fixture
def rt(any_db_url: str) -> Runtime:
    from pipelines import Gatehouse
    from storage.db import Database
    from tests.fakes.clock import FakeClock

    return Gatehouse(Database(any_db_url), clock=FakeClock()).rt


def test_a_signature_is_accepted_once_within_its_window(rt: Runtime) -> None:
    guard = ReplayGuard(rt, "slack")
    now = rt.clock.now()
    assert guard.first_time("v0=abc", now)
    assert not guard.first_time("v0=abc", now)
    assert guard.first_time("v0=other", now)
    # Another scope is another namespace: a webhook's signature does not shadow Slack's.
    assert ReplayGuard(rt, "webhook:refunds").first_time("v0=abc", now)


def test_the_row_lasts_until_the_signed_timestamp_plus_the_window(rt: Runtime) -> None:
    guard = ReplayGuard(rt, "slack")
    signed_at = rt.clock.now() + timedelta(minutes=2)  # a sender's clock ahead of ours
    assert guard.first_time("v0=abc", signed_at)
    rt.clock.advance(SIGNATURE_WINDOW + timedelta(minutes=1))  # type: ignore[attr-defined]
    assert not guard.first_time("v0=abc", signed_at)  # still within signed_at + window
    rt.clock.advance(timedelta(minutes=2))  # type: ignore[attr-defined]
    # Past it the timestamp check refuses the request; the row may be claimed again.
    assert guard.first_time("v0=abc", signed_at)


def test_expired_rows_are_pruned(rt: Runtime) -> None:
    guard = ReplayGuard(rt, "slack")
    for n in range(5):
        guard.first_time(f"v0={n}", rt.clock.now())
    guard.flush()
    assert _count(rt) == 5
    rt.clock.advance(SIGNATURE_WINDOW + timedelta(minutes=2))  # type: ignore[attr-defined]
    guard.first_time("v0=new", rt.clock.now())
    guard.flush()
    assert _count(rt) == 1


def test_a_restarted_process_still_refuses_a_replay_within_the_window(rt: Runtime) -> None:
    """On SQLite the check is in memory and the row written behind it: a new process reads the
    rows back; on PostgreSQL the row is the check."""
    guard = ReplayGuard(rt, "slack")
    assert guard.first_time("v0=abc", rt.clock.now())
    guard.flush()
    forget_process_sightings()
    again = ReplayGuard(rt, "slack")
    assert not again.first_time("v0=abc", rt.clock.now())
    assert again.first_time("v0=fresh", rt.clock.now())


def test_concurrent_replays_are_accepted_once(rt: Runtime) -> None:
    """Eight threads (eight replicas' request handlers) given the same signature at once."""
    guards = [ReplayGuard(rt, "slack") for _ in range(8)]
    start = threading.Barrier(len(guards))
    accepted: list[bool] = []

    def check(guard: ReplayGuard) -> None:
        start.wait()
        accepted.append(guard.first_time("v0=same", rt.clock.now()))

    threads = [threading.Thread(target=check, args=(g,)) for g in guards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(accepted) == [False] * 7 + [True]
