"""/metrics beside the Slack bot, in both modes: a click's ack is timed under its mode, the
approval it decides and the cards the outbox delivers move their histograms."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette

from bot.http.metrics import metrics_routes
from bot.http.observed import MULTIPROC_ENV
from bot.http.server import BackgroundServer
from pipelines import observations
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, in_both_modes, requested_mode, slack_world
from tests.test_metrics import LARGE
from tests.test_metrics_observed import sample, values


@pytest.fixture
def world(
    request: pytest.FixtureRequest,
    fake_slack: FakeSlack,
    sqlite_url: str,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SlackWorld]:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    previous = observations.observer()
    with slack_world(fake_slack, sqlite_url, clock, mode=requested_mode(request)) as built:
        yield built
    observations.install(previous)


def scrape(world: SlackWorld) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    running = BackgroundServer(Starlette(routes=metrics_routes(world.gatehouse))).start()
    try:
        with urllib.request.urlopen(f"{running.url}/metrics", timeout=10) as response:
            return values(response.read().decode())
    finally:
        running.stop()


@in_both_modes
def test_a_clicks_ack_its_decision_and_the_cards_delivered_are_measured(
    world: SlackWorld,
) -> None:
    assert observations.observer().active  # the bot as serve builds it installs the observer
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    [card] = world.approval_cards()
    before = scrape(world)

    response = world.slack.block_action("approval.approve", message=card["ts"], user_id="U_BOB")
    assert response.status == 200
    world.settle()
    assert world.gatehouse.run(run.id).status == "succeeded"
    after = scrape(world)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    other = "socket" if world.mode == "http" else "http"
    assert moved("gatehouse_slack_ack_seconds_count", mode=world.mode) == 1
    assert moved("gatehouse_slack_ack_seconds_count", mode=other) == 0
    assert moved("gatehouse_slack_ack_seconds_bucket", mode=world.mode, le="+Inf") == 1
    decided = {"pipeline": "refund_request", "decision": "approved"}
    assert moved("gatehouse_approval_decision_seconds_count", **decided) == 1
    # the decided card (and the run's outcome on it) went through the outbox
    assert moved("gatehouse_outbox_delivery_lag_seconds_count") >= 1
