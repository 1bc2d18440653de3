"""The 7-day chart: runs per day from real rows (SQLite and PostgreSQL, against numbers worked
out by hand), the PNG it draws, and its upload through Slack's file flow on the fake."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from slack_sdk import WebClient
from sqlalchemy import insert

from bot.serve import build_bot
from bot.slack.charts import render_week_chart
from bot.slack.stats_upload import ChartUploadFailed, stats_chart_reply, upload_chart
from pipelines import Gatehouse
from pipelines.operations.daily_stats import DayStats, daily_series
from storage.db import Database
from storage.runs import runs_table
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import settings_for

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday; the FakeClock's start
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (id, pipeline, created, seconds to finish or None, status)
ROWS = [
    ("r1", "alpha", datetime(2026, 11, 2, 8, 0), 60, "succeeded"),
    ("r2", "alpha", datetime(2026, 11, 2, 1, 0), 10, "failed"),
    ("r3", "alpha", datetime(2026, 11, 1, 23, 59, 30), 60, "needs_attention"),  # ends Nov 2
    ("r4", "alpha", datetime(2026, 10, 30, 12, 0), 5, "rejected"),  # finished, not an error
    ("r5", "alpha", datetime(2026, 10, 30, 13, 0), None, "running"),
    ("r6", "alpha", datetime(2026, 10, 26, 23, 0), 5400, "failed"),  # created before, ends Oct 27
    ("r8", "beta", datetime(2026, 10, 28, 10, 0), 1, "failed"),
    ("r9", "alpha", datetime(2026, 10, 25, 10, 0), 1, "failed"),  # before the window
    ("r10", "alpha", datetime(2026, 10, 31, 0, 0), None, "queued"),  # exactly at midnight
]


def expected(*days: tuple[int, int, int, int]) -> list[DayStats]:
    """(day of Oct/Nov, runs, finished, errors), first day Oct 27."""
    return [
        DayStats(date(2026, 10 if d > 15 else 11, d), runs, finished, errors)
        for d, runs, finished, errors in days
    ]


@pytest.fixture
def engine(any_db_url: str) -> Iterator[Gatehouse]:
    database = Database(any_db_url)
    gatehouse = Gatehouse(database, clock=FakeClock(NOW))
    with database.transaction() as conn:
        for run_id, pipeline, created_naive, took, status in ROWS:
            created = created_naive.replace(tzinfo=UTC)
            finished = None if took is None else created + timedelta(seconds=took)
            conn.execute(
                insert(runs_table),
                {
                    "id": run_id,
                    "pipeline": pipeline,
                    "status": status,
                    "input": {},
                    "created_at": created,
                    "started_at": created,
                    "finished_at": finished,
                    "updated_at": finished or created,
                },
            )
    yield gatehouse
    database.dispose()


def test_seven_utc_days_ending_today_count_created_finished_and_errors(engine: Gatehouse) -> None:
    assert daily_series(engine.rt) == expected(
        (27, 0, 1, 1),
        (28, 1, 1, 1),
        (29, 0, 0, 0),
        (30, 2, 1, 0),
        (31, 1, 0, 0),
        (1, 1, 0, 0),
        (2, 2, 3, 2),
    )


def test_one_pipeline_leaves_the_others_out_and_keeps_empty_days(engine: Gatehouse) -> None:
    series = daily_series(engine.rt, pipeline="alpha")
    assert series[1] == DayStats(date(2026, 10, 28), 0, 0, 0)
    assert [d.runs for d in series] == [0, 0, 0, 2, 1, 1, 2]
    assert daily_series(engine.rt, pipeline="nobody") == [
        DayStats(date(2026, 10, 27) + timedelta(days=i)) for i in range(7)
    ]


def test_days_follow_the_time_zone_across_the_dst_change(engine: Gatehouse) -> None:
    # New York leaves DST on Sunday Nov 1 2026: that day is 25 hours long; now is 04:00 EST.
    assert daily_series(engine.rt, tz="America/New_York") == expected(
        (27, 0, 0, 0),
        (28, 1, 1, 1),
        (29, 0, 0, 0),
        (30, 3, 1, 0),
        (31, 0, 0, 0),
        (1, 2, 2, 2),
        (2, 1, 1, 0),
    )


def test_now_and_days_move_the_window(engine: Gatehouse) -> None:
    series = daily_series(engine.rt, days=2, now=datetime(2026, 10, 31, 5, 0, tzinfo=UTC))
    assert series == expected((30, 2, 1, 0), (31, 1, 0, 0))
    with pytest.raises(ValueError, match="at least one day"):
        daily_series(engine.rt, days=0)


def test_error_rate_is_errors_over_finished_and_none_when_nothing_finished() -> None:
    assert DayStats(date(2026, 11, 2), runs=5, finished=4, errors=1).error_rate == 0.25
    assert DayStats(date(2026, 11, 2), runs=5).error_rate is None


# -- the PNG -------------------------------------------------------------------------------------

WEEK = [
    DayStats(date(2026, 10, 27) + timedelta(days=i), runs, finished, errors)
    for i, (runs, finished, errors) in enumerate(
        [
            (120, 118, 3),
            (0, 0, 0),
            (95, 96, 12),
            (4000, 3990, 40),
            (7, 7, 7),
            (60, 58, 0),
            (1, 0, 0),
        ]
    )
]


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", png[8:16])
    assert (kind, length) == (b"IHDR", 13)
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_chart_is_a_png_of_800_by_400_without_timestamp_or_version() -> None:
    png = render_week_chart(WEEK, title="ticket_triage, last 7 days")
    assert png_size(png) == (800, 400)
    assert b"tIME" not in png and b"Software" not in png
    assert png.endswith(b"IEND\xaeB`\x82")


def test_same_series_draws_the_same_bytes() -> None:
    assert render_week_chart(WEEK, title="t") == render_week_chart(WEEK, title="t")
    assert render_week_chart(WEEK, title="t") != render_week_chart(WEEK[:6], title="t")


def test_a_week_without_runs_still_draws() -> None:
    empty = [DayStats(date(2026, 10, 27) + timedelta(days=i)) for i in range(7)]
    assert png_size(render_week_chart(empty, title="nothing yet")) == (800, 400)


def test_idle_bot_imports_leave_matplotlib_out() -> None:
    code = (
        "import sys, bot.slack.app, bot.serve, bot.slack.stats_upload, bot.slack.charts, pipelines.operations.daily_stats;"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at start'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the upload --------------------------------------------------------------------------------


def test_upload_shares_the_bytes_to_the_channel(fake_slack: FakeSlack) -> None:
    fake_slack.invite("C_GENERAL")  # someone ran /gatehouse stats there, the bot invited
    client = WebClient(token=fake_slack.token, base_url=fake_slack.api_url)
    png = render_week_chart(WEEK, title="week")
    link = upload_chart(client, channel="C_GENERAL", png=png, title="week")
    [shared] = fake_slack.files("C_GENERAL")
    assert shared["bytes"] == png
    assert (shared["name"], shared["title"], shared["thread_ts"]) == (
        "gatehouse-stats.png",
        "week",
        None,
    )
    assert link.endswith(f"/{shared['id']}/gatehouse-stats.png")
    assert fake_slack.files("C_REVIEW") == []
    methods = [name for name, _ in fake_slack.calls]
    assert methods == ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]


def test_upload_in_a_thread_and_refused_upload_says_what_to_fix(fake_slack: FakeSlack) -> None:
    fake_slack.invite("C_GENERAL")  # someone ran /gatehouse stats there, the bot invited
    client = WebClient(token=fake_slack.token, base_url=fake_slack.api_url)
    parent = client.chat_postMessage(channel="C_GENERAL", text="stats")["ts"]
    upload_chart(client, channel="C_GENERAL", png=b"\x89PNG x", title="t", thread_ts=parent)
    assert fake_slack.files("C_GENERAL")[0]["thread_ts"] == parent
    with pytest.raises(ChartUploadFailed, match="channel_not_found"):
        upload_chart(client, channel="C_NOWHERE", png=b"x", title="t")


def test_stats_chart_reply_draws_the_week_and_uploads_it(
    fake_slack: FakeSlack, sqlite_url: str
) -> None:
    fake_slack.invite("C_GENERAL")
    bot = build_bot(settings_for(fake_slack, sqlite_url), clock=FakeClock(NOW))
    try:
        link = stats_chart_reply(bot, channel="C_GENERAL", user="U_ALICE", pipeline="alpha")
    finally:
        bot.shutdown()
        bot.gatehouse.db.dispose()
    [shared] = fake_slack.files("C_GENERAL")
    assert shared["title"] == "Gatehouse: alpha, last 7 days"
    assert png_size(shared["bytes"]) == (800, 400)
    assert shared["id"] in link


def test_the_isolated_renderer_draws_the_same_png_without_loading_matplotlib_here() -> None:
    import sys
    from datetime import date, timedelta

    from bot.slack.charts import render_week_chart, render_week_chart_isolated
    from storage.daily_stats import DayStats

    series = [DayStats(date(2026, 11, 1) + timedelta(days=i), 10 * i, 10 * i, i) for i in range(7)]
    loaded_before = "matplotlib" in sys.modules
    isolated = render_week_chart_isolated(series, title="refund_request")
    assert isolated.startswith(b"\x89PNG\r\n\x1a\n")
    assert ("matplotlib" in sys.modules) == loaded_before
    assert isolated == render_week_chart(series, title="refund_request")
