"""The audit head posted to the alerts channel, through the fake Slack: once when `serve` starts
its jobs and daily after (one replica a fire), the same head `gatehouse audit head` prints and
`verify --expect-head` accepts; a broken chain posts what broke, not a head; no channel, no post;
a post Slack refuses is logged and does not stop the job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.serve import outbox_sender, start_jobs
from bot.slack.audit_head import JOB, database_label, post_audit_head
from pipelines.ports import SilentNotifier
from storage.audit import ExpectedHead, audit_table, verify_database
from tests import engine_pipelines as ep
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, slack_world
from tests.test_alerts_slack import texts
from tests.test_audit_chain import SMALL, entries
from tests.test_audit_head import delete_last

ALERTS = "C_ALERTS"
FIRE = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


@pytest.fixture
def world(fake_slack: FakeSlack, any_db_url: str, clock: FakeClock) -> Iterator[SlackWorld]:
    with slack_world(fake_slack, any_db_url, clock, alerts_channel=ALERTS) as built:
        # The workload's cards are not what this test reads: keep them out of Slack.
        built.gatehouse.rt.notifier = SilentNotifier()
        yield built


def workload(world: SlackWorld) -> None:
    """Runs that write the audit log without anyone's approval (the world's directory is the
    fake Slack's, not the engine tests' groups)."""
    for user in ("carol", "dave"):
        assert world.gatehouse.trigger("refund_request", SMALL, user=user).status == "succeeded"
    world.gatehouse.trigger("t_credit_and_stamp", {"amount": 2}, user="carol")


def started(world: SlackWorld) -> Any:
    """`serve`'s jobs, as `_serve` starts them; stopped again by the caller."""
    handle = start_jobs(world.bot, world.bot.settings)
    world.settle()
    return handle


def stop(world: SlackWorld, handle: Any) -> None:
    handle.shutdown(wait=True)
    outbox_sender(world.bot).stop()


def head_posts(world: SlackWorld) -> list[dict[str, Any]]:
    return [m for m in world.fake.messages(ALERTS) if "audit" in m.get("text", "")]


def test_serve_posts_the_head_at_start_and_daily_from_one_replica(world: SlackWorld) -> None:
    workload(world)
    head = verify_database(world.gatehouse.db).head
    handle = started(world)
    try:
        [at_start] = head_posts(world)
        shown = texts(at_start)
        assert at_start["text"].startswith("Gatehouse audit head, from the database at ")
        assert f"`{head}`" in shown
        assert f"`gatehouse audit verify --expect-head {head}`" in shown
        assert f"{len(entries(world.gatehouse.db))} entries, every hash recomputed" in shown
        assert world.fake.rejected == []

        job = handle.scheduler.get_job(f"system:{JOB}")
        assert job is not None and str(job.trigger).startswith("cron[")
        world.gatehouse.trigger("t_credit_and_stamp", {"amount": 3}, user="dave")
        job.func(FIRE)
        job.func(FIRE)  # a second replica's fire of the same day: claimed already
    finally:
        stop(world, handle)

    daily = head_posts(world)[1:]
    assert len(daily) == 1
    later = verify_database(world.gatehouse.db).head
    assert f"`{later}`" in texts(daily[0]) and later != head
    assert "Checked at 2026-12-04 08:00:00 UTC" in texts(daily[0])
    # The head posted yesterday still holds today.
    assert verify_database(world.gatehouse.db, expect=ExpectedHead.parse(head)).ok


def test_a_broken_chain_posts_what_broke_instead_of_a_head(world: SlackWorld) -> None:
    workload(world)
    rows = entries(world.gatehouse.db)
    with world.gatehouse.db.transaction() as conn:
        conn.execute(audit_table.delete().where(audit_table.c.id == rows[2].id))

    assert post_audit_head(world.bot, FIRE)

    [post] = head_posts(world)
    assert post["text"].startswith("Gatehouse audit log broken, in the database at ")
    assert f"entry {rows[3].id}" in texts(post) and "deleted or inserted" in texts(post)
    assert "--expect-head" in texts(post)


def test_a_post_slack_refuses_is_logged(world: SlackWorld) -> None:
    world.fake.fail_next("chat.postMessage", "channel_not_found")
    with capture_logs() as logs:
        assert post_audit_head(world.bot, FIRE) is False
    [failed] = [entry for entry in logs if entry["event"] == "audit_head.post_failed"]
    assert failed["channel"] == ALERTS and "channel_not_found" in failed["error"]
    assert post_audit_head(world.bot, FIRE)  # the next one goes out


def test_without_an_alerts_channel_nothing_is_posted_and_it_is_said_once(
    fake_slack: FakeSlack, any_db_url: str, clock: FakeClock
) -> None:
    with slack_world(fake_slack, any_db_url, clock) as world:
        with capture_logs() as logs:
            handle = started(world)
        try:
            assert handle.scheduler.get_job(f"system:{JOB}") is None
        finally:
            stop(world, handle)
        skipped = [entry for entry in logs if entry["event"] == "audit_head.skipped"]
        assert len(skipped) == 1 and "GATEHOUSE_ALERTS_CHANNEL" in skipped[0]["reason"]
        assert not any(
            "audit" in m.get("text", "") for m in fake_slack.calls_to("chat.postMessage")
        )


def test_a_truncated_log_is_caught_against_the_posted_head(world: SlackWorld) -> None:
    workload(world)
    assert post_audit_head(world.bot, FIRE)
    [post] = head_posts(world)
    posted = json.dumps(post).split("--expect-head ")[1].split("`")[0]

    delete_last(world.gatehouse.db, 2)

    result = verify_database(world.gatehouse.db, expect=ExpectedHead.parse(posted))
    assert (result.ok, result.problem) == (False, "truncated")


def test_the_post_names_the_database_without_its_password() -> None:
    label = database_label("postgresql+psycopg://gatehouse:s3cret@db.internal:5432/prod")
    assert label == "postgresql://db.internal:5432/prod"
    assert database_label("sqlite:////srv/gatehouse.db") == "sqlite:////srv/gatehouse.db"
