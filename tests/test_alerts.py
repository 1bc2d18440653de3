"""Error-rate alerts in the engine: when an alert opens (threshold, factor over the baseline,
minimum volume, per-pipeline overrides), that it opens once however many evaluate at once,
stays quiet while open, recovers after a full window under the threshold; what each change owes
through the outbox; and `gatehouse alerts` on the command line."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
import typer
from sqlalchemy import insert, select
from typer.testing import CliRunner, Result

from bot.cli import alerts as cli_alerts
from bot.cli.session import GatehouseGroup
from pipelines import Gatehouse, Settings
from pipelines.config import ConfigurationError
from pipelines.operations.alerting import (
    AlertPolicy,
    Thresholds,
    list_alerts,
    owed_alerts,
    record_message,
    subject_of,
)
from pipelines.operations.alerts import NO_MESSAGE, error_headline, evaluate
from pipelines.outbox import OutboxSender
from storage import outbox as outbox_rows
from storage.alerts import alerts_table, insert_open_alert
from storage.db import Database
from storage.runs import runs_table
from tests.concurrency import at_once
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier

MIN = timedelta(minutes=1)
POLICY = AlertPolicy()  # 15 min window, 24 h baseline, 20%, 3x, 10 runs
_ids = itertools.count()


@pytest.fixture
def engine(any_db_url: str, clock: FakeClock) -> Iterator[Gatehouse]:
    database = Database(any_db_url)
    yield Gatehouse(database, clock=clock)
    database.dispose()


def add_runs(
    gatehouse: Gatehouse,
    pipeline: str,
    statuses: Sequence[str],
    *,
    finished: datetime,
    error: str | None = "boom",
    spacing: timedelta = timedelta(seconds=1),
    created_before: timedelta = timedelta(seconds=2),
) -> list[str]:
    """Runs as the engine leaves them, finishing `spacing` apart up to `finished`; failed and
    needs_attention ones carry `error`. Returns their ids, oldest first."""
    rows = []
    for i, status in enumerate(statuses):
        at = finished - spacing * (len(statuses) - 1 - i)
        rows.append(
            {
                "id": f"run_{next(_ids):016x}",
                "pipeline": pipeline,
                "status": status,
                "error": error if status in ("failed", "needs_attention") else None,
                "created_at": at - created_before,
                "started_at": at - created_before,
                "finished_at": at,
                "updated_at": at,
            }
        )
    with gatehouse.db.transaction() as conn:
        conn.execute(insert(runs_table), rows)
    return [row["id"] for row in rows]


def spike(gatehouse: Gatehouse, pipeline: str = "triage", failed: int = 6, ok: int = 14) -> None:
    """A window with `failed` of `failed + ok` runs failed (30% by default), a clean baseline."""
    now = gatehouse.rt.clock.now()
    add_runs(gatehouse, pipeline, ["succeeded"] * 200, finished=now - 120 * MIN)
    add_runs(gatehouse, pipeline, ["failed"] * failed + ["succeeded"] * ok, finished=now)


def alert_rows(gatehouse: Gatehouse) -> list[Any]:
    with gatehouse.db.transaction() as conn:
        return list(conn.execute(select(alerts_table).order_by(alerts_table.c.id)).all())


def kinds(changes: Sequence[Any]) -> list[tuple[str, str]]:
    return [(c.kind, c.alert.pipeline) for c in changes]


# -- opening -------------------------------------------------------------------------------------


def test_a_spike_opens_an_alert_with_rate_baseline_top_errors_and_sample_runs(
    engine: Gatehouse, clock: FakeClock
) -> None:
    now = clock.now()
    # Baseline: 2 errors in 100 over the previous day (2%).
    add_runs(engine, "triage", ["failed"] * 2 + ["succeeded"] * 98, finished=now - 3 * 60 * MIN)
    # Window: 12 of 30 runs ended in error (40%), with four kinds of error message.
    add_runs(engine, "triage", ["succeeded"] * 18, finished=now - 10 * MIN)
    add_runs(engine, "triage", ["failed"] * 5, finished=now - 9 * MIN, error="Timeout\ntraceback…")
    add_runs(engine, "triage", ["needs_attention"] * 4, finished=now - 8 * MIN, error="Unknown")
    add_runs(engine, "triage", ["failed"] * 2, finished=now - 7 * MIN, error="Timeout")
    add_runs(engine, "triage", ["failed"], finished=now - 6 * MIN, error="KeyError: 'x'")
    newest = add_runs(engine, "triage", ["failed"] * 6, finished=now, error="rate limited")
    # Not errors, and outside the window: neither counts.
    add_runs(engine, "triage", ["rejected", "invalid_input", "cancelled"], finished=now - MIN)
    add_runs(engine, "triage", ["failed"] * 30, finished=now - 15 * MIN - 24 * 60 * MIN - MIN)

    [change] = evaluate(engine.rt, POLICY)

    alert = change.alert
    assert change.kind == "opened" and alert.pipeline == "triage" and alert.is_open
    assert (alert.window_runs, alert.window_errors) == (39, 18)
    assert alert.rate == pytest.approx(18 / 39)
    assert alert.baseline == pytest.approx(0.02)
    assert alert.baseline_runs == 100
    assert [(e.message, e.count) for e in alert.top_errors] == [
        ("Timeout", 7),
        ("rate limited", 6),
        ("Unknown", 4),
    ]
    assert list(alert.sample_run_ids) == list(reversed(newest))[:5]
    assert alert.opened_at == now and alert.ts is None
    assert (alert.threshold, alert.factor, alert.min_volume) == (0.2, 3.0, 10)


def test_error_headline_groups_by_first_line() -> None:
    assert (
        error_headline("ToolFailed: 503\nTraceback (most recent call last):") == "ToolFailed: 503"
    )
    assert error_headline("\n\n  boom  \n") == "boom"
    assert error_headline(None) == NO_MESSAGE
    assert error_headline("") == NO_MESSAGE
    assert len(error_headline("x" * 5000)) == 300


def test_below_the_minimum_volume_no_alert(engine: Gatehouse, clock: FakeClock) -> None:
    add_runs(engine, "triage", ["failed"] * 9, finished=clock.now())
    assert evaluate(engine.rt, POLICY) == []
    add_runs(engine, "triage", ["failed"], finished=clock.now())
    assert kinds(evaluate(engine.rt, POLICY)) == [("opened", "triage")]


def test_under_the_absolute_threshold_no_alert_even_far_above_baseline(
    engine: Gatehouse, clock: FakeClock
) -> None:
    now = clock.now()
    add_runs(engine, "triage", ["succeeded"] * 500, finished=now - 60 * MIN)  # baseline 0%
    add_runs(engine, "triage", ["failed"] * 19 + ["succeeded"] * 81, finished=now)  # 19%
    assert evaluate(engine.rt, POLICY) == []
    add_runs(engine, "triage", ["failed"], finished=now)  # 20/101
    assert evaluate(engine.rt, POLICY) == []
    add_runs(engine, "triage", ["failed"] * 2 + ["succeeded"], finished=now)  # 22/104 ≥ 20%
    assert kinds(evaluate(engine.rt, POLICY)) == [("opened", "triage")]


def test_under_factor_times_the_baseline_no_alert(engine: Gatehouse, clock: FakeClock) -> None:
    now = clock.now()
    add_runs(engine, "noisy", ["failed"] * 10 + ["succeeded"] * 90, finished=now - 60 * MIN)
    add_runs(engine, "noisy", ["failed"] * 29 + ["succeeded"] * 71, finished=now)  # 29% < 3 x 10%
    assert evaluate(engine.rt, POLICY) == []
    add_runs(engine, "noisy", ["failed"] * 3 + ["succeeded"] * 7, finished=now)  # 32/110 ≈ 29%
    assert evaluate(engine.rt, POLICY) == []
    add_runs(engine, "noisy", ["failed"] * 10, finished=now)  # 42/120 = 35% ≥ 30%
    [change] = evaluate(engine.rt, POLICY)
    assert change.alert.baseline == pytest.approx(0.1)


def test_exactly_factor_times_the_baseline_alerts(engine: Gatehouse, clock: FakeClock) -> None:
    now = clock.now()
    add_runs(engine, "p", ["failed"] + ["succeeded"] * 9, finished=now - 60 * MIN)  # 10%
    add_runs(engine, "p", ["failed"] * 3 + ["succeeded"] * 7, finished=now)  # 30% = 3 x 10%
    assert kinds(evaluate(engine.rt, POLICY)) == [("opened", "p")]


def test_a_pipeline_with_no_baseline_alerts_on_the_threshold_alone(
    engine: Gatehouse, clock: FakeClock
) -> None:
    add_runs(engine, "new_one", ["failed"] * 5 + ["succeeded"] * 5, finished=clock.now())
    [change] = evaluate(engine.rt, POLICY)
    assert change.alert.baseline is None


def test_runs_finished_in_the_window_count_whenever_they_were_created(
    engine: Gatehouse, clock: FakeClock
) -> None:
    add_runs(
        engine, "slow", ["failed"] * 10, finished=clock.now(), created_before=timedelta(days=2)
    )
    assert kinds(evaluate(engine.rt, POLICY)) == [("opened", "slow")]


def test_per_pipeline_overrides_replace_the_thresholds_they_name(
    engine: Gatehouse, clock: FakeClock
) -> None:
    now = clock.now()
    for name in ("strict", "lenient", "plain"):
        add_runs(engine, name, ["failed"] * 2 + ["succeeded"] * 3, finished=now)  # 40% of 5
    settings = Settings.model_construct(
        **{
            **Settings().model_dump(),
            "alert_overrides": {
                "strict": {"min_volume": 5},
                "lenient": {"min_volume": 5, "threshold": 0.5},
            },
        }
    )
    policy = AlertPolicy.from_settings(settings)
    assert policy.for_pipeline("lenient") == Thresholds(threshold=0.5, factor=3.0, min_volume=5)
    assert policy.for_pipeline("plain") == Thresholds()
    assert kinds(evaluate(engine.rt, settings)) == [("opened", "strict")]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"treshold": 0.5}, "unknown key 'treshold'"),
        ({"threshold": 1.5}, "threshold must be between 0 and 1"),
        ({"factor": 0.5}, "factor must be at least 1"),
        ({"min_volume": 0}, "min_volume must be a whole number"),
        ({"min_volume": 2.5}, "min_volume must be a whole number"),
    ],
)
def test_a_bad_override_is_one_clear_configuration_error(
    override: dict[str, float], fragment: str
) -> None:
    settings = Settings.model_construct(
        **{**Settings().model_dump(), "alert_overrides": {"triage": override}}
    )
    with pytest.raises(ConfigurationError) as raised:
        AlertPolicy.from_settings(settings)
    assert "GATEHOUSE_ALERT_OVERRIDES['triage']" in str(raised.value)
    assert fragment in str(raised.value)


def test_windows_and_thresholds_come_from_the_settings(engine: Gatehouse, clock: FakeClock) -> None:
    settings = Settings.model_construct(
        **{
            **Settings().model_dump(),
            "alert_window_minutes": 5.0,
            "alert_baseline_hours": 1.0,
            "alert_min_volume": 3,
        }
    )
    now = clock.now()
    add_runs(engine, "p", ["succeeded"] * 30, finished=now - 30 * MIN)
    add_runs(engine, "p", ["failed"] * 3, finished=now - 6 * MIN)  # outside a 5 min window
    add_runs(engine, "p", ["failed"] * 50, finished=now - 66 * MIN)  # before the 1 h baseline
    assert evaluate(engine.rt, settings) == []
    add_runs(engine, "p", ["failed"] * 3, finished=now)
    [change] = evaluate(engine.rt, settings)
    assert change.alert.baseline == pytest.approx(3 / 33)
    assert change.alert.window == timedelta(minutes=5)
    assert change.alert.baseline_window == timedelta(hours=1)
    assert change.alert.min_volume == 3


# -- once, quiet, recovered ----------------------------------------------------------------------


def test_an_open_alert_stays_quiet_while_the_spike_goes_on(
    engine: Gatehouse, clock: FakeClock
) -> None:
    spike(engine)
    assert kinds(evaluate(engine.rt, POLICY)) == [("opened", "triage")]
    for _ in range(5):
        clock.advance(MIN)
        add_runs(engine, "triage", ["failed"] * 10, finished=clock.now())
        assert evaluate(engine.rt, POLICY) == []
    assert len(alert_rows(engine)) == 1


def test_recovers_after_a_full_window_under_the_threshold(
    engine: Gatehouse, clock: FakeClock
) -> None:
    spike(engine)
    [opened] = evaluate(engine.rt, POLICY)
    # Sixteen minutes later the failures have left the window: under from this evaluation on.
    clock.advance(16 * MIN)
    add_runs(engine, "triage", ["succeeded"] * 20, finished=clock.now())
    assert evaluate(engine.rt, POLICY) == []
    [row] = alert_rows(engine)
    assert row.status == "open" and row.below_since == clock.now()
    below_since = clock.now()
    clock.advance(14 * MIN)
    assert evaluate(engine.rt, POLICY) == []
    clock.advance(MIN)
    [change] = evaluate(engine.rt, POLICY)
    assert change.kind == "recovered" and change.alert.id == opened.alert.id
    assert change.alert.recovered_at == below_since + 15 * MIN
    assert change.alert.status == "recovered" and not change.alert.is_open
    assert change.alert.recovery_rate == 0.0
    assert evaluate(engine.rt, POLICY) == []


def test_going_back_over_the_threshold_restarts_the_recovery_clock(
    engine: Gatehouse, clock: FakeClock
) -> None:
    spike(engine)
    evaluate(engine.rt, POLICY)
    clock.advance(16 * MIN)
    assert evaluate(engine.rt, POLICY) == []  # under (nothing finished): below_since set
    clock.advance(10 * MIN)
    add_runs(engine, "triage", ["failed"] * 3, finished=clock.now())
    assert evaluate(engine.rt, POLICY) == []  # over again: below_since cleared
    assert alert_rows(engine)[0].below_since is None
    clock.advance(16 * MIN)
    assert evaluate(engine.rt, POLICY) == []  # under again, from now
    clock.advance(14 * MIN)
    assert evaluate(engine.rt, POLICY) == []
    clock.advance(MIN)
    assert kinds(evaluate(engine.rt, POLICY)) == [("recovered", "triage")]


def test_a_new_spike_after_recovery_opens_a_new_alert(engine: Gatehouse, clock: FakeClock) -> None:
    spike(engine)
    evaluate(engine.rt, POLICY)
    clock.advance(16 * MIN)
    evaluate(engine.rt, POLICY)
    clock.advance(15 * MIN)
    assert kinds(evaluate(engine.rt, POLICY)) == [("recovered", "triage")]
    clock.advance(MIN)
    add_runs(engine, "triage", ["failed"] * 10, finished=clock.now())
    assert kinds(evaluate(engine.rt, POLICY)) == [("opened", "triage")]
    assert [row.status for row in alert_rows(engine)] == ["recovered", "open"]


def test_each_pipeline_alerts_on_its_own(engine: Gatehouse, clock: FakeClock) -> None:
    spike(engine, "a")
    spike(engine, "b")
    add_runs(engine, "healthy", ["succeeded"] * 50, finished=clock.now())
    assert kinds(evaluate(engine.rt, POLICY)) == [("opened", "a"), ("opened", "b")]
    assert [(a.pipeline, a.status) for a in list_alerts(engine.rt)] == [
        ("b", "open"),
        ("a", "open"),
    ]


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_evaluations_open_the_alert_once(
    any_db_url: str, clock: FakeClock, round_: int
) -> None:
    """Replicas evaluating at the same moment, each with its own engine and connections."""
    replicas = [Gatehouse(Database(any_db_url), clock=clock) for _ in range(4)]
    try:
        for name in ("one", "two", "three"):
            spike(replicas[0], name)
        results = at_once([partial(evaluate, replica.rt, POLICY) for replica in replicas])
        opened = sorted(c.alert.pipeline for found in results for c in found)
        assert opened == ["one", "three", "two"]
        assert sorted(row.pipeline for row in alert_rows(replicas[0])) == opened
    finally:
        for replica in replicas:
            replica.db.dispose()


def test_the_partial_unique_index_turns_a_second_open_into_a_no_op(
    engine: Gatehouse, clock: FakeClock
) -> None:
    """The guard itself, without the read that usually spares it: a replica that read "no open
    alert" just before another opened one gets None back, and no second row."""
    values: dict[str, Any] = {
        "pipeline": "triage",
        "now": clock.now(),
        "rate": 0.5,
        "baseline": None,
        "window_runs": 10,
        "details": {},
    }
    with engine.db.transaction() as conn:
        first = insert_open_alert(conn, **values)
        assert first is not None and first.status == "open"
        assert insert_open_alert(conn, **values) is None
        assert insert_open_alert(conn, **{**values, "pipeline": "other"}) is not None
    assert [row.pipeline for row in alert_rows(engine)] == ["triage", "other"]


# -- what is owed through the outbox ------------------------------------------------------------


def owed(gatehouse: Gatehouse, alert_id: int) -> list[tuple[str, str]]:
    with gatehouse.db.transaction() as conn:
        rows = outbox_rows.rows_for(conn, subject_of(alert_id))
    return [(row.event, row.status) for row in rows]


def test_opening_and_recovering_each_owe_one_delivery_of_the_alert(
    engine: Gatehouse, clock: FakeClock
) -> None:
    spike(engine)
    [opened] = evaluate(engine.rt, POLICY)
    alert_id = opened.alert.id
    assert owed(engine, alert_id) == [("alert_opened", "pending")]
    assert owed_alerts(engine.rt) == [alert_id]
    clock.advance(MIN)
    assert evaluate(engine.rt, POLICY) == []  # quiet while open: nothing more is owed
    clock.advance(15 * MIN)
    evaluate(engine.rt, POLICY)
    clock.advance(15 * MIN)
    assert kinds(evaluate(engine.rt, POLICY)) == [("recovered", "triage")]
    assert owed(engine, alert_id) == [("alert_opened", "pending"), ("alert_recovered", "pending")]


def test_the_sender_shows_each_alert_as_it_is_at_delivery_once(
    engine: Gatehouse, clock: FakeClock
) -> None:
    """Never delivered before it recovered: one delivery, of the recovered alert."""
    notifier = RecordingNotifier()
    sender = OutboxSender(engine.rt, notifier=notifier)
    spike(engine)
    [opened] = evaluate(engine.rt, POLICY)
    clock.advance(16 * MIN)
    evaluate(engine.rt, POLICY)
    clock.advance(15 * MIN)
    evaluate(engine.rt, POLICY)
    assert sender.deliver_due() == 1
    [(event, view)] = notifier.events
    assert (event, view.id, view.status) == ("alert_recovered", opened.alert.id, "recovered")
    assert owed_alerts(engine.rt) == [] and sender.deliver_due() == 0


def test_an_alert_delivery_is_claimed_once_until_its_lease_runs_out(
    engine: Gatehouse, clock: FakeClock
) -> None:
    spike(engine)
    [opened] = evaluate(engine.rt, POLICY)
    lease = timedelta(seconds=60)
    with engine.db.transaction() as conn:
        [head] = outbox_rows.claim_due(conn, worker="a", now=clock.now(), lease=lease)
        assert outbox_rows.claim_due(conn, worker="b", now=clock.now(), lease=lease) == []
    assert head.subject_id == subject_of(opened.alert.id)
    clock.advance(lease)  # the claimer died
    with engine.db.transaction() as conn:
        [taken] = outbox_rows.claim_due(conn, worker="b", now=clock.now(), lease=lease)
    assert taken.taken_over  # the message may be in Slack: the notifier looks for it first


def test_the_first_recorded_message_of_an_alert_stands(engine: Gatehouse) -> None:
    spike(engine)
    [opened] = evaluate(engine.rt, POLICY)
    assert record_message(engine.rt, opened.alert.id, channel="C_ALERTS", ts="1.000100")
    assert not record_message(engine.rt, opened.alert.id, channel="C_ALERTS", ts="1.000200")
    [alert] = list_alerts(engine.rt)
    assert (alert.channel, alert.ts) == ("C_ALERTS", "1.000100")


def test_claims_race_between_replicas_and_one_wins(any_db_url: str, clock: FakeClock) -> None:
    replicas = [Gatehouse(Database(any_db_url), clock=clock) for _ in range(4)]
    try:
        spike(replicas[0])
        evaluate(replicas[0].rt, POLICY)

        def claim(gatehouse: Gatehouse) -> list[Any]:
            with gatehouse.db.transaction() as conn:
                return outbox_rows.claim_due(
                    conn, worker=gatehouse.rt.worker_id, now=clock.now(), lease=MIN
                )

        claims = at_once([partial(claim, replica) for replica in replicas])
        assert len([claim for claimed in claims for claim in claimed]) == 1
    finally:
        for replica in replicas:
            replica.db.dispose()


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, sqlite_url: str) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    for name in ("SLACK_BOT_TOKEN", "GATEHOUSE_ALERTS_CHANNEL", "SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)
    yield sqlite_url


def gatehouse_cli() -> typer.Typer:
    """`gatehouse` with `alerts` mounted as the lead mounts it, on the real root group."""
    root = typer.Typer(cls=GatehouseGroup, add_completion=False, pretty_exceptions_enable=False)

    @root.callback()
    def _root() -> None:
        pass

    root.add_typer(cli_alerts.app, name="alerts")
    return root


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(gatehouse_cli(), ["alerts", *args])


def test_cli_check_without_slack_evaluates_and_prints_what_it_would_post(cli_env: str) -> None:
    # The CLI runs on the real clock: put the spike just before now.
    database = Database(cli_env)
    real_now = Gatehouse(database).rt.clock.now()
    seeding = Gatehouse(database, clock=FakeClock(real_now))
    add_runs(
        seeding,
        "triage",
        ["failed"] * 8 + ["succeeded"] * 4,
        finished=real_now,
        error="<!channel> down",
    )
    database.dispose()

    result = run_cli("check")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "SLACK_BOT_TOKEN and GATEHOUSE_ALERTS_CHANNEL not set" in result.stdout
    assert "Error-rate alert: triage" in result.stdout
    assert "67% errors (8/12 runs in 15 min)" in result.stdout
    assert "8 x <!channel> down" in result.stdout  # the terminal shows the text as it is

    listed = json.loads(run_cli("--json").stdout)
    assert [(a["pipeline"], a["status"], a["ts"]) for a in listed] == [("triage", "open", None)]
    assert listed == json.loads(run_cli("list", "--json").stdout)
    text = run_cli().stdout
    assert "OPEN" in text and "not yet posted to Slack" in text

    again = json.loads(run_cli("check", "--json").stdout)
    assert again["changes"] == [] and "not set" in again["not_posted"]


def test_cli_lists_nothing_and_rejects_a_bad_since(cli_env: str) -> None:
    assert "no alerts open or opened in the last 7d" in run_cli().stdout
    bad = run_cli("list", "--since", "soon")
    assert bad.exit_code == 1
    assert bad.stderr.strip().startswith("error: --since 'soon' is not a duration")


def test_cli_check_reports_a_bad_override_as_one_error_line(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEHOUSE_ALERT_OVERRIDES", '{"triage": {"treshold": 0.5}}')
    result = run_cli("check")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "unknown key 'treshold'" in result.stderr
