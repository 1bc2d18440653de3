"""Which Chromium the browser tests drive, how it is launched, and why they skip without it.

Debian's `chromium` (`.ci/run` installs it with apt when missing), driven by Playwright's Python
package through `executable_path`: Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("GATEHOUSE_TEST_CHROMIUM", "/usr/bin/chromium"))
# Playwright gives every launch a fresh temporary profile (user-data-dir) of its own. The
# background-networking flags matter on a machine with no route out: without them Chromium
# keeps trying to reach Google's services and is slow to settle.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def why_no_browser() -> str | None:
    """None when the browser tests can run; otherwise what is missing and how to get it."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed ({exc}): pip install -e '.[dev]'"
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        return (
            f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does it as root), "
            "or point GATEHOUSE_TEST_CHROMIUM at one"
        )
    return None


def artifacts_dir() -> Path:
    """Where screenshots go (never committed): $GATEHOUSE_TEST_ARTIFACTS or test-artifacts/."""
    configured = os.environ.get("GATEHOUSE_TEST_ARTIFACTS")
    root = Path(__file__).resolve().parents[2]
    return Path(configured) if configured else root / "test-artifacts"
