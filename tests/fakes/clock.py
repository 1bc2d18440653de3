"""A clock tests move by hand: windows, expiry and leases without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime

from pipelines.testing import ManualClock


class FakeClock(ManualClock):
    """`pipelines.testing.ManualClock`, starting on the tests' own default day."""

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__(start or datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
