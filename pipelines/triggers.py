"""Trigger declarations on a pipeline: `cron(...)`, `every(...)`, `webhook()`.

This module only describes them (for `gatehouse pipelines`); the scheduler and the webhook
endpoint that fire them are in the bot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from pipelines.durations import parse_duration


@dataclass(frozen=True)
class Cron:
    expression: str
    tz: str | None = None

    def describe(self) -> str:
        return f"cron({self.expression!r}{', tz=' + repr(self.tz) if self.tz else ''})"


@dataclass(frozen=True)
class Every:
    interval: timedelta

    def describe(self) -> str:
        return f"every({int(self.interval.total_seconds())}s)"


@dataclass(frozen=True)
class Webhook:
    def describe(self) -> str:
        return "webhook()"


Trigger = Cron | Every | Webhook


def cron(expression: str, tz: str | None = None) -> Cron:
    if len(expression.split()) != 5:
        raise ValueError(f"cron({expression!r}) needs five fields: minute hour day month weekday")
    return Cron(expression, tz)


def every(interval: str | timedelta) -> Every:
    return Every(parse_duration(interval))


def webhook() -> Webhook:
    return Webhook()
