"""SQLite's sightings are written by one background thread, whatever is queued in one transaction
(bench/ack_load.py: one commit per request was a fifth of the bot's interpreter under load): each
still lands, in order, and a row left expired by an earlier process takes the new window."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from pipelines import Gatehouse
from pipelines.replays import SIGNATURE_WINDOW, ReplayGuard, forget_process_sightings
from pipelines.runtime import Runtime
from storage.db import Database
from storage.replays import seen_table, signature_digest
from tests.fakes.clock import FakeClock


@pytest.fixture
def rt(sqlite_url: str) -> Runtime:
    forget_process_sightings()
    return Gatehouse(Database(sqlite_url), clock=FakeClock()).rt


def rows(rt: Runtime) -> dict[str, datetime]:
    with rt.db.connection() as conn:
        found = conn.execute(select(seen_table.c.digest, seen_table.c.expires_at)).all()
    return {digest: expires_at for digest, expires_at in found}


def test_sightings_taken_while_the_writer_is_busy_land_together_and_in_order(rt: Runtime) -> None:
    guard = ReplayGuard(rt, "slack")
    writer = guard._memory._writer  # type: ignore[union-attr]
    busy, release = threading.Event(), threading.Event()
    writer.submit(lambda: (busy.set(), release.wait(10)))
    assert busy.wait(10)
    now = rt.clock.now()
    for n in range(50):
        assert guard.first_time(f"v0={n}", now)
    guard.forget("v0=7")  # refused after it was recorded: queued after its own sighting
    assert rows(rt) == {}  # all of it still queued behind the busy writer
    release.set()
    guard.flush()
    written = rows(rt)
    assert len(written) == 49
    assert signature_digest("v0=7") not in written
    assert signature_digest("v0=8") in written


def test_a_row_an_earlier_process_left_expired_takes_the_new_window(rt: Runtime) -> None:
    guard = ReplayGuard(rt, "slack")
    then = rt.clock.now()
    assert guard.first_time("v0=again", then)
    guard.flush()
    rt.clock.advance(SIGNATURE_WINDOW + timedelta(minutes=1))  # type: ignore[attr-defined]
    forget_process_sightings()  # a restart: the table is read again, that row is closed
    later = rt.clock.now()
    fresh = ReplayGuard(rt, "slack")
    fresh._pruned_at = later  # no prune in this batch: the upsert itself must renew the row
    assert fresh.first_time("v0=again", later)
    fresh.flush()
    expires = rows(rt)[signature_digest("v0=again")]
    assert expires.replace(tzinfo=None) == (later + SIGNATURE_WINDOW).replace(tzinfo=None)
