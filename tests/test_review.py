"""The weekly review without Slack: which runs are picked (stored, uniform, stratified), the
week's key, verdicts, and the export a regression set is made from."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from bot.cli import review as cli_review
from bot.cli.session import GatehouseGroup
from pipelines import Gatehouse
from pipelines.operations import review, sampling
from pipelines.operations.review import (
    AlreadyReviewed,
    InvalidFlag,
    ReviewWeekView,
    pick_week,
    week_start_of,
)
from pipelines.operations.sampling import allocate, pick_runs
from storage.calls import CallRecord, insert_call
from storage.db import Database
from storage.fastsql import driver_transaction, fast_insert
from storage.ids import new_id
from storage.models import CallKind, CallStatus, RunStatus
from storage.runs import runs_table
from storage.sampling import Window
from tests.fakes.clock import FakeClock

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # the fake clock's start: a Monday


def seed_runs(
    db: Database,
    count: int,
    *,
    now: datetime = NOW,
    pipelines: dict[str, float] | None = None,
    status: str = RunStatus.SUCCEEDED,
    finished_ago: tuple[timedelta, timedelta] = (timedelta(minutes=1), timedelta(days=7)),
    rng: random.Random | None = None,
    input: Any = None,
) -> list[str]:
    """`count` runs finished at random moments `finished_ago` before `now`, spread over
    `pipelines` by weight; ids like the engine's (`run_` and 16 random hex digits), drawn from
    `rng` when a test needs the same ones every time."""
    rng = rng or random.Random()
    weights = pipelines or {"ticket_triage": 1.0}
    names = list(weights)
    low, high = (d.total_seconds() for d in finished_ago)
    rows = []
    for number in range(count):
        finished = now - timedelta(seconds=rng.uniform(low, high))
        run_id = f"run_{rng.getrandbits(64):016x}"
        rows.append(
            {
                "id": run_id,
                "pipeline": rng.choices(names, [weights[n] for n in names])[0],
                "status": status,
                "input": input if input is not None else {"ticket": number},
                "output": {"route": "queue", "n": number},
                "trigger": "api",
                "created_at": finished - timedelta(seconds=3),
                "started_at": finished - timedelta(seconds=3),
                "finished_at": None if status in ("queued", "running", "waiting") else finished,
                "updated_at": finished,
            }
        )
    with db.connection() as conn, driver_transaction(conn):
        fast_insert(conn, runs_table, rows)
    return [r["id"] for r in rows]


def add_llm_call(db: Database, run_id: str, *, confidence: float, cost: float) -> None:
    with db.transaction() as conn:
        insert_call(
            conn,
            CallRecord(
                id=new_id("call"),
                run_id=run_id,
                seq=1,
                key="classify#1",
                kind=CallKind.LLM,
                name="classify",
                status=CallStatus.SUCCEEDED,
                input={"prompt": "…"},
                output={"kind": "refund", "confidence": confidence},
                started_at=NOW - timedelta(hours=1),
                finished_at=NOW - timedelta(hours=1),
                meta={"model": "gpt-test", "confidence": confidence, "cost_usd": cost},
            ),
        )


@pytest.fixture
def any_db(any_db_url: str) -> Iterator[Database]:
    """SQLite, and PostgreSQL when GATEHOUSE_TEST_POSTGRES_URL is set."""
    database = Database(any_db_url)
    yield database
    database.dispose()


@pytest.fixture
def engine(any_db: Database, clock: FakeClock) -> Gatehouse:
    return Gatehouse(any_db, clock=clock)


def _window() -> Window:
    return Window(NOW - timedelta(days=7), NOW, review.REVIEWABLE_STATUSES)


def _pick(gatehouse: Gatehouse, **overrides: Any) -> ReviewWeekView:
    options: dict[str, Any] = {"size": 20, "stratify": False, "timezone": "UTC"}
    return pick_week(gatehouse.rt, **{**options, **overrides})


def _chi_square(counts: Counter[str], buckets: list[str]) -> float:
    total = sum(counts.values())
    expected = total / len(buckets)
    return sum((counts[b] - expected) ** 2 / expected for b in buckets)


# -- what is picked --------------------------------------------------------------------------


def test_only_runs_that_finished_in_the_last_seven_days_are_picked_never_invalid_input(
    engine: Gatehouse, any_db: Database
) -> None:
    wanted = set(seed_runs(any_db, 6, rng=random.Random(1)))
    wanted |= set(seed_runs(any_db, 2, status=RunStatus.FAILED, rng=random.Random(2)))
    seed_runs(any_db, 3, status=RunStatus.INVALID_INPUT, rng=random.Random(3))
    seed_runs(any_db, 3, status=RunStatus.WAITING, rng=random.Random(4))
    older = (timedelta(days=7, minutes=1), timedelta(days=30))
    seed_runs(any_db, 3, finished_ago=older, rng=random.Random(5))
    later = (timedelta(minutes=-30), timedelta(0))  # finished after the pick's moment
    seed_runs(any_db, 2, finished_ago=later, rng=random.Random(6))

    week = _pick(engine)

    assert {i.run_id for i in week.items} == wanted
    assert [i.position for i in week.items] == list(range(1, 9))
    assert (week.status, week.total, week.reviewed) == ("picked", 8, 0)


def test_the_pick_is_stored_and_every_later_call_that_week_gets_the_same_runs(
    engine: Gatehouse, any_db: Database, clock: FakeClock
) -> None:
    seed_runs(any_db, 60)
    first = _pick(engine, rng=random.Random(1))
    clock.advance(timedelta(days=3))  # Thursday: a re-post, new runs since, another seed
    seed_runs(any_db, 30, now=clock.now(), rng=random.Random(9))
    again = _pick(engine, rng=random.Random(2), size=5)
    assert again.id == first.id
    assert [i.run_id for i in again.items] == [i.run_id for i in first.items]
    assert len(first.items) == 20 == len({i.run_id for i in first.items})

    clock.advance(timedelta(days=4))  # the next Monday: a new week, a new pick
    assert _pick(engine, rng=random.Random(1)).id != first.id


def test_two_processes_picking_the_same_week_at_once_store_one_pick(
    any_db_url: str, any_db: Database
) -> None:
    seed_runs(any_db, 50)
    barrier = threading.Barrier(2)
    weeks: list[ReviewWeekView] = []

    def pick(seed: int) -> None:
        engine = Gatehouse(Database(any_db_url), clock=FakeClock())
        barrier.wait()
        weeks.append(_pick(engine, rng=random.Random(seed)))
        engine.db.dispose()

    threads = [threading.Thread(target=pick, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = weeks
    assert first.id == second.id
    assert [i.run_id for i in first.items] == [i.run_id for i in second.items]


def test_a_week_starts_on_monday_at_midnight_in_the_configured_time_zone() -> None:
    # Monday 03:00 UTC is still Sunday evening in New York: that week began six days earlier.
    moment = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
    start = week_start_of(moment, "America/New_York")
    assert start.astimezone(UTC) == datetime(2026, 10, 26, 4, 0, tzinfo=UTC)  # EDT, UTC-4
    assert week_start_of(moment, "UTC") == datetime(2026, 11, 2, tzinfo=UTC)
    assert week_start_of(datetime(2026, 11, 8, 23, 59, tzinfo=UTC), "UTC").day == 2
    with pytest.raises(review.ConfigurationError, match="GATEHOUSE_TIMEZONE"):
        week_start_of(moment, "Mars/Olympus")


def _gap_shares(ids: list[str]) -> dict[str, float]:
    """Each run's chance per draw of a random-key seek: the stretch of key space between the
    previous id (around the circle) and its own."""
    values = [int(run_id.removeprefix("run_"), 16) for run_id in ids]
    space = 16**16
    return {
        run_id: ((value - values[n - 1]) % space or space) / space
        for n, (run_id, value) in enumerate(zip(ids, values, strict=True))
    }


def test_the_seek_pick_is_uniform_over_time_and_pipelines(
    any_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above SMALL_WINDOW the pick seeks random keys through the primary key. 300 picks of 20
    out of 3,000 runs (deterministic seeds), counted by pipeline and by day finished."""
    monkeypatch.setattr(sampling, "SMALL_WINDOW", 100)
    pipelines = {f"p{i}": 1.0 for i in range(10)}
    seed_runs(any_db, 3000, pipelines=pipelines, rng=random.Random(42))
    seed_runs(
        any_db, 500, finished_ago=(timedelta(days=8), timedelta(days=20))
    )  # out of the window
    with any_db.transaction() as conn:
        runs = {r.id: r for r in conn.execute(runs_table.select()).all()}
        in_window = sorted(i for i, r in runs.items() if r.finished_at > NOW - timedelta(days=7))
        by_pipeline: Counter[str] = Counter()
        by_day: Counter[str] = Counter()
        for seed in range(300):
            picked = pick_runs(conn, _window(), 20, stratify=False, rng=random.Random(seed))
            assert len(picked) == len(set(picked)) == 20
            assert set(picked) <= set(in_window)
            by_pipeline.update(runs[i].pipeline for i in picked)
            by_day.update(str((NOW - runs[i].finished_at).days) for i in picked)

    def day(run_id: str) -> str:
        return str((NOW - runs[run_id].finished_at).days)

    # The mechanics, exactly: a run's chance is the key-space gap before its id, so these
    # counts must fit the gaps' shares (p = 0.001 at 27.9 for 9, 22.5 for 6 degrees of freedom).
    gaps = _gap_shares(in_window)
    for counts, bucket in ((by_pipeline, lambda i: runs[i].pipeline), (by_day, day)):
        expected: Counter[str] = Counter()
        for run_id, share in gaps.items():
            expected[bucket(run_id)] += share * 6000
        chi_square = sum((counts[b] - e) ** 2 / e for b, e in expected.items())
        assert chi_square < (27.9 if len(expected) == 10 else 22.5), (counts, expected)
    # What that means for people: ids are random, so the gaps are independent of pipeline and
    # time, and every bucket gets its share of the picks (within the spread of 300 gaps each).
    population = Counter(runs[i].pipeline for i in in_window)
    for pipeline, count in population.items():
        assert abs(by_pipeline[pipeline] / 6000 - count / 3000) < 0.25 * count / 3000


def test_a_small_window_is_listed_and_sampled_exactly(any_db: Database) -> None:
    seed_runs(any_db, 40, rng=random.Random(3))
    with any_db.transaction() as conn:
        counts: Counter[str] = Counter()
        for seed in range(400):
            counts.update(pick_runs(conn, _window(), 5, stratify=False, rng=random.Random(seed)))
    assert len(counts) == 40
    assert _chi_square(counts, list(counts)) < 72.0  # 39 dof, p = 0.001


@pytest.mark.parametrize("small_window", [5000, 50], ids=["listed", "sought"])
def test_a_stratified_pick_shares_the_runs_evenly_across_pipelines(
    any_db: Database, monkeypatch: pytest.MonkeyPatch, small_window: int
) -> None:
    monkeypatch.setattr(sampling, "SMALL_WINDOW", small_window)
    monkeypatch.setattr(sampling, "LIST_PIPELINE", 20)  # the busy pipeline is sought, not listed
    seed_runs(any_db, 600, pipelines={"busy": 1.0}, rng=random.Random(1))
    seed_runs(any_db, 60, pipelines={"steady": 1.0}, rng=random.Random(2))
    quiet = set(seed_runs(any_db, 4, pipelines={"quiet": 1.0}, rng=random.Random(3)))
    seed_runs(
        any_db, 50, pipelines={"old": 1.0}, finished_ago=(timedelta(days=8), timedelta(days=9))
    )
    with any_db.transaction() as conn:
        names = {r.id: r.pipeline for r in conn.execute(runs_table.select()).all()}
        for seed in range(5):
            picked = pick_runs(conn, _window(), 20, stratify=True, rng=random.Random(seed))
            assert len(set(picked)) == 20
            shares = Counter(names[r] for r in picked)
            assert quiet <= set(picked)  # all 4 of its runs; the 16 left are split evenly
            assert shares == {"quiet": 4, "busy": 8, "steady": 8}


def test_allocate_shares_evenly_and_never_gives_a_pipeline_more_than_it_has() -> None:
    rng = random.Random(0)
    assert allocate(20, {"a": 100, "b": 100, "c": 100, "d": 100}, rng) == dict.fromkeys("abcd", 5)
    assert allocate(20, {"a": 2, "b": 100, "c": 3}, rng) == {"a": 2, "b": 15, "c": 3}
    assert allocate(20, {"a": 2, "b": 3}, rng) == {"a": 2, "b": 3}
    odd = allocate(7, {"a": 9, "b": 9, "c": 9}, rng)
    assert sum(odd.values()) == 7 and sorted(odd.values()) == [2, 2, 3]
    assert sum(allocate(3, dict.fromkeys("abcdef", 5), rng).values()) == 3


def test_an_empty_week_is_stored_with_no_runs(gatehouse: Gatehouse) -> None:
    week = _pick(gatehouse)
    assert (week.total, week.all_reviewed, week.flag_rate) == (0, True, None)


# -- verdicts --------------------------------------------------------------------------------


def test_looks_right_is_recorded_once_and_a_flag_stands_over_it(
    gatehouse: Gatehouse, db: Database
) -> None:
    seed_runs(db, 3)
    item = _pick(gatehouse).items[0]
    done = review.looks_right(gatehouse.rt, item.id, reviewer="U_ALICE")
    assert (done.verdict, done.reviewer, done.reviewed_at) == ("looks_right", "U_ALICE", NOW)
    with pytest.raises(AlreadyReviewed, match="marked looks right by U_ALICE"):
        review.looks_right(gatehouse.rt, item.id, reviewer="U_BOB")

    flagged = review.flag(
        gatehouse.rt, item.id, reviewer="U_BOB", category="hallucination", note="  made up  "
    )
    assert (flagged.verdict, flagged.category, flagged.note) == (
        "flagged",
        "hallucination",
        "made up",
    )
    with pytest.raises(AlreadyReviewed, match="already flagged by U_BOB"):
        review.looks_right(gatehouse.rt, item.id, reviewer="U_ALICE")
    with pytest.raises(InvalidFlag, match="use one of: wrong_output"):
        review.flag(gatehouse.rt, item.id, reviewer="U_BOB", category="meh")
    week = review.get_week(gatehouse.rt, item.week_id)
    assert (week.reviewed, week.flagged, week.flag_rate) == (1, 1, 1.0)


# -- export ----------------------------------------------------------------------------------


def gh(*args: str) -> Result:
    root = typer.Typer(cls=GatehouseGroup, add_completion=False)
    root.add_typer(cli_review.app, name="review")
    return CliRunner().invoke(root, list(args))


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    for name in ("GATEHOUSE_LOG_LEVEL", "GATEHOUSE_REVIEW_CHANNEL", "SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return sqlite_url


def test_export_writes_flagged_runs_as_test_cases(cli_env: str, tmp_path: Path) -> None:
    db = Database(cli_env)
    now = datetime.now(UTC)
    gatehouse = Gatehouse(db, clock=FakeClock(now))
    seed_runs(db, 3, now=now, input={"subject": "refund please"})
    first, second, third = _pick(gatehouse).items
    review.flag(
        gatehouse.rt,
        first.id,
        reviewer="U_ALICE",
        category="wrong_output",
        note="should have refunded",
        expected={"route": "refunded"},
    )
    review.flag(gatehouse.rt, second.id, reviewer="U_BOB", category="policy")
    review.looks_right(gatehouse.rt, third.id, reviewer="U_CAROL")
    db.dispose()

    result = gh("review", "export", "--flagged", "--since", "30d")
    assert result.exit_code == 0, result.stderr
    cases = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.stderr.strip() == "exported 2 flagged run(s)"
    assert [c["run_id"] for c in cases] == [first.run_id, second.run_id]
    case = cases[0]
    assert case["input"] == {"subject": "refund please"}
    assert case["expected"] == {"route": "refunded"}
    assert case["note"] == "should have refunded"
    assert case["recorded_output"]["route"] == "queue"
    assert case["pipeline"] == "ticket_triage"
    assert case["flag"]["category"] == "wrong_output" and case["flag"]["reviewer"] == "U_ALICE"
    assert datetime.fromisoformat(case["flag"]["at"]) <= datetime.now(UTC)
    assert "expected" not in cases[1] and cases[1]["note"] == ""

    everything = tmp_path / "reviewed.jsonl"
    assert gh("review", "export", "--out", str(everything)).exit_code == 0
    lines = [json.loads(line) for line in everything.read_text().splitlines()]
    looks_right = [c for c in lines if c["verdict"] == "looks_right"]
    assert len(lines) == 3 and looks_right[0]["expected"] == looks_right[0]["recorded_output"]
    assert gh("review", "export", "--since", "0s").stdout == ""


def test_export_refuses_a_bad_since_and_post_needs_slack_settings(cli_env: str) -> None:
    bad = gh("review", "export", "--since", "last tuesday")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: --since 'last tuesday'")
    post = gh("review", "post")
    assert post.exit_code == 1
    assert "SLACK_BOT_TOKEN is not set" in post.stderr
    assert "GATEHOUSE_REVIEW_CHANNEL is not set" in post.stderr
    assert len(post.stderr.strip().splitlines()) == 1
