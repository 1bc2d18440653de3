"""The quiet-failure rules: PSI on known distributions; human exits and confidence per LLM call
on a fake clock (open, quiet, recover); input and output drift (open once, recover); once
across replicas; what `ctx.llm` records for them; the migration of existing alerts."""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated, Any, Literal

import pytest
from alembic import command
from alembic.config import Config
from pydantic import BaseModel
from sqlalchemy import Integer, String, column, insert, select, table

from pipelines import Context, Gatehouse, pipeline
from pipelines.categorical import Categorical, categorical_fields
from pipelines.operations.alerting import (
    CONFIDENCE_DROP,
    HUMAN_EXIT_RATE,
    INPUT_DRIFT,
    OUTPUT_DRIFT,
    AlertChange,
    AlertPolicy,
    Thresholds,
    list_alerts,
)
from pipelines.operations.alerts import evaluate
from pipelines.operations.drift import drift_figures, evaluate_drift, psi, psi_terms
from storage.alerts import alerts_table, insert_open_alert
from storage.calls import calls_table
from storage.db import MIGRATIONS_DIR, Database
from storage.runs import runs_table
from storage.types import JSONValue, UTCDateTime
from tests import llm_pipelines as lp
from tests.concurrency import at_once
from tests.fakes.clock import FakeClock

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
POLICY = AlertPolicy()  # 15 min window, 24 h baseline; 7 d against 28 d for drift
# Drift counts whole UTC days: the clock starts at 09:00, so recent runs end 10 h before it
# (yesterday) to all be in the last 7 days.
KEY = "classify#1"
_ids = itertools.count()


class Channel(enum.Enum):
    EMAIL = "email"
    CHAT = "chat"


class Inquiry(BaseModel):
    text: str
    region: Annotated[str, Categorical]
    channel: Channel = Channel.EMAIL


class Routed(BaseModel):
    queue: Literal["billing", "support", "sales"]
    note: str = ""


@pipeline("d_route", input=Inquiry)
def d_route(ctx: Context, inquiry: Inquiry) -> Routed:
    """Registered for its categorical fields; the tests write its runs directly."""
    return Routed(queue="support")


@pytest.fixture
def engine(any_db_url: str, clock: FakeClock) -> Iterator[Gatehouse]:
    database = Database(any_db_url)
    yield Gatehouse(database, clock=clock)
    database.dispose()


def add_runs(
    gatehouse: Gatehouse,
    pipeline_name: str,
    count: int,
    *,
    at: datetime,
    spacing: timedelta = timedelta(seconds=1),
    input: Callable[[int], Any] = lambda i: {"text": "hi"},
    output: Callable[[int], Any] = lambda i: None,
    call: Callable[[int], dict[str, Any] | None] = lambda i: None,
) -> None:
    """`count` runs created `spacing` apart up to `at`, succeeded; with `call(i)` the values of
    one LLM call row (meta, output, status) each."""
    runs, calls = [], []
    for i in range(count):
        created = at - spacing * (count - 1 - i)
        run_id = f"run_{next(_ids):016x}"
        runs.append(
            {
                "id": run_id,
                "pipeline": pipeline_name,
                "status": "succeeded",
                "input": input(i),
                "output": output(i),
                "created_at": created,
                "started_at": created,
                "finished_at": created,
                "updated_at": created,
            }
        )
        values = call(i)
        if values is not None:
            calls.append(
                {
                    "id": f"call_{next(_ids):016x}",
                    "run_id": run_id,
                    "seq": 0,
                    "key": values.get("key", KEY),
                    "kind": "llm",
                    "name": values.get("key", KEY).split("#")[0],
                    "status": values.get("status", "succeeded"),
                    "input": {},
                    "output": values.get("output"),
                    "started_at": created,
                    "finished_at": created,
                    "meta": values["meta"],
                }
            )
    with gatehouse.db.transaction() as conn:
        conn.execute(insert(runs_table), runs)
        if calls:
            conn.execute(insert(calls_table), calls)


def llm_calls(
    gatehouse: Gatehouse,
    pipeline_name: str,
    *,
    at: datetime,
    exits: int = 0,
    answered: int = 0,
    confidence: float | Sequence[float] = 0.9,
    key: str = KEY,
) -> None:
    """`exits` calls that took the human exit, then `answered` the model answered, each with a
    confidence (one for all, or one each)."""

    def values(i: int) -> dict[str, Any]:
        level = confidence if isinstance(confidence, float) else confidence[i]
        exited = i < exits
        return {
            "key": key,
            "status": "awaiting_human" if exited else "succeeded",
            "meta": {"human_exit": exited, "confidence": level},
        }

    add_runs(gatehouse, pipeline_name, exits + answered, at=at, call=values)


def kinds(changes: Sequence[AlertChange]) -> list[tuple[str, str, str]]:
    return [(c.kind, c.alert.rule, c.alert.subject) for c in changes]


def alert_rows(gatehouse: Gatehouse) -> list[Any]:
    with gatehouse.db.transaction() as conn:
        return list(conn.execute(select(alerts_table).order_by(alerts_table.c.id)).all())


# -- PSI -----------------------------------------------------------------------------------------


def test_psi_of_identical_distributions_is_zero() -> None:
    assert psi({"a": 30, "b": 70}, {"a": 30, "b": 70}) == 0
    assert psi({"a": 3, "b": 7}, {"a": 300, "b": 700}) == pytest.approx(0, abs=1e-12)


def test_psi_of_a_known_shift_matches_the_hand_computed_value() -> None:
    # (0.9 - 0.5) ln(0.9 / 0.5) + (0.1 - 0.5) ln(0.1 / 0.5) = 0.235115 + 0.643775
    assert psi({"a": 50, "b": 50}, {"a": 90, "b": 10}) == pytest.approx(0.878890, abs=1e-6)
    # A small shift: 2 (0.05 ln 1.2) + 2 (0.05 ln 1.25) = 0.040546, under the 0.2 bar.
    small = psi({"a": 25, "b": 25, "c": 25, "d": 25}, {"a": 30, "b": 30, "c": 20, "d": 20})
    assert small == pytest.approx(0.040546, abs=1e-6)


def test_psi_floors_a_new_or_vanished_category_at_a_small_epsilon() -> None:
    # New "b": (0.5 - 1e-4) ln(0.5 / 1e-4); "a": (0.5 - 1) ln(0.5).
    expected = (0.5 - 1e-4) * math.log(0.5 / 1e-4) + 0.5 * math.log(2)
    assert psi({"a": 100}, {"a": 50, "b": 50}) == pytest.approx(expected)
    assert math.isfinite(psi({"a": 50, "b": 50}, {"a": 100}))
    assert psi({}, {}) == 0
    [top, *_] = psi_terms({"a": 100}, {"a": 50, "b": 50})
    assert (top.value, top.reference_share, top.recent_share) == ("b", 0.0, 0.5)


def test_categorical_fields_are_enums_literals_and_marked_fields() -> None:
    assert categorical_fields(Inquiry) == ("region", "channel")
    assert categorical_fields(Routed) == ("queue",)
    assert categorical_fields(lp.Label) == ("kind",)


# -- human exits ---------------------------------------------------------------------------------


def test_a_human_exit_spike_opens_stays_quiet_and_recovers(
    engine: Gatehouse, clock: FakeClock
) -> None:
    now = clock.now()
    llm_calls(engine, "triage", at=now - 3 * HOUR, exits=10, answered=190)  # baseline 5%
    llm_calls(engine, "triage", at=now, exits=12, answered=18)  # 40% of 30

    [change] = evaluate(engine.rt, POLICY)

    alert = change.alert
    assert kinds([change]) == [("opened", HUMAN_EXIT_RATE, "triage · llm classify#1")]
    assert (alert.rate, alert.baseline, alert.window_runs) == (pytest.approx(0.4), 0.05, 30)
    assert alert.detail("call_key") == KEY
    assert alert.detail("figures")["human_exits"] == 12

    clock.advance(MIN)
    llm_calls(engine, "triage", at=clock.now(), exits=10)
    assert evaluate(engine.rt, POLICY) == []  # quiet while open

    clock.advance(16 * MIN)  # nothing in the window: under the bar since now
    assert evaluate(engine.rt, POLICY) == []
    clock.advance(15 * MIN)
    [recovered] = evaluate(engine.rt, POLICY)
    assert recovered.kind == "recovered" and recovered.alert.id == alert.id
    assert [a.status for a in list_alerts(engine.rt)] == ["recovered"]


def test_human_exits_under_the_floor_factor_or_volume_open_nothing(
    engine: Gatehouse, clock: FakeClock
) -> None:
    now = clock.now()
    llm_calls(engine, "steady", at=now - 3 * HOUR, exits=60, answered=140)  # baseline 30%
    llm_calls(engine, "steady", at=now, exits=10, answered=20)  # 33% < 2 x 30%
    llm_calls(engine, "low", at=now, exits=2, answered=28)  # 6.7% < the 10% floor
    llm_calls(engine, "few", at=now, exits=10, answered=9)  # 19 calls < 20
    assert evaluate(engine.rt, POLICY) == []


def test_a_pipeline_with_several_calls_alerts_per_call_and_as_a_whole(
    engine: Gatehouse, clock: FakeClock
) -> None:
    now = clock.now()
    llm_calls(engine, "p", at=now, exits=10, answered=10, key="classify#1")
    llm_calls(engine, "p", at=now, exits=10, answered=10, key="draft#1")
    assert sorted(kinds(evaluate(engine.rt, POLICY))) == [
        ("opened", HUMAN_EXIT_RATE, "p"),
        ("opened", HUMAN_EXIT_RATE, "p · llm classify#1"),
        ("opened", HUMAN_EXIT_RATE, "p · llm draft#1"),
    ]


def test_an_error_rate_alert_and_a_human_exit_alert_are_open_together_on_one_pipeline(
    engine: Gatehouse, clock: FakeClock
) -> None:
    values: dict[str, Any] = {
        "pipeline": "triage",
        "now": clock.now(),
        "rate": 0.5,
        "baseline": None,
        "window_runs": 10,
        "details": {},
    }
    with engine.db.transaction() as conn:
        assert insert_open_alert(conn, **values) is not None
        assert insert_open_alert(conn, **values, rule=HUMAN_EXIT_RATE) is not None
        assert insert_open_alert(conn, **values, rule=HUMAN_EXIT_RATE) is None
    assert [(r.rule, r.subject) for r in alert_rows(engine)] == [
        ("error_rate", "triage"),
        (HUMAN_EXIT_RATE, "triage"),
    ]


# -- confidence ----------------------------------------------------------------------------------


def test_a_confidence_drop_opens_and_recovers_when_the_mean_comes_back(
    engine: Gatehouse, clock: FakeClock
) -> None:
    now = clock.now()
    llm_calls(engine, "triage", at=now - 3 * HOUR, answered=100, confidence=0.9)
    llm_calls(engine, "triage", at=now, answered=30, confidence=0.8)  # down 0.1 < 0.15
    assert evaluate(engine.rt, POLICY) == []
    llm_calls(engine, "triage", at=now, answered=60, confidence=0.5)  # mean 0.6: down 0.3

    [change] = evaluate(engine.rt, POLICY)

    assert kinds([change]) == [("opened", CONFIDENCE_DROP, "triage · llm classify#1")]
    assert change.alert.rate == pytest.approx(0.6)
    assert change.alert.baseline == pytest.approx(0.9)
    clock.advance(16 * MIN)
    llm_calls(engine, "triage", at=clock.now(), answered=30, confidence=0.88)
    assert evaluate(engine.rt, POLICY) == []  # back up: under the bar since now
    clock.advance(15 * MIN)
    [recovered] = evaluate(engine.rt, POLICY)
    assert recovered.kind == "recovered"


def test_no_confidence_alert_without_a_baseline_to_drop_from(
    engine: Gatehouse, clock: FakeClock
) -> None:
    llm_calls(engine, "new_one", at=clock.now(), answered=40, confidence=0.3)
    assert evaluate(engine.rt, POLICY) == []


def test_thresholds_for_the_new_rules_come_from_settings_and_overrides() -> None:
    from pipelines import Settings

    settings = Settings.model_construct(
        **{
            **Settings().model_dump(),
            "alert_confidence_drop": 0.05,
            "alert_overrides": {"p": {"human_exit_factor": 4, "psi": 0.3}},
        }
    )
    policy = AlertPolicy.from_settings(settings)
    assert policy.for_pipeline("q").confidence_drop == 0.05
    assert policy.for_pipeline("p") == Thresholds(
        human_exit_factor=4.0, psi=0.3, confidence_drop=0.05
    )


# -- drift ---------------------------------------------------------------------------------------


def inquiries(eu_share: float, count: int) -> Callable[[int], dict[str, Any]]:
    cut = round(eu_share * count)
    return lambda i: {"text": "hi", "region": "eu" if i < cut else "us", "channel": "email"}


def test_input_drift_opens_once_with_the_field_and_the_top_shifts_then_recovers(
    engine: Gatehouse, clock: FakeClock
) -> None:
    now = clock.now()
    # Reference (35 to 7 days ago): half eu, half us. Recent 7 days: 90% eu.
    add_runs(engine, "d_route", 280, at=now - 8 * DAY, spacing=2 * HOUR, input=inquiries(0.5, 280))
    add_runs(engine, "d_route", 70, at=now - 10 * HOUR, spacing=2 * HOUR, input=inquiries(0.9, 70))

    [change] = evaluate_drift(engine.rt, POLICY)

    alert = change.alert
    assert kinds([change]) == [("opened", INPUT_DRIFT, "d_route · input.region")]
    assert alert.rate == pytest.approx(psi({"eu": 140, "us": 140}, {"eu": 63, "us": 7}))
    assert alert.rate > 0.2
    assert alert.detail("field") == "region"
    assert [s["value"] for s in alert.detail("top_shifts")] == ["us", "eu"]
    assert evaluate_drift(engine.rt, POLICY) == []  # quiet while open
    assert [a.rule for a in list_alerts(engine.rt)] == [INPUT_DRIFT]
    [figures] = [f for f in drift_figures(engine.rt).values() if f.pipeline == "d_route"]
    assert (figures.max_psi_field, figures.max_psi) == ("input.region", pytest.approx(alert.rate))

    # A week later the recent week is balanced again (the skewed one is now in the reference).
    clock.advance(7 * DAY)
    add_runs(
        engine,
        "d_route",
        70,
        at=clock.now() - 10 * HOUR,
        spacing=2 * HOUR,
        input=inquiries(0.5, 70),
    )
    assert evaluate_drift(engine.rt, POLICY) == []  # under: from now
    clock.advance(HOUR)
    [recovered] = evaluate_drift(engine.rt, POLICY)
    assert (recovered.kind, recovered.alert.id) == ("recovered", alert.id)
    assert recovered.alert.recovery_rate is not None and recovered.alert.recovery_rate < 0.2


def test_output_drift_of_the_pipeline_and_of_an_llm_answer(
    engine: Gatehouse, clock: FakeClock
) -> None:
    now = clock.now()

    def routed(share_billing: float, count: int) -> Callable[[int], dict[str, Any]]:
        cut = round(share_billing * count)
        return lambda i: {"queue": "billing" if i < cut else "support", "note": ""}

    def label(kinds_: Sequence[str]) -> Callable[[int], dict[str, Any]]:
        return lambda i: {
            "key": KEY,
            "output": {"kind": kinds_[i % len(kinds_)], "confidence": 0.9},
            "meta": {"human_exit": False, "confidence": 0.9, "categorical": ["kind"]},
        }

    add_runs(engine, "d_route", 280, at=now - 8 * DAY, spacing=2 * HOUR, output=routed(0.2, 280))
    add_runs(engine, "d_route", 70, at=now - 10 * HOUR, spacing=2 * HOUR, output=routed(0.2, 70))
    add_runs(engine, "d_llm", 280, at=now - 8 * DAY, spacing=2 * HOUR, call=label(["refund"]))
    add_runs(
        engine, "d_llm", 70, at=now - 10 * HOUR, spacing=2 * HOUR, call=label(["refund", "bug"])
    )

    changes = evaluate_drift(engine.rt, POLICY)

    assert kinds(changes) == [("opened", OUTPUT_DRIFT, "d_llm · llm classify#1.kind")]
    [new] = [s for s in changes[0].alert.detail("top_shifts") if s["value"] == "bug"]
    assert (new["reference_share"], new["recent_share"]) == (0.0, 0.5)
    figures = drift_figures(engine.rt)
    assert figures["d_route"].max_psi == pytest.approx(0, abs=1e-9)
    assert figures["d_llm"].max_psi_field == "llm classify#1.kind"


def test_drift_needs_enough_values_in_each_period(engine: Gatehouse, clock: FakeClock) -> None:
    now = clock.now()
    add_runs(engine, "d_route", 40, at=now - 8 * DAY, spacing=HOUR, input=inquiries(0.5, 40))
    add_runs(engine, "d_route", 70, at=now, spacing=HOUR, input=inquiries(1.0, 70))
    assert evaluate_drift(engine.rt, POLICY) == []  # 40 reference values < 50


# -- once across replicas ------------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(2))
def test_replicas_evaluating_at_once_open_each_alert_once(
    any_db_url: str, clock: FakeClock, round_: int
) -> None:
    replicas = [Gatehouse(Database(any_db_url), clock=clock) for _ in range(4)]
    try:
        now = clock.now()
        for name in ("one", "two"):
            llm_calls(replicas[0], name, at=now, exits=15, answered=15)
        add_runs(
            replicas[0], "d_route", 280, at=now - 8 * DAY, spacing=2 * HOUR,
            input=inquiries(0.5, 280),
        )  # fmt: skip
        add_runs(
            replicas[0],
            "d_route",
            70,
            at=now - 10 * HOUR,
            spacing=2 * HOUR,
            input=inquiries(1.0, 70),
        )

        def evaluate_all(replica: Gatehouse) -> list[AlertChange]:
            return evaluate(replica.rt, POLICY) + evaluate_drift(replica.rt, POLICY)

        results = at_once([partial(evaluate_all, replica) for replica in replicas], timeout=60)
        opened = sorted(c.alert.subject for found in results for c in found)
        assert opened == ["d_route · input.region", "one · llm classify#1", "two · llm classify#1"]
        assert sorted(row.subject for row in alert_rows(replicas[0])) == opened
    finally:
        for replica in replicas:
            replica.db.dispose()


# -- what ctx.llm records ------------------------------------------------------------------------


def test_ctx_llm_records_the_human_exit_and_its_categorical_fields(
    gatehouse: Gatehouse,
) -> None:
    run = gatehouse.trigger("l_classify", {"text": "Order 42 arrived broken."})
    [call] = [c for c in gatehouse.run(run.id).calls if c.kind == "llm"]
    assert call.meta["human_exit"] is True  # no model configured: the human exit
    assert call.meta["categorical"] == ["kind"]


# -- the migration -------------------------------------------------------------------------------


def test_the_migration_makes_existing_alerts_error_rate_alerts(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))

        def migrate(revision: str, down: bool = False) -> None:
            with db.engine.begin() as conn:
                config.attributes["connection"] = conn
                (command.downgrade if down else command.upgrade)(config, revision)

        migrate("0009", down=True)
        old = table(
            "alerts",
            column("pipeline", String()),
            column("status", String()),
            column("opened_at", UTCDateTime()),
            column("rate", Integer()),
            column("window_runs", Integer()),
            column("details", JSONValue),
        )
        with db.transaction() as conn:
            conn.execute(
                insert(old),
                [
                    {"pipeline": "a", "status": "open", "opened_at": FakeClock().now()}
                    | {"rate": 1, "window_runs": 10, "details": {}},
                ],
            )
        migrate("head")
        [row] = alert_rows(Gatehouse(db))
        assert (row.rule, row.subject, row.pipeline) == ("error_rate", "a", "a")
    finally:
        db.dispose()


# -- in Slack ------------------------------------------------------------------------------------

HOSTILE = "<!channel> & <@U0BOSS>"


@pytest.fixture
def world(fake_slack: Any, sqlite_url: str, clock: FakeClock) -> Iterator[Any]:
    from tests.slack_harness import slack_world

    with slack_world(fake_slack, sqlite_url, clock, alerts_channel="C_ALERTS") as built:
        yield built


def shown(message: dict[str, Any]) -> str:
    """The message's text and its blocks; the header is plain text (Slack parses no mention
    in it), so it is shown as it is and the rest must be escaped."""
    import json

    return message.get("text", "") + json.dumps(message.get("blocks", []), ensure_ascii=False)


def mrkdwn_of(message: dict[str, Any]) -> str:
    import json

    parsed = [b for b in message.get("blocks", []) if b.get("type") != "header"]
    return message.get("text", "") + json.dumps(parsed, ensure_ascii=False)


def test_a_human_exit_alert_is_posted_then_recovered_in_its_thread(world: Any) -> None:
    from bot.slack.alerts import check_alerts

    now = world.clock.now()
    key = "<!here>#1"
    llm_calls(world.gatehouse, "triage", at=now - 3 * HOUR, exits=10, answered=190, key=key)
    llm_calls(world.gatehouse, "triage", at=now, exits=12, answered=18, key=key)
    check_alerts(world.bot)
    [message] = world.fake.messages("C_ALERTS")
    text = shown(message)
    assert "Human-exit alert: triage · llm &lt;!here&gt;#1" in text
    assert "*40%* of the 30 calls" in text and "took the human exit (12)" in text
    assert "Baseline: *5%* over the 24 h before (200 calls)" in text
    assert "<!here>" not in mrkdwn_of(message)
    world.clock.advance(16 * MIN)
    check_alerts(world.bot)
    world.clock.advance(15 * MIN)
    check_alerts(world.bot)
    [_original, reply] = world.fake.messages("C_ALERTS", thread_ts=message["ts"])
    assert "Recovered" in shown(reply) and "Human exits back under the bar" in shown(reply)


def test_a_drift_alert_shows_the_field_and_the_most_shifted_categories_escaped(
    world: Any,
) -> None:
    from bot.slack.alerts import check_drift

    now = world.clock.now()
    add_runs(
        world.gatehouse, "d_route", 280, at=now - 8 * DAY, spacing=2 * HOUR,
        input=lambda i: {"text": "hi", "region": "eu" if i % 2 else "us"},
    )  # fmt: skip
    add_runs(
        world.gatehouse, "d_route", 70, at=now - 10 * HOUR, spacing=2 * HOUR,
        input=lambda i: {"text": "hi", "region": HOSTILE if i % 3 else "eu"},
    )  # fmt: skip
    result = check_drift(world.bot)
    assert [c.alert.rule for c in result.changes] == [INPUT_DRIFT]
    [message] = world.fake.messages("C_ALERTS")
    text = shown(message)
    assert "Input drift: d_route · input.region" in text
    assert "PSI *" in text and "`input.region`" in text
    assert "*Most shifted*" in text and "`&lt;!channel&gt; &amp; &lt;@U0BOSS&gt;`: 0% → 66%" in text
    assert "<!channel>" not in mrkdwn_of(message) and "<@U0BOSS>" not in mrkdwn_of(message)


# -- the CLI and App Home ------------------------------------------------------------------------


def test_alerts_cli_stats_and_app_home_show_the_rule_and_the_drift_figures(
    engine: Gatehouse, clock: FakeClock
) -> None:
    from bot.cli.alerts import alert_lines
    from bot.cli.stats import drift_lines
    from bot.slack.home import drift_blocks

    now = clock.now()
    add_runs(engine, "d_route", 280, at=now - 8 * DAY, spacing=2 * HOUR, input=inquiries(0.5, 280))
    add_runs(engine, "d_route", 70, at=now - 10 * HOUR, spacing=2 * HOUR, input=inquiries(0.9, 70))
    llm_calls(engine, "triage", at=now, exits=3, answered=7, confidence=0.8)
    [change] = evaluate_drift(engine.rt, POLICY)

    [first, *rest] = alert_lines(change.alert)
    assert first.startswith(f"#{change.alert.id} OPEN      [input_drift] d_route · input.region:")
    assert "input drift: PSI 0.88" in first and "70 recent values, 280 before" in first
    assert any(line.strip().startswith("us: 50% -> 10%") for line in rest)

    figures = drift_figures(engine.rt)
    lines = drift_lines(figures)
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["d_route"] == ["d_route", "0", "-", "-", f"{change.alert.rate:.2f}", "input.region"]
    assert rows["triage"] == ["triage", "10", "30.0%", "0.80", "-", "-"]

    [title, body, _note] = drift_blocks(figures)
    assert title["text"]["text"] == "Quiet failures"
    text = body["text"]["text"]
    assert "`triage` · human exits 30.0% of 10 LLM calls · mean confidence 0.80" in text
    assert f"`d_route` · max PSI {change.alert.rate:.2f} (`input.region`)" in text


def test_drift_counts_each_whole_day_once_and_waits_for_a_long_history_to_be_counted(
    engine: Gatehouse, clock: FakeClock
) -> None:
    from storage.drift import counts_table, rolled_table

    now = clock.now()
    add_runs(engine, "d_route", 280, at=now - 8 * DAY, spacing=2 * HOUR, input=inquiries(0.5, 280))
    add_runs(engine, "d_route", 70, at=now - 10 * HOUR, spacing=2 * HOUR, input=inquiries(1, 70))
    add_runs(engine, "d_route", 50, at=now, spacing=MIN, input=inquiries(0, 50))  # today: later

    assert evaluate_drift(engine.rt, POLICY, budget_seconds=0) == []  # paused: nothing judged
    [change] = evaluate_drift(engine.rt, POLICY)
    assert change.alert.detail("recent_count") == 70
    with engine.db.transaction() as conn:
        days = conn.execute(select(rolled_table.c.day)).scalars().all()
        counted = (
            conn.execute(select(counts_table.c.count).where(counts_table.c.source == "input"))
            .scalars()
            .all()
        )
    assert len(days) == 35 and sum(counted) == 2 * (280 + 70)  # region and channel, not today
    assert evaluate_drift(engine.rt, POLICY) == []
    with engine.db.transaction() as conn:
        rows = conn.execute(select(counts_table.c.id).where(counts_table.c.source == "input"))
        assert len(rows.all()) == len(counted)
