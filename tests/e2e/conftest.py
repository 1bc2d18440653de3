"""Browser tests' fixtures: one headless Chromium for the package (skipped, saying why, where
Chromium or Playwright is missing), and per test a fresh world: a migrated SQLite database, the
bot on loopback wired to the Slack sandbox, a worker, and a page open on the sandbox.

Screenshots a test takes, and one of the page whenever a test fails, go to the artifacts
directory (`test-artifacts/`, or $GATEHOUSE_TEST_ARTIFACTS); the run's summary names it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, artifacts_dir, why_no_browser
from tests.e2e.world import SandboxWorld, sandbox_world

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

    from tests.e2e.sandbox_page import SandboxPage

TIMEOUT_MS = 15_000  # generous: two cores shared with the bot, its worker and Chromium
VIEWPORT = {"width": 1280, "height": 900}

_saved: list[Path] = []
_FAILED = pytest.StashKey[bool]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _saved:
        folder = _saved[0].parent
        names = ", ".join(sorted({p.name for p in _saved}))
        terminalreporter.write_line(f"browser test artifacts in {folder}: {names}")


def save_screenshot(target: Page | Locator, name: str, **options: Any) -> Path:
    """A PNG of the page or one element in the artifacts directory, named in the summary."""
    folder = artifacts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    target.screenshot(path=str(path), **options)
    _saved.append(path)
    return path


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    reason = why_no_browser()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import Error, expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
        except Error as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            pytest.skip(f"Chromium at {CHROMIUM} did not start: {first_line}")
        yield launched
        launched.close()


@pytest.fixture
def world(sqlite_url: str) -> Iterator[SandboxWorld]:
    with sandbox_world(sqlite_url) as built:
        yield built


@pytest.fixture
def page(browser: Browser, world: SandboxWorld, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    opened.goto(world.sandbox.url)
    yield opened
    if request.node.stash.get(_FAILED, False):
        save_screenshot(opened, f"failed-{_slug(request.node.name)}", full_page=True)
    context.close()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """`screenshot(page_or_locator, "name")` keeps a PNG as a test artifact."""
    return save_screenshot


@pytest.fixture
def slack(page: Page) -> SandboxPage:
    """The sandbox page, driven as a person would (tests/e2e/sandbox_page.py)."""
    from tests.e2e.sandbox_page import SandboxPage

    return SandboxPage(page)
