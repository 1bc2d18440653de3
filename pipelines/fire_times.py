"""When `cron(...)` and `every(...)` triggers fire, computed with APScheduler 3's trigger classes.

Two decisions make every replica compute the same fire times, which the exactly-once claim
(a unique (schedule, fire time) row) depends on:

- crontab's weekday numbers (0 and 7 = Sunday) are translated to names, because APScheduler 3
  counts 0 as Monday (its issue 286);
- `every()` fire times are multiples of the interval counted from `INTERVAL_EPOCH`, not from
  whenever a process happened to start: `every("10m")` fires at :00, :10, :20, … everywhere.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:  # APScheduler is imported where a trigger is built: a pipeline without a
    # schedule (and a one-shot CLI command) does not pay for it.
    from apscheduler.triggers.base import BaseTrigger

INTERVAL_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_ONE_MICROSECOND = timedelta(microseconds=1)


def zone(name: str) -> ZoneInfo:
    """An IANA time zone, or a ValueError that says what to write."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not an IANA time zone; write e.g. 'UTC', 'Europe/Paris', 'America/New_York'"
        ) from None


def _weekday(token: str, expression: str) -> int:
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token)
    if token in _WEEKDAYS:
        return _WEEKDAYS.index(token)
    raise ValueError(
        f"cron({expression!r}): weekday {token!r} is not 0-7 (0 and 7 are Sunday) or sun…sat"
    )


def crontab_weekdays(field: str, expression: str = "") -> str:
    """A crontab weekday field (`1-5`, `*/2`, `0,6`, `MON`) as APScheduler weekday names."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.lower().split(","):
        body, slash, step_text = part.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"cron({expression!r}): weekday step {step_text!r} is not a number")
        step = int(step_text) if slash else 1
        if body == "*":
            low, high = 0, 6
        elif "-" in body:
            first, _, last = body.partition("-")
            low, high = _weekday(first, expression), _weekday(last, expression)
        else:
            low = _weekday(body, expression)
            high = 6 if slash else low
        if high < low:
            raise ValueError(
                f"cron({expression!r}): weekday range {body!r} runs backwards; "
                "list the days instead (e.g. sat,sun)"
            )
        days.update(day % 7 for day in range(low, high + 1, step))
    return ",".join(_WEEKDAYS[day] for day in sorted(days))


def cron_trigger(expression: str, timezone: str) -> BaseTrigger:
    """`minute hour day month weekday` with crontab's meaning, in `timezone`."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"cron({expression!r}) needs five fields: minute hour day month weekday")
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=crontab_weekdays(weekday, expression),
            timezone=zone(timezone),
        )
    except ValueError as exc:
        if str(exc).startswith("cron("):
            raise
        raise ValueError(f"cron({expression!r}) is not a valid cron expression: {exc}") from None


def interval_trigger(interval: timedelta, timezone: str) -> BaseTrigger:
    from apscheduler.triggers.interval import IntervalTrigger

    if interval.total_seconds() < 1:
        raise ValueError(f"every({interval}) is too short; the shortest interval is 1s")
    return IntervalTrigger(
        seconds=interval.total_seconds(), start_date=INTERVAL_EPOCH, timezone=zone(timezone)
    )


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


def next_fire_time(trigger: BaseTrigger, at_or_after: datetime) -> datetime | None:
    """The first fire time at or after `at_or_after` (UTC), or None when the trigger is done."""
    return _utc(trigger.get_next_fire_time(None, at_or_after))


def latest_fire_time(
    trigger: BaseTrigger, at_or_before: datetime, lookback: timedelta
) -> datetime | None:
    """The last fire time in [at_or_before - lookback, at_or_before], or None."""
    from apscheduler.triggers.interval import IntervalTrigger

    earliest = at_or_before - lookback
    if isinstance(trigger, IntervalTrigger):
        step = float(trigger.interval_length)
        count = math.floor((at_or_before - INTERVAL_EPOCH).total_seconds() / step)
        latest = INTERVAL_EPOCH + timedelta(seconds=count * step)
        return latest if latest >= earliest else None
    found = None
    moment = next_fire_time(trigger, earliest)
    while moment is not None and moment <= at_or_before:
        found = moment
        moment = next_fire_time(trigger, moment + _ONE_MICROSECOND)
    return found
