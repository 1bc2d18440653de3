"""Day-by-day volume and error rate for the last few days, ending today (the engine's clock).

What each number counts is written in `storage.daily_stats`; here "today" is the day of `now`
(default `rt.clock.now()`) in the time zone asked (UTC by default), and today counts so far.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

from pipelines.runtime import Runtime
from storage.daily_stats import DayStats, daily_counts, day_starts

__all__ = ["DayStats", "daily_series"]


def daily_series(
    rt: Runtime,
    *,
    days: int = 7,
    pipeline: str | None = None,
    now: datetime | None = None,
    tz: tzinfo | str = UTC,
) -> list[DayStats]:
    """`days` calendar days, oldest first, the last one being today; days without runs are
    present with zeros. One pipeline, or all of them (`pipeline=None`)."""
    if days < 1:
        raise ValueError(f"daily_series needs at least one day, got days={days}")
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    end = now if now is not None else rt.clock.now()
    bounds = day_starts(end.astimezone(zone).date(), days, zone)
    with rt.db.transaction() as conn:
        return daily_counts(conn, bounds=bounds, pipeline=pipeline)
