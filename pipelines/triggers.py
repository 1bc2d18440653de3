"""Trigger declarations on a pipeline: `cron(...)`, `every(...)`, `webhook()`.

This module only describes them (for `gatehouse pipelines`); `pipelines.operations.schedules` fires the
cron and every triggers (the bot's scheduler calls it) and `pipelines.webhooks` accepts
deliveries for webhook triggers (the bot's `POST /hooks/PIPELINE`).

A scheduled run's input is `input=` (default `{}`), validated by the pipeline's model at each
fire. `misfire=` says what happens to a fire nobody handled on time (every process was down or
stalled): `"run_late"` (the default) runs it once when it is noticed within
GATEHOUSE_MISFIRE_GRACE_SECONDS, `"skip"` never runs it late. Either way a schedule gets at
most one late run, however many fires were missed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pipelines.durations import parse_duration
from pipelines.fire_times import cron_trigger, interval_trigger, zone

Misfire = Literal["run_late", "skip"]
MISFIRE_POLICIES: tuple[Misfire, ...] = ("run_late", "skip")


def _options(input: dict[str, Any] | None, misfire: Misfire) -> str:
    parts = [f", input={input!r}" if input is not None else ""]
    parts.append(f", misfire={misfire!r}" if misfire != "run_late" else "")
    return "".join(parts)


@dataclass(frozen=True)
class Cron:
    expression: str
    tz: str | None = None
    input: dict[str, Any] | None = field(default=None, hash=False)
    misfire: Misfire = "run_late"

    def describe(self) -> str:
        zone_part = f", tz={self.tz!r}" if self.tz else ""
        return f"cron({self.expression!r}{zone_part}{_options(self.input, self.misfire)})"


@dataclass(frozen=True)
class Every:
    interval: timedelta
    input: dict[str, Any] | None = field(default=None, hash=False)
    misfire: Misfire = "run_late"

    def describe(self) -> str:
        seconds = self.interval.total_seconds()
        amount = f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:g}s"
        return f"every({amount}{_options(self.input, self.misfire)})"


@dataclass(frozen=True)
class Webhook:
    def describe(self) -> str:
        return "webhook()"


Trigger = Cron | Every | Webhook


def _check_common(what: str, input: Mapping[str, Any] | None, misfire: str) -> None:
    if misfire not in MISFIRE_POLICIES:
        raise ValueError(f"{what}: misfire={misfire!r}; use 'run_late' or 'skip'")
    if input is not None and not isinstance(input, Mapping):
        raise TypeError(f"{what}: input= must be a dict of the pipeline's input fields")


def cron(
    expression: str,
    tz: str | None = None,
    *,
    input: Mapping[str, Any] | None = None,
    misfire: Misfire = "run_late",
) -> Cron:
    """Fire at the times of a five-field crontab expression (crontab's weekday numbers: 0 and 7
    are Sunday), in `tz` or else GATEHOUSE_TIMEZONE."""
    _check_common(f"cron({expression!r})", input, misfire)
    if tz is not None:
        zone(tz)
    cron_trigger(expression, tz or "UTC")  # a typo fails at import time, not at the first fire
    return Cron(expression, tz, dict(input) if input is not None else None, misfire)


def every(
    interval: str | timedelta,
    *,
    input: Mapping[str, Any] | None = None,
    misfire: Misfire = "run_late",
) -> Every:
    """Fire every `interval` ("10m", "1h"), at multiples of it counted from 2000-01-01 00:00 UTC
    (so `every("10m")` fires at :00, :10, … in every process)."""
    parsed = parse_duration(interval)
    _check_common(f"every({interval!r})", input, misfire)
    interval_trigger(parsed, "UTC")
    return Every(parsed, dict(input) if input is not None else None, misfire)


def webhook() -> Webhook:
    """Accept `POST /hooks/PIPELINE` (see `pipelines.webhooks` and `bot.http.webhooks`)."""
    return Webhook()
