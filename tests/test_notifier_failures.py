"""A notifier that fails (Slack down, a bug in a card) never blocks or undoes the engine's work."""

from __future__ import annotations

from typing import Any

from pipelines import Gatehouse, StaticDirectory
from storage.db import Database
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock

LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}


class BrokenNotifier:
    def __init__(self) -> None:
        self.attempts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def fail(_view: Any) -> None:
            self.attempts.append(name)
            raise ConnectionError("slack is down")

        return fail


def test_approvals_and_runs_go_on_when_the_notifier_fails(db: Database, clock: FakeClock) -> None:
    notifier = BrokenNotifier()
    gatehouse = Gatehouse(db, clock=clock, notifier=notifier, directory=StaticDirectory(GROUPS))
    run = gatehouse.trigger("refund_request", LARGE, user="alice")
    assert run.status == "waiting"
    gatehouse.approve(run.waiting_for[0], user="bob")
    finished = gatehouse.resume(run.id)
    assert finished is not None and finished.status == "succeeded"
    assert notifier.attempts == ["approval_requested", "approval_decided"]
