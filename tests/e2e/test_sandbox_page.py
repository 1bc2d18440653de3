"""The sandbox page opens in a real browser and shows the workspace."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
)

from playwright.sync_api import expect

from tests.e2e.sandbox_page import SandboxPage


def test_the_sandbox_page_shows_the_channels_and_the_user_picker(slack: SandboxPage) -> None:
    for name in ("approvals", "review", "alerts", "general"):
        expect(slack.page.locator(f'[data-channel="{name}"]')).to_be_visible()
    picker = slack.page.locator('select[data-testid="user-picker"]')
    expect(picker.locator('option[value="U_ALICE"]')).to_have_count(1)
    expect(picker.locator('option[value="U_CAROL"]')).to_have_count(1)
