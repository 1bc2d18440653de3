"""App Home in the browser: opening the tab publishes the dashboard, with the pipelines and what
is waiting for people."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
)

from playwright.sync_api import expect

from tests.e2e.sandbox_page import SandboxPage
from tests.e2e.world import SandboxWorld

LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}
SMALL = {"order_id": "ord_1001", "amount": "5.00", "reason": "scratched"}


def test_app_home_shows_the_pipelines_and_the_approval_waiting(
    world: SandboxWorld, slack: SandboxPage, screenshot: Callable[..., Path]
) -> None:
    world.gatehouse.trigger("refund_request", SMALL, user="U_CAROL")
    waiting = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL")
    assert waiting.status == "waiting"

    slack.act_as("U_ALICE")
    home = slack.open_home()
    expect(home).to_contain_text("Waiting for people (1)")
    expect(home).to_contain_text("refund_request")
    expect(home).to_contain_text("issue_refund")
    screenshot(slack.page, "app-home", full_page=True)
