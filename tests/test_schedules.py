"""Schedules on a fake clock: names, fire times (crontab weekdays, time zones, epoch-anchored
intervals), exactly one run per fire, misfire policies without bursts, pause and resume, the
overview, `gatehouse schedules`, and the APScheduler wrapper passing each job its due time."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

import tests.schedule_pipelines  # noqa: F401  (registers the s_ pipelines)
from bot.cli import schedules as cli_schedules
from bot.cli.session import GatehouseGroup
from bot.scheduler import SchedulerHandle, start_scheduler
from pipelines import Gatehouse, Settings, cron, every
from pipelines.fire_times import cron_trigger, crontab_weekdays, next_fire_time
from pipelines.operations.schedules import (
    LATE_AFTER,
    ScheduleOptions,
    UnknownSchedule,
    all_schedules,
    catch_up,
    fire,
    list_fires,
    pause,
    resume,
    schedules_overview,
)
from storage.db import Database
from storage.models import RunStatus
from tests.fakes.clock import FakeClock

OPTIONS = ScheduleOptions(timezone="UTC", misfire_grace=timedelta(minutes=5))
MONDAY_9_UTC = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # FakeClock's start, a Monday


def runs_of(gatehouse: Gatehouse, schedule: str) -> list[tuple[str, str, object]]:
    found = gatehouse.runs(limit=1000)
    return [(r.id, str(r.status), r.input) for r in found if r.trigger == f"schedule:{schedule}"]


def at(clock: FakeClock, moment: datetime) -> None:
    clock.advance(moment - clock.now())


# -- names and fire times ------------------------------------------------------------------


def test_each_cron_or_every_trigger_is_a_schedule_named_for_its_pipeline_then_numbered() -> None:
    found = all_schedules(OPTIONS)
    assert {"s_hourly", "s_report", "s_report#2", "s_needs_input"} <= set(found)
    assert (
        found["s_report"].describe()
        == "cron('0 9 * * MON', tz='Europe/Paris', input={'team': 'ops'})"
    )
    assert found["s_report#2"].describe() == "every(600s, input={'team': 'sre'}, misfire='skip')"
    assert found["s_report"].timezone == "Europe/Paris"
    assert found["s_hourly"].timezone == "UTC"
    assert not any(name.startswith(("s_hook", "s_tokened")) for name in found)  # webhooks only


def test_crontab_weekday_numbers_mean_what_crontab_means() -> None:
    assert crontab_weekdays("1-5") == "mon,tue,wed,thu,fri"
    assert crontab_weekdays("0") == crontab_weekdays("7") == "sun"
    assert crontab_weekdays("*/2") == "sun,tue,thu,sat"
    assert crontab_weekdays("MON,fri") == "mon,fri"
    assert crontab_weekdays("5-7") == "sun,fri,sat"
    sunday_nine = datetime(2026, 11, 8, 9, tzinfo=UTC)
    assert next_fire_time(cron_trigger("0 9 * * 0", "UTC"), MONDAY_9_UTC) == sunday_nine
    assert next_fire_time(cron_trigger("0 9 * * 7", "UTC"), MONDAY_9_UTC) == sunday_nine
    assert next_fire_time(cron_trigger("0 9 * * 1", "UTC"), MONDAY_9_UTC) == MONDAY_9_UTC


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: cron("61 * * * *"), "not a valid cron expression"),
        (lambda: cron("0 9 * *"), "five fields"),
        (lambda: cron("0 9 * * 8"), "weekday '8'"),
        (lambda: cron("0 9 * * sat-sun"), "runs backwards"),
        (lambda: cron("0 9 * * *", tz="Mars/Olympus"), "not an IANA time zone"),
        (lambda: cron("0 9 * * *", misfire="later"), "use 'run_late' or 'skip'"),  # type: ignore[arg-type]
        (lambda: every("0s"), "too short"),
    ],
)
def test_a_bad_trigger_fails_where_it_is_declared(
    declare: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        declare()


def test_cron_next_fire_follows_its_time_zone_across_daylight_saving() -> None:
    report = all_schedules(OPTIONS)["s_report"]  # 09:00 Mondays in Paris
    # November: Paris is UTC+1, so 09:00 Paris was 08:00 UTC, before the clock's 09:00 UTC.
    assert next_fire_time(report.timetable, MONDAY_9_UTC) == datetime(2026, 11, 9, 8, tzinfo=UTC)
    # June: UTC+2.
    june = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    assert next_fire_time(report.timetable, june) == datetime(2026, 6, 1, 7, tzinfo=UTC)


def test_every_fires_at_multiples_of_its_interval_whenever_a_process_started() -> None:
    ticker = all_schedules(OPTIONS)["s_report#2"]  # every 10 minutes
    for start in ("09:03:20", "09:09:59", "09:00:01"):
        moment = datetime.fromisoformat(f"2026-11-02T{start}+00:00")
        expected = datetime(2026, 11, 2, 9, 10, tzinfo=UTC)
        assert next_fire_time(ticker.timetable, moment) == expected
    on_the_dot = datetime(2026, 11, 2, 9, 10, tzinfo=UTC)
    assert next_fire_time(ticker.timetable, on_the_dot) == on_the_dot


# -- firing ----------------------------------------------------------------------------------


def test_a_fire_queues_one_run_with_the_declared_input_and_a_second_claim_is_taken(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    report_time = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 Paris
    at(clock, report_time + timedelta(seconds=2))

    first = fire(gatehouse.rt, "s_report", report_time, OPTIONS)
    again = fire(gatehouse.rt, "s_report", report_time, OPTIONS)

    assert first.outcome == "fired" and first.run_id is not None
    assert again.outcome == "taken" and again.run_id is None
    assert runs_of(gatehouse, "s_report") == [(first.run_id, "queued", {"team": "ops"})]
    assert gatehouse.run(first.run_id).status == RunStatus.QUEUED  # a worker runs it
    [record] = list_fires(gatehouse.rt, "s_report")
    assert (record.fire_time, record.outcome, record.run_id) == (report_time, "fired", first.run_id)
    assert record.claimed_by == gatehouse.rt.worker_id


def test_a_fire_time_given_in_another_zone_is_the_same_fire(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    from zoneinfo import ZoneInfo

    paris = datetime(2026, 11, 2, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    at(clock, paris)
    assert fire(gatehouse.rt, "s_report", paris, OPTIONS).outcome == "fired"
    utc = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    assert fire(gatehouse.rt, "s_report", utc, OPTIONS).outcome == "taken"


def test_a_worker_executes_the_queued_run(gatehouse: Gatehouse, clock: FakeClock) -> None:
    result = fire(gatehouse.rt, "s_hourly", MONDAY_9_UTC, OPTIONS)
    assert gatehouse.worker().run_until_idle() == 1
    run = gatehouse.run(str(result.run_id))
    assert (run.status, run.output) == (RunStatus.SUCCEEDED, {"ok": "hourly"})


def test_a_schedule_whose_input_the_model_refuses_records_an_invalid_input_run(
    gatehouse: Gatehouse,
) -> None:
    result = fire(gatehouse.rt, "s_needs_input", MONDAY_9_UTC, OPTIONS)

    assert result.outcome == "fired"
    run = gatehouse.run(str(result.run_id))
    assert run.status == RunStatus.INVALID_INPUT
    assert "team: Field required" in str(run.error)
    assert "schedule s_needs_input" in str(run.error)
    [info] = [i for i in schedules_overview(gatehouse.rt, OPTIONS) if i.name == "s_needs_input"]
    assert info.problem is not None and "give the trigger input=" in info.problem


def test_a_naive_fire_time_is_refused(gatehouse: Gatehouse) -> None:
    with pytest.raises(ValueError, match="naive"):
        fire(gatehouse.rt, "s_hourly", datetime(2026, 11, 2, 9), OPTIONS)


def test_firing_an_unknown_schedule_names_the_known_ones(gatehouse: Gatehouse) -> None:
    with pytest.raises(UnknownSchedule, match=r"no schedule named 'nope'.*s_hourly"):
        fire(gatehouse.rt, "nope", MONDAY_9_UTC, OPTIONS)


# -- misfires ------------------------------------------------------------------------------


def test_a_fire_handled_late_within_the_grace_runs_once_marked_late(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    at(clock, MONDAY_9_UTC + LATE_AFTER + timedelta(minutes=2))
    result = fire(gatehouse.rt, "s_hourly", MONDAY_9_UTC, OPTIONS)
    assert result.outcome == "late" and result.run_id is not None
    assert len(runs_of(gatehouse, "s_hourly")) == 1


def test_a_fire_handled_just_after_its_time_is_on_time(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    at(clock, MONDAY_9_UTC + LATE_AFTER)
    assert fire(gatehouse.rt, "s_report#2", MONDAY_9_UTC, OPTIONS).outcome == "fired"


def test_a_fire_past_the_grace_is_recorded_as_skipped_without_a_run(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    at(clock, MONDAY_9_UTC + timedelta(minutes=6))
    result = fire(gatehouse.rt, "s_hourly", MONDAY_9_UTC, OPTIONS)
    assert (result.outcome, result.run_id) == ("skipped", None)
    assert runs_of(gatehouse, "s_hourly") == []
    [record] = list_fires(gatehouse.rt, "s_hourly")
    assert record.outcome == "skipped"


def test_a_skip_policy_never_runs_a_late_fire(gatehouse: Gatehouse, clock: FakeClock) -> None:
    at(clock, MONDAY_9_UTC + LATE_AFTER + timedelta(seconds=1))
    result = fire(gatehouse.rt, "s_report#2", MONDAY_9_UTC, OPTIONS)
    assert (result.outcome, result.run_id) == ("skipped", None)
    assert runs_of(gatehouse, "s_report#2") == []


def test_catch_up_after_downtime_runs_only_the_latest_missed_fire_once(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    grace = ScheduleOptions(misfire_grace=timedelta(hours=3))
    # Down from 06:30 to 09:43: s_hourly missed 07:00, 08:00 and 09:00; s_report#2 (every
    # 10 minutes, misfire="skip") missed 19 fires, the last at 09:40.
    at(clock, MONDAY_9_UTC + timedelta(minutes=43))

    results = {r.schedule: r for r in catch_up(gatehouse.rt, grace)}

    assert (results["s_hourly"].fire_time, results["s_hourly"].outcome) == (MONDAY_9_UTC, "late")
    ticker = results["s_report#2"]
    assert (ticker.fire_time, ticker.outcome) == (MONDAY_9_UTC + timedelta(minutes=40), "skipped")
    assert len(runs_of(gatehouse, "s_hourly")) == 1
    assert runs_of(gatehouse, "s_report#2") == []
    # An older missed fire reported afterwards (a slow replica) does not run either.
    older = fire(gatehouse.rt, "s_hourly", MONDAY_9_UTC - timedelta(hours=1), grace)
    assert older.outcome == "superseded"
    # Another process starting now finds the fire handled.
    assert {r.outcome for r in catch_up(gatehouse.rt, grace)} == {"taken"}
    assert len(runs_of(gatehouse, "s_hourly")) == 1


def test_catch_up_of_a_fire_that_is_just_due_runs_it_on_time(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    at(clock, MONDAY_9_UTC + timedelta(seconds=5))
    results = {r.schedule: r for r in catch_up(gatehouse.rt, OPTIONS)}
    assert results["s_hourly"].outcome == "fired"
    assert results["s_report#2"].outcome == "fired"  # skip policy, but it is not late


def test_catch_up_ignores_fires_older_than_the_grace(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    at(clock, MONDAY_9_UTC + timedelta(minutes=30))
    results = {r.schedule: r for r in catch_up(gatehouse.rt, OPTIONS)}
    assert "s_hourly" not in results  # 09:00 is 30 min ago, the grace 5 min
    assert results["s_report#2"].fire_time == MONDAY_9_UTC + timedelta(minutes=30)


# -- pause and resume -------------------------------------------------------------------------


def test_a_paused_schedule_fires_nothing_until_resumed(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    info = pause(gatehouse.rt, "s_hourly", "alice", OPTIONS)
    assert (info.paused, info.paused_by) == (True, "alice")

    paused = fire(gatehouse.rt, "s_hourly", MONDAY_9_UTC, OPTIONS)
    assert paused.outcome == "paused"
    assert list_fires(gatehouse.rt, "s_hourly") == []

    at(clock, MONDAY_9_UTC + timedelta(minutes=1))
    info = resume(gatehouse.rt, "s_hourly", "bob", OPTIONS)
    assert (info.paused, info.paused_by) == (False, None)
    # The 09:00 fire fell in the pause: a catch-up after the resume does not run it late.
    at(clock, MONDAY_9_UTC + timedelta(minutes=3))
    assert fire(gatehouse.rt, "s_hourly", MONDAY_9_UTC, OPTIONS).outcome == "paused"
    at(clock, MONDAY_9_UTC + timedelta(hours=1))
    assert fire(gatehouse.rt, "s_hourly", clock.now(), OPTIONS).outcome == "fired"


def test_pausing_an_unknown_schedule_is_an_error(gatehouse: Gatehouse) -> None:
    with pytest.raises(UnknownSchedule):
        pause(gatehouse.rt, "s_nope", "alice", OPTIONS)


def test_overview_shows_next_and_last_fire_and_pause(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    at(clock, MONDAY_9_UTC + timedelta(seconds=1))
    fired = fire(gatehouse.rt, "s_hourly", MONDAY_9_UTC, OPTIONS)
    pause(gatehouse.rt, "s_report#2", "carol", OPTIONS)

    infos = {i.name: i for i in schedules_overview(gatehouse.rt, OPTIONS)}

    hourly = infos["s_hourly"]
    assert hourly.next_fire == MONDAY_9_UTC + timedelta(hours=1)
    assert hourly.last_fire is not None
    assert (hourly.last_fire.fire_time, hourly.last_fire.run_id) == (MONDAY_9_UTC, fired.run_id)
    assert infos["s_report#2"].paused and infos["s_report#2"].paused_by == "carol"
    assert infos["s_report"].last_fire is None
    assert infos["s_report"].next_fire == datetime(2026, 11, 9, 8, tzinfo=UTC)
    as_json = hourly.to_json()
    assert as_json["next_fire"] == "2026-11-02T10:00:00+00:00"
    assert as_json["last_fire"]["outcome"] == "fired"


# -- gatehouse schedules ----------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.schedule_pipelines")
    monkeypatch.setenv("GATEHOUSE_TIMEZONE", "Europe/Paris")
    for name in ("GATEHOUSE_LOG_LEVEL", "GATEHOUSE_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    yield sqlite_url


def gatehouse_cli(*args: str) -> Result:
    """`gatehouse schedules …` as the lead mounts it under the root command."""
    root = typer.Typer(cls=GatehouseGroup, add_completion=False)

    @root.callback()
    def _root() -> None: ...

    root.add_typer(cli_schedules.app, name="schedules")
    return CliRunner().invoke(root, ["schedules", *args])


def test_cli_lists_schedules_by_default_in_text_and_json(cli: str) -> None:
    text = gatehouse_cli()
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["schedule", "pipeline", "trigger", "next", "fire", "last", "fire"]
    report = next(line for line in lines if line.startswith("s_report "))
    assert "09:00:00 CET" in report or "09:00:00 CEST" in report  # shown in its own zone
    assert any("s_needs_input: input {} does not fit" in line for line in lines)

    listed = json.loads(gatehouse_cli("list", "--json").stdout)
    assert json.loads(gatehouse_cli("--json").stdout) == listed
    by_name = {s["name"]: s for s in listed}
    assert by_name["s_report#2"]["misfire"] == "skip"
    assert by_name["s_hourly"]["timezone"] == "Europe/Paris"
    assert by_name["s_hourly"]["last_fire"] is None


def test_cli_pauses_and_resumes_for_a_user(cli: str) -> None:
    paused = gatehouse_cli("pause", "s_hourly", "--as", "alice")
    assert paused.exit_code == 0, paused.output
    assert "paused s_hourly" in paused.stdout
    listed = {s["name"]: s for s in json.loads(gatehouse_cli("--json").stdout)}
    assert listed["s_hourly"]["paused"] and listed["s_hourly"]["paused_by"] == "alice"
    assert "paused by alice" in gatehouse_cli().stdout

    resumed = json.loads(gatehouse_cli("resume", "s_hourly", "--as", "bob", "--json").stdout)
    assert resumed["paused"] is False and resumed["next_fire"] is not None


def test_cli_pause_of_an_unknown_schedule_is_one_error_line(cli: str) -> None:
    result = gatehouse_cli("pause", "s_nope", "--as", "alice")
    assert result.exit_code == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: no schedule named 's_nope'; schedules: ")


def test_cli_pause_needs_a_user(cli: str) -> None:
    result = gatehouse_cli("pause", "s_hourly")
    assert result.exit_code == 2
    assert "--as" in result.stderr


# -- the APScheduler wrapper -----------------------------------------------------------------


@pytest.fixture
def scheduler_settings(sqlite_url: str) -> Settings:
    return Settings(database_url=sqlite_url, timezone="UTC", misfire_grace_seconds=300)


@pytest.fixture
def scheduler_handles(
    scheduler_settings: Settings,
) -> Iterator[list[tuple[SchedulerHandle, Gatehouse]]]:
    """Schedulers on the real clock (APScheduler's), each with its own engine, stopped after."""
    made: list[tuple[SchedulerHandle, Gatehouse]] = []
    yield made
    for handle, gh in made:
        handle.shutdown()
        gh.db.dispose()


def start(
    settings: Settings,
    made: list[tuple[SchedulerHandle, Gatehouse]],
    clock: FakeClock | None = None,
    **kwargs: bool,
) -> tuple[SchedulerHandle, Gatehouse]:
    gh = Gatehouse(Database(settings.database_url), clock=clock)
    handle = start_scheduler(gh, settings, **kwargs)
    made.append((handle, gh))
    return handle, gh


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll for what a scheduler thread does: APScheduler runs on the real clock."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the scheduler did not fire in time"
        time.sleep(0.01)


def test_scheduler_adds_one_job_per_schedule_at_its_next_fire_time(
    scheduler_settings: Settings, scheduler_handles: list[tuple[SchedulerHandle, Gatehouse]]
) -> None:
    before = datetime.now(UTC)
    handle, _ = start(scheduler_settings, scheduler_handles, catch_up_missed=False)
    after = datetime.now(UTC)
    assert set(all_schedules(OPTIONS)) <= set(handle.job_names())
    for name, schedule in all_schedules(OPTIONS).items():
        expected = {next_fire_time(schedule.timetable, t) for t in (before, after)}
        assert handle.next_fire(name) in expected


def test_scheduler_job_fires_with_its_due_time_not_the_time_it_ran(
    scheduler_settings: Settings, scheduler_handles: list[tuple[SchedulerHandle, Gatehouse]]
) -> None:
    handle, gh = start(scheduler_settings, scheduler_handles, catch_up_missed=False)
    due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)

    handle.scheduler.modify_job("s_hourly", next_run_time=due)

    wait_for(lambda: list_fires(gh.rt, "s_hourly"))
    [record] = list_fires(gh.rt, "s_hourly")
    assert (record.fire_time, record.outcome) == (due, "fired")
    assert gh.run(str(record.run_id)).status == RunStatus.QUEUED


def test_a_claimed_system_job_runs_in_one_of_two_schedulers(
    scheduler_settings: Settings, scheduler_handles: list[tuple[SchedulerHandle, Gatehouse]]
) -> None:
    calls: list[tuple[str, datetime]] = []
    lock = threading.Lock()
    handles = []
    for label in ("a", "b"):
        handle, _ = start(scheduler_settings, scheduler_handles, catch_up_missed=False)

        def job(fire_time: datetime, label: str = label) -> None:
            with lock:
                calls.append((label, fire_time))

        job_id = handle.add_system_job("weekly_review", "0 9 * * MON", job, claim=True)
        assert job_id == "system:weekly_review"
        handles.append(handle)
    next_review = handles[0].next_fire("system:weekly_review")
    assert next_review is not None and next_review.weekday() == 0

    due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    for handle in handles:
        handle.scheduler.modify_job("system:weekly_review", next_run_time=due)
    wait_for(lambda: calls)
    for handle in handles:  # both have run the job function (or refused the claim) by now
        handle.shutdown(wait=True)

    assert [fire_time for _, fire_time in calls] == [due]


def test_an_unclaimed_system_job_on_an_interval_gets_each_due_time(
    scheduler_settings: Settings, scheduler_handles: list[tuple[SchedulerHandle, Gatehouse]]
) -> None:
    handle, _ = start(scheduler_settings, scheduler_handles, catch_up_missed=False)
    seen: list[datetime] = []
    handle.add_system_job("alerts", "1m", seen.append)
    next_fire = handle.next_fire("system:alerts")
    assert next_fire is not None and next_fire.second == 0 and next_fire.microsecond == 0

    due = datetime.now(UTC).replace(microsecond=0)
    handle.scheduler.modify_job("system:alerts", next_run_time=due)
    wait_for(lambda: seen)
    assert seen == [due]


def test_scheduler_start_catches_up_the_missed_fires(
    scheduler_settings: Settings, scheduler_handles: list[tuple[SchedulerHandle, Gatehouse]]
) -> None:
    # The engine's clock says the process comes up at 09:02 on a Monday (APScheduler itself
    # runs on the real clock; its next fires are far from this test).
    handle, _ = start(
        scheduler_settings, scheduler_handles, FakeClock(MONDAY_9_UTC + timedelta(minutes=2))
    )
    caught = {r.schedule: (r.fire_time, r.outcome) for r in handle.caught_up}
    assert caught == {
        "s_hourly": (MONDAY_9_UTC, "late"),
        "s_needs_input": (MONDAY_9_UTC, "late"),
        "s_report#2": (MONDAY_9_UTC, "skipped"),  # misfire="skip"
    }  # s_report fired at 08:00 UTC, before the 5-minute grace

    second, _ = start(
        scheduler_settings, scheduler_handles, FakeClock(MONDAY_9_UTC + timedelta(minutes=3))
    )
    assert {r.schedule: r.outcome for r in second.caught_up} == dict.fromkeys(caught, "taken")


# -- both databases ---------------------------------------------------------------------------


def test_claims_pauses_and_fires_behave_the_same_on_both_databases(any_db_url: str) -> None:
    clock = FakeClock(MONDAY_9_UTC + timedelta(seconds=1))
    gh = Gatehouse(any_db_url, clock=clock)
    try:
        first = fire(gh.rt, "s_hourly", MONDAY_9_UTC, OPTIONS)
        assert first.outcome == "fired"
        assert fire(gh.rt, "s_hourly", MONDAY_9_UTC, OPTIONS).outcome == "taken"
        at(clock, MONDAY_9_UTC + timedelta(minutes=90))
        late = fire(gh.rt, "s_hourly", MONDAY_9_UTC + timedelta(hours=1), OPTIONS)
        assert late.outcome == "skipped"  # 30 minutes late, the grace is 5
        older = fire(gh.rt, "s_hourly", MONDAY_9_UTC - timedelta(hours=1), OPTIONS)
        assert older.outcome == "superseded"

        pause(gh.rt, "s_hourly", "alice", OPTIONS)
        pause(gh.rt, "s_hourly", "bob", OPTIONS)  # the upsert: paused again, by bob now
        at(clock, MONDAY_9_UTC + timedelta(hours=2))
        assert fire(gh.rt, "s_hourly", clock.now(), OPTIONS).outcome == "paused"
        [paused] = [i for i in schedules_overview(gh.rt, OPTIONS) if i.name == "s_hourly"]
        assert paused.paused_by == "bob"
        info = resume(gh.rt, "s_hourly", "carol", OPTIONS)
        assert not info.paused and info.last_fire is not None
        assert info.last_fire.outcome == "skipped"
        at(clock, MONDAY_9_UTC + timedelta(hours=3))
        assert fire(gh.rt, "s_hourly", clock.now(), OPTIONS).outcome == "fired"
        assert [f.outcome for f in list_fires(gh.rt, "s_hourly")] == ["fired", "skipped", "fired"]
        assert len(runs_of(gh, "s_hourly")) == 2
    finally:
        gh.db.dispose()
