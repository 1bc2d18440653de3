"""The pipeline pause in Slack, through signed requests (HTTP) and Socket Mode envelopes:
`/gatehouse pause|resume` for operators (refusals audited), a paused pipeline's trigger refused
in Slack, a held run shown as waiting for the resume, and an error-rate alert that paused its
pipeline, with **Resume** and **Keep paused** on its message, updated with who chose what."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.slack.alert_pause_cards import KEEP_PAUSED_ACTION, RESUME_ACTION
from bot.slack.alerts import check_alerts
from storage.audit import audit_table
from tests import pause_pipelines as pz
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, in_both_modes, requested_mode, slack_world
from tests.test_alerts import add_runs

ALERTS = "C_ALERTS"
OPS = "U_OLGA"


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    pz.reset()


@pytest.fixture
def world(
    request: pytest.FixtureRequest, fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock
) -> Iterator[SlackWorld]:
    mode = requested_mode(request)
    with slack_world(
        fake_slack, sqlite_url, clock, mode=mode, operators=[OPS], alerts_channel=ALERTS
    ) as built:
        yield built


def said(world: SlackWorld, user: str) -> str:
    """Everything said privately to `user`: ephemerals' text and blocks."""
    return "\n".join(
        e.get("text", "") + json.dumps(e.get("blocks", [])) for e in world.fake.ephemerals(user)
    )


def audit_of(world: SlackWorld, *events: str) -> list[dict[str, Any]]:
    query = select(audit_table).where(audit_table.c.event.in_(events))
    with world.gatehouse.db.transaction() as conn:
        rows = conn.execute(query.order_by(audit_table.c.id)).all()
    return [{"event": r.event, "actor": r.actor, **(r.detail or {})} for r in rows]


def texts(message: dict[str, Any]) -> str:
    return message.get("text", "") + json.dumps(message.get("blocks", []))


def action_ids(message: dict[str, Any]) -> list[str]:
    return [
        element["action_id"]
        for block in message.get("blocks", [])
        if block["type"] == "actions"
        for element in block["elements"]
    ]


# -- /gatehouse pause | resume ---------------------------------------------------------------------


@in_both_modes
def test_an_operator_pauses_and_resumes_a_pipeline_with_the_slash_command(
    world: SlackWorld,
) -> None:
    world.slack.command("pause pz_flow the CRM is down", user_id=OPS)
    world.settle()
    assert "Paused *pz_flow*: no new runs from any trigger" in said(world, OPS)
    pause = world.gatehouse.pipeline_pause("pz_flow")
    assert pause is not None and (pause.by, pause.reason) == (OPS, "the CRM is down")

    world.slack.command("trigger pz_flow n=2", user_id=OPS)
    world.settle()
    assert "pz_flow is paused by U_OLGA since" in said(world, OPS)
    assert world.gatehouse.runs(pipeline="pz_flow") == []

    world.slack.command("resume pz_flow CRM back", user_id=OPS)
    world.settle()
    assert "Resumed *pz_flow*" in said(world, OPS)
    assert world.gatehouse.pipeline_pause("pz_flow") is None
    assert [
        (e["event"], e["actor"]) for e in audit_of(world, "pipeline.paused", "pipeline.resumed")
    ] == [
        ("pipeline.paused", OPS),
        ("pipeline.resumed", OPS),
    ]


@in_both_modes
def test_a_slash_pause_by_someone_not_an_operator_is_refused_and_audited(
    world: SlackWorld,
) -> None:
    world.slack.command("pause pz_flow because", user_id="U_CAROL")
    world.slack.command("pause pz_flow", user_id=OPS)  # no reason
    world.settle()
    assert ":no_entry: <@U_CAROL> may not pause pz_flow; operators: U_OLGA" in said(
        world, "U_CAROL"
    )
    assert "say why" in said(world, OPS)
    assert world.gatehouse.pipeline_pause("pz_flow") is None
    assert [(r["actor"], r["action"], r["target"]) for r in audit_of(world, "refused")] == [
        ("U_CAROL", "pause", "pz_flow")
    ]


@in_both_modes
def test_a_run_held_by_the_pause_says_so_in_slack(world: SlackWorld) -> None:
    run = world.gatehouse.trigger("pz_flow", {"n": 1}, run_here=False)
    world.gatehouse.pause_pipeline("pz_flow", user=OPS, reason="CRM maintenance")
    world.gatehouse.worker().run_until_idle()

    world.slack.command(f"run {run.id}", user_id="U_ALICE")
    world.settle()
    assert "Waiting: pipeline paused by U_OLGA: CRM maintenance" in said(world, "U_ALICE")
    assert pz.CALLS == []


# -- the alert's buttons ---------------------------------------------------------------------------


def spike(world: SlackWorld, pipeline: str = "pz_flaky") -> None:
    now = world.clock.now()
    add_runs(world.gatehouse, pipeline, ["succeeded"] * 6, finished=now - timedelta(minutes=1))
    add_runs(world.gatehouse, pipeline, ["failed"] * 6, finished=now, error="CRM timeout")


@in_both_modes
def test_an_alert_that_paused_its_pipeline_is_resumed_or_kept_paused_from_its_message(
    world: SlackWorld,
) -> None:
    spike(world)
    check_alerts(world.bot)
    [message] = world.fake.messages(ALERTS)
    assert "Paused pz_flaky* (it pauses on this alert)" in texts(message)
    assert action_ids(message) == [RESUME_ACTION, KEEP_PAUSED_ACTION]

    world.slack.block_action(KEEP_PAUSED_ACTION, message=message["ts"], user_id=OPS)
    world.settle()
    [kept] = world.fake.messages(ALERTS)
    assert "Kept paused by <@U_OLGA>" in texts(kept)
    assert action_ids(kept) == [RESUME_ACTION]  # Resume stays on the message
    assert world.gatehouse.pipeline_pause("pz_flaky") is not None

    world.slack.block_action(RESUME_ACTION, message=message["ts"], user_id="U_CAROL")
    world.settle()
    assert "U_CAROL may not resume pz_flaky" in said(world, "U_CAROL")
    assert world.gatehouse.pipeline_pause("pz_flaky") is not None

    world.slack.block_action(RESUME_ACTION, message=message["ts"], user_id=OPS)
    world.settle()
    [resumed] = world.fake.messages(ALERTS)
    assert "Resumed by <@U_OLGA>" in texts(resumed)
    assert action_ids(resumed) == []
    assert world.gatehouse.pipeline_pause("pz_flaky") is None
    audited = audit_of(world, "pipeline.kept_paused", "pipeline.resumed", "refused")
    assert [(e["event"], e["actor"]) for e in audited] == [
        ("pipeline.kept_paused", OPS),
        ("refused", "U_CAROL"),
        ("pipeline.resumed", OPS),
    ]


def test_an_alert_on_a_pipeline_without_pause_on_has_no_buttons(world: SlackWorld) -> None:
    spike(world, "pz_steady")
    check_alerts(world.bot)
    [message] = world.fake.messages(ALERTS)
    assert action_ids(message) == []
    assert "Paused" not in texts(message)
    assert world.gatehouse.pipeline_pause("pz_steady") is None


def test_the_recovery_update_keeps_who_chose_what(world: SlackWorld) -> None:
    spike(world)
    check_alerts(world.bot)
    [message] = world.fake.messages(ALERTS)
    world.slack.block_action(RESUME_ACTION, message=message["ts"], user_id=OPS)
    world.settle()

    world.clock.advance(timedelta(minutes=16))
    check_alerts(world.bot)
    world.clock.advance(timedelta(minutes=15))
    check_alerts(world.bot)

    recovered = world.card(message["ts"])  # updated in place; "recovered" is in its thread
    assert "Recovered" in texts(recovered)
    assert "Resumed by <@U_OLGA>" in texts(recovered)
    assert action_ids(recovered) == []
