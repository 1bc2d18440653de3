"""Error-rate alerts through the fake Slack: the alert message (escaped), quiet while open, the
"recovered" reply in its thread and the update of the original, retries after failed posts,
two bots checking at once, and `gatehouse alerts check` posting like the job."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.serve import build_bot
from bot.slack.alert_cards import alert_blocks
from bot.slack.alerts import AlertsCheck, check_alerts
from pipelines.operations import alerting
from pipelines.operations.alerting import list_alerts
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, settings_for, slack_world
from tests.test_alerts import add_runs, cli_env, gatehouse_cli  # noqa: F401  (fixture)

ALERTS = "C_ALERTS"
MIN = timedelta(minutes=1)
HOSTILE = "<!channel> db down & <@U0BOSS> <https://evil.example|click>"


@pytest.fixture
def world(fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock) -> Iterator[SlackWorld]:
    with slack_world(fake_slack, sqlite_url, clock, alerts_channel=ALERTS) as built:
        yield built


def texts(message: dict[str, Any]) -> str:
    """Every string a person could read in a message: its text and all its blocks."""
    found = [message.get("text", "")]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            found.append(node)

    walk(message.get("blocks", []))
    return "\n".join(found)


def spike(world: SlackWorld, pipeline: str = "ticket_triage", error: str = HOSTILE) -> list[str]:
    now = world.clock.now()
    add_runs(world.gatehouse, pipeline, ["succeeded"] * 100, finished=now - 120 * MIN)
    add_runs(world.gatehouse, pipeline, ["succeeded"] * 8, finished=now - MIN)
    add_runs(
        world.gatehouse, pipeline, ["needs_attention"] * 2, finished=now - MIN / 2, error="Unknown"
    )
    return add_runs(world.gatehouse, pipeline, ["failed"] * 6, finished=now, error=error)


def recover(world: SlackWorld) -> AlertsCheck:
    """Let the failures leave the window, then stay under the threshold for a full window."""
    world.clock.advance(16 * MIN)
    check_alerts(world.bot)
    world.clock.advance(15 * MIN)
    return check_alerts(world.bot)


def test_a_spike_posts_one_escaped_alert_with_rate_baseline_errors_and_runs(
    world: SlackWorld,
) -> None:
    failed = spike(world)
    result = check_alerts(world.bot)
    assert [c.kind for c in result.changes] == ["opened"]
    [message] = world.fake.messages(ALERTS)
    shown = texts(message)
    assert "Error-rate alert: ticket_triage" in shown
    assert "*50%* of the 16 runs that finished in the last 15 min ended in error (8)" in shown
    assert "Baseline: *0%* over the 24 h before (100 runs)" in shown
    # The pipeline's own error text is shown, and pings nobody.
    assert (
        "&lt;!channel&gt; db down &amp; &lt;@U0BOSS&gt; &lt;https://evil.example|click&gt;" in shown
    )
    for raw in ("<!channel>", "<@U0BOSS>", "<https://evil"):
        assert raw not in json.dumps(message)
    assert "&lt;https://evil.example|click&gt;` — 6 runs" in shown
    assert "`Unknown` — 2 runs" in shown
    for run_id in list(reversed(failed))[:5]:
        assert f"`/gatehouse run {run_id}`" in shown
    assert world.fake.rejected == []
    [alert] = list_alerts(world.gatehouse.rt)
    assert (alert.channel, alert.ts) == (ALERTS, message["ts"])
    assert result.posted == [(alert.id, "opened")]


def test_an_open_alert_stays_quiet(world: SlackWorld) -> None:
    spike(world)
    check_alerts(world.bot)
    for _ in range(5):
        world.clock.advance(MIN)
        add_runs(world.gatehouse, "ticket_triage", ["failed"] * 5, finished=world.clock.now())
        result = check_alerts(world.bot)
        assert result.changes == [] and result.posted == []
    assert len(world.fake.calls_to("chat.postMessage")) == 1


def test_recovery_replies_in_the_thread_and_updates_the_alert(world: SlackWorld) -> None:
    spike(world)
    check_alerts(world.bot)
    [original] = world.fake.messages(ALERTS)
    result = recover(world)
    assert [c.kind for c in result.changes] == ["recovered"]
    thread = world.fake.messages(ALERTS, thread_ts=original["ts"])
    assert len(thread) == 2
    reply = thread[1]
    assert "Recovered" in texts(reply) and "Back under 20% for 15 min" in texts(reply)
    updated = world.card(original["ts"])
    assert "Recovered: ticket_triage" in texts(updated)
    assert "Error-rate alert" not in texts(updated)
    assert "&lt;!channel&gt;" in texts(updated) and "<!channel>" not in json.dumps(updated)
    assert len(world.fake.calls_to("chat.update")) == 1
    [alert] = list_alerts(world.gatehouse.rt)
    assert alert.recovered_reply_ts == reply["ts"]
    # Done: later checks send nothing more.
    world.clock.advance(MIN)
    assert check_alerts(world.bot).posted == []
    assert world.fake.rejected == []


def test_a_failed_post_keeps_the_alert_and_the_next_check_posts_it_once(
    world: SlackWorld,
) -> None:
    spike(world)
    world.fake.fail_next("chat.postMessage", "channel_not_found")
    first = check_alerts(world.bot)
    assert [c.kind for c in first.changes] == ["opened"]
    assert first.failed and first.failed[0][1:] == ("opened", "channel_not_found")
    assert world.fake.messages(ALERTS) == []
    [alert] = list_alerts(world.gatehouse.rt)
    assert alert.is_open and alert.ts is None
    world.clock.advance(MIN)
    second = check_alerts(world.bot)
    assert second.changes == [] and second.posted == [(alert.id, "opened")]
    world.clock.advance(MIN)
    check_alerts(world.bot)
    assert len(world.fake.messages(ALERTS)) == 1


def test_a_failed_recovery_reply_is_retried_and_sent_once(world: SlackWorld) -> None:
    spike(world)
    check_alerts(world.bot)
    [original] = world.fake.messages(ALERTS)
    world.fake.fail_next("chat.postMessage", "ratelimited")
    failed = recover(world)
    assert [c.kind for c in failed.changes] == ["recovered"]
    assert failed.failed[0][1] == "recovered"
    assert len(world.fake.messages(ALERTS, thread_ts=original["ts"])) == 1
    world.clock.advance(MIN)
    check_alerts(world.bot)
    world.clock.advance(MIN)
    check_alerts(world.bot)
    assert len(world.fake.messages(ALERTS, thread_ts=original["ts"])) == 2
    assert "Recovered: ticket_triage" in texts(world.card(original["ts"]))


def test_an_alert_recovered_before_it_was_ever_posted_posts_both_messages(
    world: SlackWorld,
) -> None:
    spike(world)
    world.fake.fail_next("chat.postMessage")
    check_alerts(world.bot)  # opened, not posted
    for _ in range(2):  # Slack stays down for the next two checks
        world.fake.fail_next("chat.postMessage")
    world.clock.advance(16 * MIN)
    check_alerts(world.bot)
    world.clock.advance(15 * MIN)
    check_alerts(world.bot)  # recovered, still not posted
    world.clock.advance(MIN)
    result = check_alerts(world.bot)
    [alert] = list_alerts(world.gatehouse.rt)
    assert result.posted == [(alert.id, "opened"), (alert.id, "recovered")]
    [original, reply] = world.fake.messages(ALERTS)
    assert "Recovered: ticket_triage" in texts(original)
    assert reply["thread_ts"] == original["ts"]


def test_two_bots_checking_at_once_post_the_alert_once(
    world: SlackWorld, fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    spike(world)
    other = build_bot(settings_for(fake_slack, sqlite_url, alerts_channel=ALERTS), clock=clock)
    try:
        barrier = threading.Barrier(2)
        results: list[AlertsCheck] = []

        def check(bot: Any) -> None:
            barrier.wait(timeout=10)
            results.append(check_alerts(bot))

        threads = [threading.Thread(target=check, args=(b,)) for b in (world.bot, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(len(r.changes) for r in results) == [0, 1]
        assert sum(len(r.posted) for r in results) == 1
        assert len(world.fake.messages(ALERTS)) == 1
    finally:
        other.shutdown()
        other.gatehouse.db.dispose()


def test_without_an_alerts_channel_nothing_is_posted_until_one_is_set(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> None:
    with slack_world(fake_slack, sqlite_url, clock) as world:
        spike(world)
        result = check_alerts(world.bot)
        assert [c.kind for c in result.changes] == ["opened"]
        assert result.not_posted == "GATEHOUSE_ALERTS_CHANNEL is not set"
        assert fake_slack.calls_to("chat.postMessage") == []
    clock.advance(MIN)
    with slack_world(fake_slack, sqlite_url, clock, alerts_channel=ALERTS) as world:
        result = check_alerts(world.bot)
        assert result.changes == [] and len(result.posted) == 1
        assert len(fake_slack.messages(ALERTS)) == 1


def test_alert_blocks_stay_within_slacks_limits_whatever_the_errors(world: SlackWorld) -> None:
    now = world.clock.now()
    for i, error in enumerate(["&" * 5000, "<" * 3000 + "\nsecond line", "`" * 400 + "x"]):
        add_runs(world.gatehouse, f"p{'x' * 300}", ["failed"] * (5 + i), finished=now, error=error)
    check_alerts(world.bot)
    [message] = world.fake.messages(ALERTS)
    assert world.fake.rejected == []
    [alert] = list_alerts(world.gatehouse.rt)
    assert alert_blocks(alert) == message["blocks"]


def test_cli_check_with_slack_settings_posts_like_the_job(
    cli_env: str,  # noqa: F811
    fake_slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipelines import Gatehouse
    from storage.db import Database

    monkeypatch.setenv("SLACK_BOT_TOKEN", fake_slack.token)
    monkeypatch.setenv("SLACK_API_URL", fake_slack.api_url)
    monkeypatch.setenv("GATEHOUSE_ALERTS_CHANNEL", ALERTS)
    database = Database(cli_env)
    now = Gatehouse(database).rt.clock.now()
    add_runs(Gatehouse(database, clock=FakeClock(now)), "triage", ["failed"] * 10, finished=now)
    database.dispose()

    fake_slack.fail_next("chat.postMessage", "not_in_channel")
    failed = CliRunner().invoke(gatehouse_cli(), ["alerts", "check", "--json"])
    assert failed.exit_code == 1
    [change] = json.loads(failed.stdout)["changes"]
    assert change["change"] == "opened" and change["alert"]["pipeline"] == "triage"
    assert failed.stderr.splitlines() == [
        f"error: alert #{change['alert']['id']} message not posted: not_in_channel "
        "(the alert is kept; the next check posts it)"
    ]
    assert fake_slack.messages(ALERTS) == []

    result = CliRunner().invoke(gatehouse_cli(), ["alerts", "check"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "no alert opened or recovered" in result.stdout
    assert f"posted: alert #{change['alert']['id']} message" in result.stdout
    assert len(fake_slack.messages(ALERTS)) == 1
    assert fake_slack.rejected == []


def test_an_alert_posted_by_a_sender_that_died_before_recording_it_is_found_not_reposted(
    world: SlackWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Crash(BaseException):
        """The process dying between Slack's answer and the commit of the message's ts."""

    def dies(*args: Any, **kwargs: Any) -> bool:
        raise Crash

    spike(world)
    record = alerting.record_message
    monkeypatch.setattr(alerting, "record_message", dies)
    with pytest.raises(Crash):
        check_alerts(world.bot)
    monkeypatch.setattr(alerting, "record_message", record)
    [posted] = world.fake.messages(ALERTS)

    world.clock.advance(MIN)  # the dead sender's claim runs out
    check_alerts(world.bot)
    [alert] = list_alerts(world.gatehouse.rt)
    assert (alert.channel, alert.ts) == (ALERTS, posted["ts"])
    assert len(world.fake.messages(ALERTS)) == 1
    recover(world)  # the reply goes under the message that was found
    assert len(world.fake.messages(ALERTS, thread_ts=posted["ts"])) == 2


def test_an_alert_slack_keeps_refusing_is_still_owed_and_posted_once_the_channel_works(
    world: SlackWorld,
) -> None:
    """Unlike a card, an alert is never given up after a few attempts: nothing later would owe
    it again (its horizon is a week)."""
    spike(world)
    for _ in range(8):
        world.fake.fail_next("chat.postMessage", "not_in_channel")
        assert check_alerts(world.bot).failed
        world.clock.advance(MIN)
    result = check_alerts(world.bot)
    [alert] = list_alerts(world.gatehouse.rt)
    assert result.posted == [(alert.id, "opened")]
    assert len(world.fake.messages(ALERTS)) == 1
