"""Budgets that stop a runaway: the run budget stops the next model call (a person answers in
its place, or the run fails), the day budget and the run rate are shared by every process on the
database and raise a budget alert, and a model without a price is not called under a budget."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from typer.testing import CliRunner, Result

from bot.cli.main import app
from bot.http.metrics import metrics_routes
from bot.http.server import BackgroundServer
from bot.slack.alert_pause_cards import KEEP_PAUSED_ACTION, RESUME_ACTION
from bot.slack.alerts import check_alerts
from pipelines import Gatehouse, LLMConfig, Price, Settings, pipeline
from pipelines.budget_limits import InvalidBudget
from pipelines.config import ConfigurationError
from pipelines.llm import DEFAULT_PRICES
from pipelines.operations.alerting import list_alerts
from pipelines.pauses import PipelinePaused
from pipelines.views import TaskView
from storage.db import Database
from tests import budget_pipelines  # noqa: F401  (registers the b_ pipelines)
from tests.budget_pipelines import Asks
from tests.fakes.clock import FakeClock
from tests.fakes.openai import FakeOpenAI, Reply, reply_delay, reply_json
from tests.fakes.slack import FakeSlack
from tests.slack_harness import slack_world
from tests.test_metrics import assert_valid_exposition, samples

# 1 prompt token = 0.01 USD: a reply of 13 prompt tokens costs 0.13 USD.
PRICES = {**DEFAULT_PRICES, "budget-model": Price(prompt=10_000.0, completion=0.0)}
A_REFUND = {"kind": "refund", "confidence": 0.9}


def costs_13_cents() -> Reply:
    return reply_json(A_REFUND, prompt_tokens=13, completion_tokens=0)


def llm(fake: FakeOpenAI) -> LLMConfig:
    return LLMConfig(model="budget-model", base_url=fake.base_url, max_retries=0, prices=PRICES)


@pytest.fixture
def database(any_db_url: str) -> Iterator[Database]:
    database = Database(any_db_url)
    yield database
    database.dispose()


@pytest.fixture
def engine(database: Database, clock: FakeClock, fake_openai: FakeOpenAI) -> Gatehouse:
    fake_openai.always(costs_13_cents())
    return Gatehouse(database, clock=clock, llm=llm(fake_openai))


def open_task(engine: Gatehouse, run_id: str) -> TaskView:
    [task] = [t for t in engine.pending() if isinstance(t, TaskView) and t.run_id == run_id]
    return task


# -- the run budget -------------------------------------------------------------------------


def test_a_run_at_its_budget_makes_no_further_model_call_and_a_person_answers_in_its_place(
    engine: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    run = engine.trigger("b_run_budget", Asks(calls=6))

    assert run.status == "waiting"
    assert fake_openai.calls == 4  # 0.52 USD spent after four: the fifth is not sent
    task = open_task(engine, run.id)
    assert task.context["reason"] == "run budget 0.50 USD reached (spent 0.52 USD in 4 model calls)"
    assert "run budget 0.50 USD reached" in task.question

    engine.answer(task.id, user="olga", answer=A_REFUND)
    resumed = engine.resume(run.id)
    assert resumed is not None and resumed.status == "waiting"  # the sixth goes to a person too
    assert fake_openai.calls == 4


def test_on_budget_fail_fails_the_run_before_the_call_and_says_what_to_do(
    engine: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    run = engine.trigger("b_run_budget_fail", Asks(calls=6))

    assert run.status == "failed"
    assert fake_openai.calls == 4
    assert run.error is not None
    assert run.error.startswith(
        "BudgetExceeded: run budget 0.50 USD reached (spent 0.52 USD in 4 model calls); "
        "the run stopped before model call classify#5."
    )
    assert "Raise the budget (@pipeline or GATEHOUSE_BUDGETS)" in run.error


def test_with_on_fail_raise_the_pipeline_gets_cannot_answer_with_the_budget_reason(
    engine: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    run = engine.trigger("b_run_budget_raise", Asks(calls=3))
    assert run.status == "succeeded" and fake_openai.calls == 2
    assert run.output == "classify: run budget 0.20 USD reached (spent 0.26 USD in 2 model calls)"


def test_a_pipeline_without_a_budget_is_not_counted_or_stopped(
    engine: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    run = engine.trigger("b_unbudgeted", Asks(calls=6))
    assert run.status == "succeeded" and fake_openai.calls == 6


def test_a_model_without_a_price_is_not_called_under_a_money_budget(
    engine: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    run = engine.trigger("b_run_budget", Asks(calls=1, model="mystery-model"))

    assert run.status == "waiting" and fake_openai.calls == 0
    reason = open_task(engine, run.id).context["reason"]
    assert reason.startswith("no price is configured for model mystery-model, so its spend is")
    assert "GATEHOUSE_LLM_PRICES" in reason


# -- the day budget and the run rate ---------------------------------------------------------


def test_a_pipeline_over_its_day_budget_is_paused_with_a_budget_alert_until_resumed(
    engine: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    runs = [engine.trigger("b_day_budget", Asks()) for _ in range(4)]

    # 0.13, 0.26, 0.39 USD: the fourth run's call is not sent; the pipeline is paused.
    assert [r.status for r in runs] == ["succeeded", "succeeded", "succeeded", "waiting"]
    assert fake_openai.calls == 3
    pause = engine.pipeline_pause("b_day_budget")
    assert pause is not None
    assert (pause.by, pause.source) == ("gatehouse", "budget:day")
    assert pause.reason == "day budget 0.30 USD reached (0.39 USD today)"
    [alert] = [a for a in list_alerts(engine.rt) if a.rule == "budget"]
    assert alert.pipeline == "b_day_budget" and alert.is_open
    assert alert.detail("reason") == "day budget 0.30 USD reached (0.39 USD today)"
    assert alert.detail("figures")["spent_usd"] == pytest.approx(0.39)
    assert alert.detail("figures")["limit_usd"] == 0.30

    # It stays paused: the next day, the held run still waits for someone to resume it.
    engine.rt.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
    assert engine.resume(runs[3].id) is None and fake_openai.calls == 3
    engine.resume_pipeline("b_day_budget", user=None, reason="new day")
    resumed = engine.resume(runs[3].id)
    assert resumed is not None and resumed.status == "succeeded"
    assert fake_openai.calls == 4


def test_a_new_run_over_the_hourly_run_rate_pauses_the_pipeline_with_a_budget_alert(
    engine: Gatehouse,
) -> None:
    engine.trigger("b_rate", Asks())
    engine.trigger("b_rate", Asks(), run_here=False)

    with pytest.raises(PipelinePaused) as refused:
        engine.trigger("b_rate", Asks())
    assert "b_rate is paused by gatehouse" in str(refused.value)
    assert "(budget:rate): run rate 2/hour reached (2 runs in the last hour)" in str(refused.value)
    assert len(engine.runs(pipeline="b_rate")) == 2
    pause = engine.pipeline_pause("b_rate")
    assert pause is not None and pause.source == "budget:rate"
    [alert] = [a for a in list_alerts(engine.rt) if a.rule == "budget"]
    assert alert.detail("figures") == {"runs_last_hour": 2, "max_runs_per_hour": 2}


@pytest.mark.postgres
def test_two_workers_racing_for_the_last_of_a_day_budget_do_not_both_spend_it(
    postgres_url: str, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    first_db, second_db = Database(postgres_url), Database(postgres_url)
    first = Gatehouse(first_db, clock=clock, llm=llm(fake_openai), worker_id="w1")
    second = Gatehouse(second_db, clock=clock, llm=llm(fake_openai), worker_id="w2")
    try:
        fake_openai.always(costs_13_cents())
        assert first.trigger("b_day_budget", Asks()).status == "succeeded"
        assert second.trigger("b_day_budget", Asks()).status == "succeeded"  # 0.26 of 0.30
        # The first worker's next call is in flight (the server holds it) when the second asks.
        fake_openai.always(reply_delay(1.0, costs_13_cents()))
        racing = threading.Thread(target=first.trigger, args=("b_day_budget", Asks()))
        racing.start()
        deadline = time.monotonic() + 10
        while fake_openai.calls < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake_openai.calls == 3

        refused = second.trigger("b_day_budget", Asks())
        racing.join(timeout=10)

        assert refused.status == "waiting"
        assert fake_openai.calls == 3  # the second worker did not spend what the first reserved
        pause = second.pipeline_pause("b_day_budget")
        assert pause is not None
        assert pause.reason == (
            "day budget 0.30 USD reached (0.26 USD today, 0.13 USD reserved by 1 model call "
            "in flight)"
        )
    finally:
        first_db.dispose()
        second_db.dispose()


@pytest.mark.postgres
def test_the_run_rate_is_counted_across_workers_sharing_the_database(
    postgres_url: str, clock: FakeClock
) -> None:
    first_db, second_db = Database(postgres_url), Database(postgres_url)
    first = Gatehouse(first_db, clock=clock, worker_id="w1")
    second = Gatehouse(second_db, clock=clock, worker_id="w2")
    try:
        first.trigger("b_rate", Asks())
        second.trigger("b_rate", Asks())
        with pytest.raises(PipelinePaused):
            first.trigger("b_rate", Asks())
        with pytest.raises(PipelinePaused):  # the pause is shared too
            second.trigger("b_rate", Asks())
        assert len(first.runs(pipeline="b_rate")) == 2
    finally:
        first_db.dispose()
        second_db.dispose()


# -- declaring and configuring ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"max_cost_per_run": -1},
            "pipeline 'b_bad': max_cost_per_run must be above 0 USD, got -1",
        ),
        ({"max_cost_per_day": "20"}, "pipeline 'b_bad': max_cost_per_day must be a number of USD"),
        ({"max_runs_per_hour": 0.5}, "pipeline 'b_bad': max_runs_per_hour must be a whole number"),
        ({"on_budget": "maybe"}, "pipeline 'b_bad': on_budget='maybe': use 'human'"),
    ],
)
def test_a_budget_that_cannot_be_kept_is_refused_at_registration(
    arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidBudget) as refused:
        pipeline("b_bad", input=Asks, **arguments)  # type: ignore[arg-type]
    assert str(refused.value).startswith(message)


def test_gatehouse_budgets_naming_an_unknown_pipeline_or_key_stops_start_up(
    sqlite_url: str,
) -> None:
    settings = Settings(
        database_url=sqlite_url,
        pipelines="tests.budget_pipelines",
        budgets={"b_nope": {"max_cost_per_day": 5}, "b_day_budget": {"max_cost_per_week": 5}},
    )
    with pytest.raises(ConfigurationError) as refused:
        Gatehouse.from_settings(settings)
    message = str(refused.value)
    assert "GATEHOUSE_BUDGETS names no such pipeline: b_nope" in message
    assert "GATEHOUSE_BUDGETS['b_day_budget']: unknown key 'max_cost_per_week'" in message


def test_the_cli_refuses_to_start_with_a_budget_for_a_pipeline_that_does_not_exist(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.budget_pipelines")
    monkeypatch.setenv("GATEHOUSE_BUDGETS", '{"b_nope": {"max_cost_per_day": 5}}')
    result = cli("stats")
    assert result.exit_code == 1
    error = result.stderr
    assert "GATEHOUSE_BUDGETS names no such pipeline: b_nope (pipelines: " in error
    assert "b_day_budget" in error


def test_gatehouse_budgets_overrides_the_decorators_budget(
    sqlite_url: str, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    settings = Settings(
        database_url=sqlite_url,
        pipelines="tests.budget_pipelines",
        budgets={
            "b_day_budget": {"max_cost_per_day": 0.1},
            "b_unbudgeted": {"max_cost_per_run": 0.2},
        },
    )
    engine = Gatehouse.from_settings(settings, clock=clock)
    engine.rt.llm_config = llm(fake_openai)
    fake_openai.always(costs_13_cents())

    assert engine.trigger("b_day_budget", Asks()).status == "succeeded"
    assert engine.trigger("b_day_budget", Asks()).status == "waiting"
    assert engine.trigger("b_unbudgeted", Asks(calls=3)).status == "waiting"
    assert fake_openai.calls == 1 + 2


# -- what the displays show ------------------------------------------------------------------


@pytest.fixture
def today_engine(
    sqlite_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Gatehouse]:
    """An engine whose clock starts at the real now, as the CLI's does (its day is the CLI's)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.budget_pipelines")
    database = Database(sqlite_url)
    fake_openai.always(costs_13_cents())
    yield Gatehouse(database, clock=FakeClock(datetime.now(UTC)), llm=llm(fake_openai))
    database.dispose()


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def budget_of(stats: dict[str, Any], pipeline: str) -> dict[str, Any]:
    [found] = [b for b in stats["budgets"] if b["pipeline"] == pipeline]
    return found


def budget_answer(pipeline: str) -> dict[str, Any]:
    ready = json.loads(cli("ready", pipeline, "--json").stdout)
    [answer] = [a for a in ready["pipelines"][0]["answers"] if a["question"] == "budget"]
    return answer


def test_stats_and_ready_show_each_budget_and_what_is_left_amber_near_and_red_over(
    today_engine: Gatehouse,
) -> None:
    today_engine.trigger("b_day_budget", Asks())
    today_engine.trigger("b_day_budget", Asks())  # 0.26 of 0.30 USD: 87%

    stats = json.loads(cli("stats", "--json").stdout)
    day = budget_of(stats, "b_day_budget")
    assert day["max_cost_per_day"] == 0.30 and day["spent_today_usd"] == pytest.approx(0.26)
    assert day["left_today_usd"] == pytest.approx(0.04) and day["state"] == "near"
    assert budget_of(stats, "b_rate")["max_runs_per_hour"] == 2
    text = cli("stats").stdout
    assert re.search(r"^b_day_budget +day 0\.26 of 0\.30 USD \(0\.04 left\)  \(near\)$", text, re.M)
    assert re.search(r"^b_run_budget +run ≤ 0\.50 USD$", text, re.M)
    amber = budget_answer("b_day_budget")
    assert amber["status"] == "amber"
    assert amber["reason"] == "87% of a limit used: day 0.26 of 0.30 USD (0.04 left)"
    assert "amber  budget    87% of a limit used" in cli("ready", "b_day_budget").stdout

    today_engine.trigger("b_day_budget", Asks())  # 0.39 USD
    red = budget_answer("b_day_budget")
    assert red["status"] == "red"
    assert red["reason"].startswith("day budget 0.30 USD reached (0.39 USD today)")
    assert budget_of(json.loads(cli("stats", "--json").stdout), "b_day_budget")["state"] == "over"


def test_metrics_show_each_budgets_spend_limits_and_what_is_left(
    engine: Gatehouse, database: Database
) -> None:
    engine.trigger("b_day_budget", Asks())
    engine.trigger("b_day_budget", Asks())
    server = BackgroundServer(Starlette(routes=metrics_routes(engine))).start()
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.stop()

    assert_valid_exposition(text)
    found = samples(text)
    day = '{pipeline="b_day_budget",window="day"}'
    assert found[f"gatehouse_budget_spent_usd{day}"] == pytest.approx(0.26)
    assert found[f"gatehouse_budget_limit_usd{day}"] == 0.30
    assert found[f"gatehouse_budget_left_usd{day}"] == pytest.approx(0.04)
    assert found[f"gatehouse_budget_unpriced_calls{day}"] == 0
    assert found['gatehouse_budget_limit_usd{pipeline="b_run_budget",window="run"}'] == 0.5
    assert found['gatehouse_budget_runs_limit{pipeline="b_rate",window="hour"}'] == 2


def test_app_home_shows_the_budgets_and_what_is_left(
    fake_slack: FakeSlack,
    sqlite_url: str,
    clock: FakeClock,
    fake_openai: FakeOpenAI,
    slack_mode: str,
) -> None:
    fake_openai.always(costs_13_cents())
    with slack_world(fake_slack, sqlite_url, clock, mode=slack_mode) as world:
        world.gatehouse.rt.llm_config = llm(fake_openai)
        for _ in range(3):
            world.gatehouse.trigger("b_day_budget", Asks())  # 0.39 of 0.30 USD
        world.slack.app_home_opened(user_id="U_ALICE")
        world.settle()
        home = world.fake.home("U_ALICE")

    assert home is not None
    shown = json.dumps(home["blocks"])
    assert '"Budgets"' in shown
    assert ":red_circle: *b_day_budget* day 0.39 of 0.30 USD (0.00 left)" in shown
    assert ":large_green_circle: *b_rate* runs 0 of 2 this hour" in shown


def test_the_budget_alert_is_posted_in_the_alerts_channel_with_its_figures(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(costs_13_cents())
    with slack_world(fake_slack, sqlite_url, clock, alerts_channel="C_ALERTS") as world:
        world.gatehouse.rt.llm_config = llm(fake_openai)
        for _ in range(4):
            world.gatehouse.trigger("b_day_budget", Asks())  # the fourth is over 0.30 USD
        posted = check_alerts(world.bot)  # the minute's alert check posts what is owed
        messages = world.fake.messages("C_ALERTS")

    [message] = messages
    assert [stage for _alert, stage in posted.posted] == ["opened"]
    shown = json.dumps(message)
    assert message["text"] == (
        "Budget alert: b_day_budget: day budget 0.30 USD reached (0.39 USD today); the pipeline "
        "is paused"
    )
    assert "Budget alert: b_day_budget" in shown
    assert "*day budget 0.30 USD reached (0.39 USD today)*" in shown
    assert "Spent 0.39 USD in 3 model call(s) since UTC midnight; the limit is 0.30 USD." in shown
    assert "Gatehouse paused the pipeline: it takes no new run" in shown
    assert "`/gatehouse resume b_day_budget`" in shown
    assert RESUME_ACTION in shown and KEEP_PAUSED_ACTION in shown  # the pause's own buttons


def test_resume_on_a_budget_alert_resumes_its_pipeline(
    fake_slack: FakeSlack,
    sqlite_url: str,
    clock: FakeClock,
    fake_openai: FakeOpenAI,
    slack_mode: str,
) -> None:
    fake_openai.always(costs_13_cents())
    with slack_world(
        fake_slack, sqlite_url, clock, mode=slack_mode, alerts_channel="C_ALERTS"
    ) as world:
        world.gatehouse.rt.llm_config = llm(fake_openai)
        for _ in range(4):
            world.gatehouse.trigger("b_day_budget", Asks())
        check_alerts(world.bot)
        [message] = world.fake.messages("C_ALERTS")
        assert world.gatehouse.pipeline_pause("b_day_budget") is not None
        world.slack.block_action(RESUME_ACTION, message=message["ts"], user_id="U_ALICE")
        world.settle()
        assert world.gatehouse.pipeline_pause("b_day_budget") is None
        [updated] = world.fake.messages("C_ALERTS")
        assert "Resumed by" in json.dumps(updated)
