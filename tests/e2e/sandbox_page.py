"""The sandbox page as a person uses it, by its stable selectors (`data-testid`, `data-channel`,
`data-action-id`, …): pick who you are, open a channel, type a slash command, click a card's
button, fill a modal. Every wait is Playwright's own auto-waiting; no sleeps."""

from __future__ import annotations

from playwright.sync_api import Locator, Page, expect

MESSAGE = '[data-testid="message"]'


class SandboxPage:
    def __init__(self, page: Page) -> None:
        self.page = page

    # -- where and who -------------------------------------------------------------------------

    def act_as(self, user_id: str) -> None:
        picker = self.page.locator('select[data-testid="user-picker"]')
        picker.select_option(user_id)
        expect(picker).to_have_value(user_id)

    def open_channel(self, name: str) -> None:
        self.page.locator(f'[data-channel="{name}"]').click()

    def open_home(self) -> Locator:
        self.page.locator('[data-testid="home-link"]').click()
        home = self.page.locator('[data-testid="home"]')
        expect(home).to_be_visible()
        return home

    # -- messages ------------------------------------------------------------------------------

    def command(self, text: str) -> None:
        """Type a slash command in the open channel's composer and send it with Enter."""
        composer = self.page.locator('[data-testid="composer"]')
        composer.fill(text)
        composer.press("Enter")

    def messages(self, scope: Locator | None = None) -> Locator:
        return (scope or self.page).locator(MESSAGE)

    def message_with(self, text: str, scope: Locator | None = None) -> Locator:
        return self.messages(scope).filter(has_text=text)

    def message_with_button(self, action_id: str, scope: Locator | None = None) -> Locator:
        return self.messages(scope).filter(has=self.page.locator(button(action_id)))

    def pinned(self, message: Locator) -> Locator:
        """The same message by its ts, so it stays found after an update changes its content."""
        expect(message).to_have_count(1)
        ts = message.get_attribute("data-ts")
        return self.page.locator(f'{MESSAGE}[data-ts="{ts}"]')

    def ephemerals(self) -> Locator:
        return self.page.locator(f'{MESSAGE}[data-ephemeral="true"]')

    def click(self, message: Locator, action_id: str) -> None:
        message.locator(button(action_id)).click()

    def confirm(self) -> Locator:
        """The confirm dialog a button with `confirm` opens; returned so its text can be read."""
        dialog = self.page.locator('[data-testid="confirm"]')
        expect(dialog).to_be_visible()
        return dialog

    def open_thread(self, message: Locator) -> Locator:
        message.locator('[data-testid="thread-link"]').click()
        thread = self.page.locator('[data-testid="thread"]')
        expect(thread).to_be_visible()
        return thread

    # -- modals --------------------------------------------------------------------------------

    def modal(self) -> Locator:
        modal = self.page.locator('[data-testid="modal"]')
        expect(modal).to_be_visible()
        return modal

    def field(self, block_id: str) -> Locator:
        """A modal input by its block id (the bot's forms name block and action alike)."""
        return self.modal().locator(f'[data-block-id="{block_id}"]').first

    def submit_modal(self) -> None:
        self.modal().locator('[data-testid="modal-submit"]').click()

    def input_errors(self) -> Locator:
        return self.modal().locator('[data-testid="input-error"]')


def button(action_id: str) -> str:
    return f'button[data-action-id="{action_id}"]'
