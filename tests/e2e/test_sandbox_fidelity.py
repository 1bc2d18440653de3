"""The sandbox page behaves as Slack's client where a newcomer notices: each browser is its own
person (alice until told otherwise) with its own modals; Escape closes modals and confirm
dialogs; the refusal a click earns shows beside the card clicked; on a phone-sized screen the
sidebar folds behind a menu button; the page loads without a failed request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
)

from playwright.sync_api import Browser, Locator, Page, Response, expect
from slack_sdk import WebClient

from tests.e2e.conftest import TIMEOUT_MS, VIEWPORT
from tests.e2e.sandbox_page import SandboxPage, button
from tests.e2e.world import SandboxWorld

REFUND = (
    '/gatehouse trigger refund_request order_id=ord_1002 amount=150.00 reason="never delivered"'
)
APPROVE, REJECT = "approval.approve", "approval.reject"


@pytest.fixture
def second_browser(browser: Browser, world: SandboxWorld) -> Iterator[SandboxPage]:
    """Another browser (its own context: no cookie yet) on the same sandbox."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    opened.goto(world.sandbox.url)
    yield SandboxPage(opened)
    context.close()


def _refund_card(slack: SandboxPage, world: SandboxWorld) -> Locator:
    slack.act_as("U_CAROL")
    slack.open_channel("general")
    slack.command(REFUND)
    expect(slack.ephemerals().filter(has_text="refund_request")).to_contain_text("waiting")
    slack.open_channel("approvals")
    card = slack.pinned(slack.message_with_button(APPROVE))
    expect(card).to_contain_text("issue_refund")
    return card


def test_a_second_browser_is_alice_and_sees_no_modal_left_open_in_the_first(
    world: SandboxWorld, slack: SandboxPage, second_browser: SandboxPage
) -> None:
    card = _refund_card(slack, world)
    slack.act_as("U_BOB")
    slack.click(card, REJECT)
    expect(slack.modal()).to_contain_text("Reject")

    second_browser.page.reload()  # a fresh look, after the modal opened
    picker = second_browser.page.locator('select[data-testid="user-picker"]')
    expect(picker).to_have_value("U_ALICE")
    expect(second_browser.page.locator('[data-channel="approvals"]')).to_be_visible()
    expect(second_browser.page.locator('[data-testid="modal"]')).to_have_count(0)
    second_browser.open_channel("approvals")
    second_card = second_browser.message_with_button(APPROVE)
    second_browser.click(second_card, APPROVE)  # nothing covers the card: the click lands
    expect(second_browser.confirm()).to_contain_text("Approve this spend?")

    expect(picker).to_have_value("U_ALICE")  # the first browser's bob did not leak over
    expect(slack.page.locator('select[data-testid="user-picker"]')).to_have_value("U_BOB")
    expect(slack.modal()).to_be_visible()  # and the first browser's modal is still its own


def test_escape_closes_the_modal_and_the_run_still_waits(
    world: SandboxWorld, slack: SandboxPage
) -> None:
    card = _refund_card(slack, world)
    slack.act_as("U_BOB")
    slack.click(card, REJECT)
    slack.field("reason").fill("half typed")

    slack.page.keyboard.press("Escape")

    expect(slack.page.locator('[data-testid="modal"]')).to_have_count(0)
    expect(card.locator(button(REJECT))).to_be_visible()
    slack.page.reload()  # closed for the sandbox too, not only hidden on the page
    expect(slack.page.locator('[data-channel="approvals"]')).to_be_visible()
    expect(slack.page.locator('[data-testid="modal"]')).to_have_count(0)
    world.settle()
    [run] = world.gatehouse.runs(pipeline="refund_request")
    assert world.gatehouse.run(run.id).status == "waiting"


def test_escape_cancels_a_confirm_dialog(world: SandboxWorld, slack: SandboxPage) -> None:
    card = _refund_card(slack, world)
    slack.act_as("U_ALICE")
    slack.click(card, APPROVE)
    slack.confirm()

    slack.page.keyboard.press("Escape")

    expect(slack.page.locator('[data-testid="confirm"]')).to_have_count(0)
    expect(card.locator(button(APPROVE))).to_be_visible()
    world.settle()
    [run] = world.gatehouse.runs(pipeline="refund_request")
    assert world.gatehouse.run(run.id).status == "waiting"


def test_the_refusal_of_a_click_shows_beside_the_card_in_view(
    world: SandboxWorld, slack: SandboxPage, screenshot: Callable[..., Path]
) -> None:
    card = _refund_card(slack, world)
    client = WebClient(token=world.sandbox.token, base_url=world.sandbox.api_url)
    for number in range(12):  # the channel moves on: the card is far from the bottom
        client.chat_postMessage(channel="C_APPROVALS", text=f"later message {number}")
    expect(slack.message_with("later message 11")).to_be_visible()
    card.scroll_into_view_if_needed()

    slack.click(card, APPROVE)  # carol is no finance lead
    slack.confirm().locator('[data-testid="confirm-ok"]').click()

    refusal = slack.ephemerals().filter(has_text="may not approve")
    expect(refusal).to_be_in_viewport()
    expect(refusal).to_contain_text("Only visible to you")
    ts = card.get_attribute("data-ts")
    expect(refusal).to_have_attribute("data-answers", str(ts))
    beside = slack.page.locator(f'[data-ts="{ts}"] + [data-testid="message"]')
    expect(beside).to_contain_text("may not approve")  # the very next message on screen
    card_box, refusal_box = card.bounding_box(), refusal.bounding_box()
    assert card_box is not None and refusal_box is not None
    assert 0 <= refusal_box["y"] - (card_box["y"] + card_box["height"]) < 40
    screenshot(slack.page, "refusal-beside-card")


def test_at_390_px_the_sidebar_folds_behind_a_menu_button(
    browser: Browser, world: SandboxWorld, screenshot: Callable[..., Path]
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(world.sandbox.url)
        sidebar = page.locator("#sidebar")
        menu = page.locator('[data-testid="menu-button"]')
        expect(page.locator('[data-testid="composer"]')).to_be_visible()
        expect(menu).to_be_visible()
        expect(sidebar).not_to_be_in_viewport()
        composer = page.locator('[data-testid="composer"]').bounding_box()
        assert composer is not None and composer["x"] < 20 and composer["width"] > 300
        screenshot(page, "narrow-closed")

        menu.click()
        expect(sidebar).to_be_in_viewport(ratio=1)  # all of it: the drawer finished opening
        expect(menu).to_have_attribute("aria-expanded", "true")
        screenshot(page, "narrow-menu-open")
        page.locator('[data-channel="review"]').click()

        expect(page.locator("#title")).to_have_text("# review")
        expect(sidebar).not_to_be_in_viewport()
    finally:
        context.close()


def test_the_page_loads_with_no_failed_request_and_its_favicon(
    browser: Browser, world: SandboxWorld
) -> None:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    failed: list[str] = []
    seen: list[str] = []

    def note(response: Response) -> None:
        seen.append(response.url)
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    try:
        page: Page = context.new_page()
        page.on("response", note)
        page.goto(world.sandbox.url)
        expect(page.locator('[data-channel="approvals"]')).to_be_visible()
        icon = page.evaluate(
            "fetch('/favicon.ico').then(r => r.status + ' ' + r.headers.get('content-type'))"
        )
        assert icon == "200 image/svg+xml"
        assert any(url.endswith("/static/favicon.svg") for url in seen), seen
        assert failed == []
    finally:
        context.close()


def test_a_link_with_channel_and_ts_opens_the_channel_on_that_message(
    browser: Browser, world: SandboxWorld
) -> None:
    client = WebClient(token=world.sandbox.token, base_url=world.sandbox.api_url)
    first = client.chat_postMessage(channel="C_REVIEW", text="start here")["ts"]
    for number in range(20):
        client.chat_postMessage(channel="C_REVIEW", text=f"later message {number}")
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(f"{world.sandbox.url}/?channel=review&ts={first}")

        expect(page.locator("#title")).to_have_text("# review")
        linked = page.locator(f'[data-testid="message"][data-ts="{first}"]')
        expect(linked).to_be_in_viewport()
        expect(
            page.locator('[data-testid="message"]').filter(has_text="later message 19")
        ).not_to_be_in_viewport()

        page.goto(f"{world.sandbox.url}/?channel=nowhere")  # a channel the sandbox lacks
        expect(page.locator("#title")).to_have_text("# approvals")
        expect(page.locator("#toast")).to_contain_text("no channel nowhere")
    finally:
        context.close()
