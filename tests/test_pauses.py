"""The pipeline pause (a circuit breaker) through the engine, the CLI and the webhook route: a
pause made through one engine is seen by another on the same database before its next call; a
paused pipeline takes no run from any trigger (manual and webhook refused, schedule fires
recorded as skipped with why); its running runs wait before their next tool or model call and
carry on after the resume; an alert rule may pause its pipeline. On SQLite and PostgreSQL."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from typer.testing import CliRunner, Result

import tests.schedule_pipelines  # noqa: F401  (registers s_hourly, s_hook)
from bot.cli.main import app
from bot.http.server import BackgroundServer
from bot.http.webhooks import sign_delivery, webhook_routes
from pipelines import Authorization, Gatehouse, PipelinePaused, Settings, pipeline
from pipelines.errors import NotAnOperator, ReasonRequired
from pipelines.operations import alerts
from pipelines.operations.alert_pauses import alert_pause
from pipelines.operations.alerting import AlertPolicy, list_alerts
from pipelines.operations.schedules import ScheduleOptions, fire, list_fires
from pipelines.pauses import UnknownPauseSource, pause_pipeline
from storage.audit import audit_table, verify_database
from storage.models import RunStatus
from tests import pause_pipelines as pz
from tests.fakes.clock import FakeClock
from tests.test_alerts import add_runs

OPS = "U_OPS"
HOOK_SECRET = "s3cret-for-s_hook"


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    pz.reset()


@pytest.fixture
def replicas(any_db_url: str, clock: FakeClock) -> Iterator[tuple[Gatehouse, Gatehouse]]:
    """Two engines on one database, as two bot replicas are."""
    one = Gatehouse(any_db_url, clock=clock, worker_id="replica-1")
    two = Gatehouse(any_db_url, clock=clock, worker_id="replica-2")
    yield one, two
    one.db.dispose()
    two.db.dispose()


def audit_events(gatehouse: Gatehouse, prefix: str = "pipeline.") -> list[dict[str, Any]]:
    query = select(audit_table).where(audit_table.c.event.like(f"{prefix}%"))
    with gatehouse.db.transaction() as conn:
        rows = conn.execute(query.order_by(audit_table.c.id)).all()
    return [{"event": r.event, "actor": r.actor, **(r.detail or {})} for r in rows]


# -- the switch ----------------------------------------------------------------------------------


def test_a_pause_made_through_one_replica_is_seen_by_another_and_audited(
    replicas: tuple[Gatehouse, Gatehouse],
) -> None:
    one, two = replicas
    assert one.pause_pipeline("pz_flow", user=OPS, reason="the CRM is down") is True

    seen = two.pipeline_pause("pz_flow")
    assert seen is not None
    assert (seen.by, seen.reason, seen.source) == (OPS, "the CRM is down", "manual")
    assert list(two.paused_pipelines()) == ["pz_flow"]
    # A second pause changes nothing: the first one stands.
    assert two.pause_pipeline("pz_flow", user="U_LATE", reason="me too") is False
    assert one.pipeline_pause("pz_flow") == seen

    assert two.resume_pipeline("pz_flow", user="U_ANA", reason="CRM back") is True
    assert one.pipeline_pause("pz_flow") is None
    assert one.resume_pipeline("pz_flow", user="U_ANA") is False
    assert [(e["event"], e["actor"], e["reason"]) for e in audit_events(one)] == [
        ("pipeline.paused", OPS, "the CRM is down"),
        ("pipeline.resumed", "U_ANA", "CRM back"),
    ]
    assert verify_database(one.db).ok


def test_pausing_needs_a_reason_and_a_known_source(gatehouse: Gatehouse) -> None:
    with pytest.raises(ReasonRequired, match="pausing pz_flow needs a reason"):
        gatehouse.pause_pipeline("pz_flow", user=OPS, reason="  ")
    with pytest.raises(UnknownPauseSource, match="budget:day"):
        pause_pipeline(gatehouse.rt, "pz_flow", by=OPS, reason="x", source="whim")
    assert gatehouse.paused_pipelines() == {}


def test_only_operators_pause_and_resume_and_a_refusal_is_audited(gatehouse: Gatehouse) -> None:
    gatehouse.rt.authorization = Authorization(operators=[OPS])
    with pytest.raises(NotAnOperator, match="U_CAROL may not pause pz_flow; operators: U_OPS"):
        gatehouse.pause_pipeline("pz_flow", user="U_CAROL", reason="why not")
    assert gatehouse.pipeline_pause("pz_flow") is None
    assert gatehouse.pause_pipeline("pz_flow", user=OPS, reason="incident")
    with pytest.raises(NotAnOperator, match="U_CAROL may not resume pz_flow"):
        gatehouse.resume_pipeline("pz_flow", user="U_CAROL")
    assert gatehouse.pipeline_pause("pz_flow") is not None
    refused = audit_events(gatehouse, "refused")
    assert [(r["actor"], r["action"], r["target"]) for r in refused] == [
        ("U_CAROL", "pause", "pz_flow"),
        ("U_CAROL", "resume", "pz_flow"),
    ]


def test_pause_on_names_only_the_rules_that_can_pause() -> None:
    with pytest.raises(ValueError, match=r"pause_on names 'errors'; .*error_rate, budget"):
        pipeline("pz_bad_rule", input=pz.Item, pause_on=["errors"])


# -- no new runs -----------------------------------------------------------------------------------


def test_a_manual_trigger_of_a_paused_pipeline_is_refused_and_records_no_run(
    replicas: tuple[Gatehouse, Gatehouse],
) -> None:
    one, two = replicas
    one.pause_pipeline("pz_flow", user=OPS, reason="the CRM is down")
    with pytest.raises(PipelinePaused) as refused:
        two.trigger("pz_flow", {"n": 1}, user="U_ALICE")
    message = str(refused.value)
    assert "pz_flow is paused by U_OPS since" in message
    assert "the CRM is down; no run was created" in message
    assert "gatehouse resume pz_flow" in message
    with pytest.raises(PipelinePaused):
        two.trigger("pz_flow", {"n": 1}, run_here=False)
    assert two.runs(pipeline="pz_flow") == []
    assert pz.CALLS == []


def test_a_schedule_fire_of_a_paused_pipeline_is_recorded_as_skipped_with_why(
    replicas: tuple[Gatehouse, Gatehouse], clock: FakeClock
) -> None:
    one, two = replicas
    options = ScheduleOptions(timezone="UTC", misfire_grace=timedelta(minutes=5))
    due = clock.now().replace(minute=0, second=0, microsecond=0)
    one.pause_pipeline("s_hourly", user=OPS, reason="quiet hours")

    result = fire(two.rt, "s_hourly", due, options)

    assert (result.outcome, result.run_id) == ("skipped", None)
    [recorded] = list_fires(one.rt, "s_hourly")
    assert recorded.outcome == "skipped"
    assert recorded.reason is not None
    assert "pipeline s_hourly paused by U_OPS" in recorded.reason
    assert "quiet hours" in recorded.reason
    assert one.runs(pipeline="s_hourly") == []
    assert fire(one.rt, "s_hourly", due, options).outcome == "taken"  # recorded once

    one.resume_pipeline("s_hourly", user=OPS)
    later = fire(two.rt, "s_hourly", due + timedelta(hours=1), options)
    assert later.outcome in ("fired", "late") and later.run_id is not None


# -- running runs wait -------------------------------------------------------------------------


def test_a_running_run_stops_before_its_next_tool_call_and_carries_on_after_resume(
    replicas: tuple[Gatehouse, Gatehouse],
) -> None:
    one, two = replicas
    # Paused through the other replica while the run is inside its first tool.
    pz.DURING_FIRST.append(
        lambda: one.pause_pipeline("pz_flow", user=OPS, reason="the CRM misbehaves")
    )
    run = two.trigger("pz_flow", {"n": 1}, user="U_ALICE")

    assert run.status == RunStatus.WAITING
    assert pz.CALLS == ["pz_first"]
    held = two.run(run.id)
    assert held.waiting_reason == "pipeline paused by U_OPS: the CRM misbehaves"
    assert [c.name for c in held.calls] == ["pz_first"]
    assert two.worker().run_until_idle() == 0  # nothing to take: it waits, durably
    assert pz.CALLS == ["pz_first"]

    pz.DURING_FIRST.clear()
    assert one.resume_pipeline("pz_flow", user=OPS, reason="fixed") is True
    assert two.run(run.id).status == RunStatus.QUEUED
    [resumed] = [e for e in audit_events(one) if e["event"] == "pipeline.resumed"]
    assert resumed["queued_runs"] == [run.id]
    assert two.worker().run_until_idle() == 1

    done = one.run(run.id)
    assert (done.status, done.output) == (RunStatus.SUCCEEDED, {"n": 2})
    assert pz.CALLS == ["pz_first", "pz_second"]  # the first tool did not run again


def test_a_queued_run_of_a_paused_pipeline_makes_no_model_call_until_resumed(
    replicas: tuple[Gatehouse, Gatehouse],
) -> None:
    one, two = replicas
    run = one.trigger("pz_asks", {"n": 3}, run_here=False)
    two.pause_pipeline("pz_asks", user=OPS, reason="model bill")

    assert one.worker().run_until_idle() == 1
    held = two.run(run.id)
    assert held.status == RunStatus.WAITING
    assert held.calls == [] and held.tasks == []  # no model call, no human exit either
    assert held.waiting_reason is not None and held.waiting_reason.startswith("pipeline paused")

    two.resume_pipeline("pz_asks", user=OPS)
    assert one.worker().run_until_idle() == 1
    after = one.run(run.id)
    # No model is configured here: the call now goes on to its human exit.
    assert after.status == RunStatus.WAITING and len(after.tasks) == 1
    assert after.calls[0].kind == "llm"


def test_resume_queues_only_the_runs_the_pause_held(gatehouse: Gatehouse) -> None:
    asks = gatehouse.trigger("pz_asks", {"n": 1})  # waits for a person (no model configured)
    assert asks.status == RunStatus.WAITING
    flow = gatehouse.trigger("pz_flow", {"n": 1}, run_here=False)
    gatehouse.pause_pipeline("pz_flow", user=OPS, reason="x")
    gatehouse.pause_pipeline("pz_asks", user=OPS, reason="x")
    gatehouse.worker().run_until_idle()
    assert gatehouse.run(flow.id).status == RunStatus.WAITING

    gatehouse.resume_pipeline("pz_asks", user=OPS)
    gatehouse.resume_pipeline("pz_flow", user=OPS)
    assert gatehouse.run(asks.id).status == RunStatus.WAITING  # still its person's to answer
    assert gatehouse.run(flow.id).status == RunStatus.QUEUED


# -- an alert rule pauses its pipeline ---------------------------------------------------------------


def test_an_error_rate_alert_pauses_a_pipeline_that_asks_for_it(
    replicas: tuple[Gatehouse, Gatehouse], clock: FakeClock
) -> None:
    one, two = replicas
    now = clock.now()
    for name in ("pz_flaky", "pz_steady"):
        add_runs(one, name, ["succeeded"] * 6, finished=now - timedelta(minutes=1))
        add_runs(one, name, ["failed"] * 6, finished=now, error="CRM timeout")

    changes = alerts.evaluate(two.rt, AlertPolicy(), now=now)

    assert sorted(c.alert.pipeline for c in changes) == ["pz_flaky", "pz_steady"]
    pause = one.pipeline_pause("pz_flaky")
    assert pause is not None
    assert (pause.by, pause.source) == ("gatehouse", "alert:error_rate")
    assert pause.reason is not None and "50% of 12 runs ended in error" in pause.reason
    assert one.pipeline_pause("pz_steady") is None
    by_pipeline = {a.pipeline: a for a in list_alerts(one.rt, now=now)}
    assert alert_pause(by_pipeline["pz_flaky"]) == {"paused": True, "source": "alert:error_rate"}
    assert alert_pause(by_pipeline["pz_steady"]) is None
    with pytest.raises(PipelinePaused, match="alert:error_rate"):
        one.trigger("pz_flaky", {"n": 1})


# -- webhooks ------------------------------------------------------------------------------------


@pytest.fixture
def hook_server(gatehouse: Gatehouse) -> Iterator[BackgroundServer]:
    settings = Settings(database_url="sqlite://", webhook_secrets={"s_hook": HOOK_SECRET})
    server = BackgroundServer(Starlette(routes=webhook_routes(gatehouse, settings))).start()
    yield server
    server.stop()


def post_hook(
    server: BackgroundServer, gatehouse: Gatehouse, payload: Any, key: str | None = None
) -> tuple[int, dict[str, Any]]:
    body = json.dumps(payload).encode()
    headers = sign_delivery(HOOK_SECRET, body, int(gatehouse.rt.clock.now().timestamp()))
    headers["Content-Type"] = "application/json"
    if key is not None:
        headers["Idempotency-Key"] = key
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("POST", "/hooks/s_hook", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_webhook_delivery_to_a_paused_pipeline_gets_503_and_leaves_no_trace(
    gatehouse: Gatehouse, hook_server: BackgroundServer, clock: FakeClock
) -> None:
    gatehouse.pause_pipeline("s_hook", user=OPS, reason="upstream flood")

    status, body = post_hook(hook_server, gatehouse, {"order": "A-1", "amount": 3}, key="k-1")

    assert status == 503
    assert body["paused"] is True and body["recorded"] is False
    assert "s_hook is paused by U_OPS" in body["error"]
    assert "upstream flood" in body["error"]
    assert "not recorded as a run" in body["error"]
    assert gatehouse.runs(pipeline="s_hook") == []

    # The sender's retry after the resume, same key, is accepted once.
    gatehouse.resume_pipeline("s_hook", user=OPS)
    clock.advance(timedelta(seconds=1))
    status, body = post_hook(hook_server, gatehouse, {"order": "A-1", "amount": 3}, key="k-1")
    assert status == 202 and body["status"] == "queued"
    assert [r.id for r in gatehouse.runs(pipeline="s_hook")] == [body["run_id"]]


# -- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.pause_pipelines")
    monkeypatch.setenv("GATEHOUSE_OPERATORS", json.dumps([OPS]))
    for name in ("GATEHOUSE_USER", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    return sqlite_url


def gh(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_cli_pause_shows_in_pipelines_and_ready_refuses_triggers_and_resumes(
    cli_env: str,
) -> None:
    paused = gh("pause", "pz_flow", "--as", OPS, "--reason", "CRM maintenance")
    assert paused.exit_code == 0, paused.stderr
    assert "paused pz_flow for U_OPS" in paused.stdout
    again = gh("pause", "pz_flow", "--as", OPS, "--reason", "again")
    assert "was already paused by U_OPS" in again.stdout and "CRM maintenance" in again.stdout

    listed = gh("pipelines")
    assert "⏸ paused by U_OPS since" in listed.stdout and "CRM maintenance" in listed.stdout
    [flow] = [p for p in json.loads(gh("pipelines", "--json").stdout) if p["name"] == "pz_flow"]
    assert flow["paused"]["by"] == OPS and flow["paused"]["source"] == "manual"
    ready = json.loads(gh("ready", "pz_flow", "--json").stdout)
    assert ready["pipelines"][0]["paused"]["reason"] == "CRM maintenance"
    assert "⏸ paused by U_OPS" in gh("ready", "pz_flow").stdout

    refused = gh("trigger", "pz_flow", "--input", '{"n": 1}', "--as", "U_ALICE")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: pz_flow is paused by U_OPS")

    resumed = gh("resume", "pz_flow", "--as", OPS, "--reason", "done")
    assert resumed.exit_code == 0 and "resumed pz_flow for U_OPS" in resumed.stdout
    assert "not paused" in gh("resume", "pz_flow", "--as", OPS).stdout
    assert "⏸" not in gh("pipelines").stdout


def test_cli_pause_by_someone_not_an_operator_is_refused(cli_env: str) -> None:
    refused = gh("pause", "pz_flow", "--as", "U_CAROL", "--reason", "why not")
    assert refused.exit_code == 1
    assert "U_CAROL may not pause pz_flow; operators: U_OPS" in refused.stderr
    listed = json.loads(gh("pipelines", "--json").stdout)
    assert all(p["paused"] is None for p in listed)


def test_gatehouse_schedules_shows_why_a_fire_was_skipped(cli_env: str) -> None:
    gatehouse = Gatehouse(cli_env)
    try:
        due = gatehouse.rt.clock.now().replace(minute=0, second=0, microsecond=0)
        gatehouse.pause_pipeline("s_hourly", user=OPS, reason="quiet hours")
        fire(gatehouse.rt, "s_hourly", due, ScheduleOptions(misfire_grace=timedelta(hours=2)))
    finally:
        gatehouse.db.dispose()
    listed = gh("schedules")
    [line] = [line for line in listed.stdout.splitlines() if line.startswith("s_hourly ")]
    assert "skipped (pipeline s_hourly paused by U_OPS" in line and "quiet hours)" in line


def test_gatehouse_run_says_a_held_run_waits_for_the_resume(cli_env: str) -> None:
    gatehouse = Gatehouse(cli_env)
    try:
        run = gatehouse.trigger("pz_flow", {"n": 1}, run_here=False)
        gatehouse.pause_pipeline("pz_flow", user=OPS, reason="CRM maintenance")
        gatehouse.worker().run_until_idle()
    finally:
        gatehouse.db.dispose()
    shown = gh("run", run.id)
    assert "waiting: pipeline paused by U_OPS: CRM maintenance" in shown.stdout
    assert "gatehouse resume pz_flow --as USER" in shown.stdout
    assert "rate-limit window" not in shown.stdout
    assert json.loads(gh("run", run.id, "--json").stdout)["waiting_reason"].startswith(
        "pipeline paused by U_OPS"
    )
