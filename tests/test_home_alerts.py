"""App Home lists the open and recent alerts and links every waiting item to its card; a PSI is
shown (App Home, `gatehouse stats` and its `--json`) only where a reference window had data."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli.main import app
from pipelines import Gatehouse
from pipelines.operations.drift import drift_figures, evaluate_drift
from storage.db import Database
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import APPROVALS, SlackWorld, card_texts, slack_world
from tests.test_drift import DAY, HOUR, POLICY, add_runs, inquiries

LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}


@pytest.fixture
def world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, slack_mode: str
) -> Iterator[SlackWorld]:
    with slack_world(fake_slack, sqlite_url, clock, mode=slack_mode) as built:  # type: ignore[arg-type]
        yield built


def _home(world: SlackWorld, user: str = "U_ALICE") -> str:
    response = world.slack.app_home_opened(user_id=user)
    assert response.status == 200
    world.settle()
    home = world.fake.home(user)
    assert home is not None
    return card_texts(home["blocks"])


def _drifted(gatehouse: Gatehouse, clock: FakeClock) -> None:
    """An input-drift alert on d_route: half eu before, 90% eu in the last week."""
    now = clock.now()
    add_runs(
        gatehouse, "d_route", 280, at=now - 8 * DAY, spacing=2 * HOUR, input=inquiries(0.5, 280)
    )
    add_runs(
        gatehouse, "d_route", 70, at=now - 10 * HOUR, spacing=2 * HOUR, input=inquiries(0.9, 70)
    )
    [change] = evaluate_drift(gatehouse.rt, POLICY)
    assert change.kind == "opened"


def _new_pipeline_only(gatehouse: Gatehouse, clock: FakeClock) -> None:
    """d_route has runs in the last week only: nothing earlier to compare them with."""
    add_runs(
        gatehouse,
        "d_route",
        70,
        at=clock.now() - 10 * HOUR,
        spacing=2 * HOUR,
        input=inquiries(0.9, 70),
    )
    assert evaluate_drift(gatehouse.rt, POLICY) == []


# -- alerts ----------------------------------------------------------------------------------


def test_app_home_lists_an_open_alert_instead_of_no_alerts(world: SlackWorld) -> None:
    _drifted(world.gatehouse, world.clock)

    shown = _home(world)

    assert "No alerts" not in shown
    assert "Input drift, open: d_route · input.region: PSI 0.88" in shown


# -- links to the cards ------------------------------------------------------------------------


def test_every_waiting_item_on_app_home_links_to_its_card(world: SlackWorld) -> None:
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    assert run.status == "waiting", run.error
    [card] = world.fake.messages(APPROVALS)

    shown = _home(world)

    link = (
        f"https://{world.fake.team_domain}.slack.com/archives/{APPROVALS}/"
        f"p{card['ts'].replace('.', '')}"
    )
    assert f"<{link}|open the card>" in shown
    assert world.fake.calls_to("chat.getPermalink")


# -- PSI only against a reference window -------------------------------------------------------


def test_app_home_shows_no_psi_without_earlier_data_to_compare(world: SlackWorld) -> None:
    _new_pipeline_only(world.gatehouse, world.clock)

    shown = _home(world)

    assert "`d_route` · PSI: no earlier data to compare" in shown
    assert re.search(r"max PSI \d", shown) is None  # no 8 or 9 against nothing


def test_psi_is_still_shown_where_there_is_a_reference_window(
    sqlite_url: str, clock: FakeClock
) -> None:
    db = Database(sqlite_url)
    try:
        gatehouse = Gatehouse(db, clock=clock)
        _drifted(gatehouse, clock)
        figures = drift_figures(gatehouse.rt)["d_route"]
    finally:
        db.dispose()
    assert figures.max_psi == pytest.approx(0.88, abs=0.01)
    assert figures.max_psi_reason is None


def test_stats_cli_and_json_give_no_psi_and_say_why_without_a_reference_window(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str, clock: FakeClock
) -> None:
    db = Database(sqlite_url)
    try:
        _new_pipeline_only(Gatehouse(db, clock=clock), clock)
    finally:
        db.dispose()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)

    as_json = CliRunner().invoke(app, ["stats", "--json"])
    text = CliRunner().invoke(app, ["stats"])

    assert as_json.exit_code == 0, as_json.stdout
    [entry] = [d for d in json.loads(as_json.stdout)["drift"] if d["pipeline"] == "d_route"]
    assert entry["max_psi"] is None and entry["max_psi_field"] is None
    assert entry["max_psi_reason"] == "no earlier data to compare"
    quiet = text.stdout.split("quiet failures")[1]
    [row] = [line for line in quiet.splitlines() if line.startswith("d_route ")]
    assert row.endswith("-  (no earlier data to compare)")


# -- the /gatehouse stats chart --------------------------------------------------------------


def _ephemeral_texts(world: SlackWorld, user: str) -> list[str]:
    return [e["text"] + card_texts(e.get("blocks", [])) for e in world.fake.ephemerals(user)]


def test_stats_chart_goes_only_to_the_askers_dm_not_the_channel(world: SlackWorld) -> None:
    world.fake.invite("C_GENERAL")  # the bot could post there: it still must not, unasked
    world.slack.command("stats", user_id="U_CAROL", channel_id="C_GENERAL")
    world.settle()

    assert world.fake.files("C_GENERAL") == []
    [chart] = world.fake.files("D_CAROL")
    assert chart["bytes"].startswith(b"\x89PNG\r\n\x1a\n")
    replies = _ephemeral_texts(world, "U_CAROL")
    assert any("sent only to you in your DM with Gatehouse" in r for r in replies)
    assert any("*Stats*" in r for r in replies)  # the figures, privately, as before
    assert world.fake.rejected == []


def test_stats_public_shares_the_chart_in_the_channel(world: SlackWorld) -> None:
    world.fake.invite("C_GENERAL")
    world.slack.command("stats public 7d", user_id="U_CAROL", channel_id="C_GENERAL")
    world.settle()

    [chart] = world.fake.files("C_GENERAL")
    assert chart["bytes"].startswith(b"\x89PNG\r\n\x1a\n")
    assert world.fake.files("D_CAROL") == []
    replies = _ephemeral_texts(world, "U_CAROL")
    assert any("shared in this channel" in r for r in replies)
    assert not any("neither a pipeline nor a duration" in r for r in replies)
