"""`Bot`: what every listener needs (the engine, the Web API client, settings) and the two
thread pools its work runs on after the ack; and the Web API client, built once.

Two pools: `ui` for the Slack calls a person is waiting on (`views.open` must happen within
the 3 s a trigger_id lives), `work` for decisions and the runs they resume, which may take long.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import structlog
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from pipelines import Gatehouse, Settings

log = structlog.get_logger()


@dataclass
class Bot:
    """What the listeners need: the engine, the Web API client, settings, and a place to work."""

    gatehouse: Gatehouse
    client: WebClient
    settings: Settings
    # The workspaces whose requests are served (bot/slack/workspaces.py); None: no check.
    workspaces: frozenset[str] | None = None
    work: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "slack-work"))
    ui: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "slack-ui"))
    _pending: set[Future[None]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run after the ack on the work pool; errors are logged, never lost silently."""
        self._run(self.work, fn, *args, **kwargs)

    def submit_ui(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run after the ack on the pool that only talks to Slack (never waits on a run)."""
        self._run(self.ui, fn, *args, **kwargs)

    def shutdown(self) -> None:
        self.wait_idle(timeout=60)
        self.ui.shutdown(wait=True)
        self.work.shutdown(wait=True)

    def _run(
        self, pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:

        def guarded() -> None:
            try:
                fn(*args, **kwargs)
            except Exception:
                log.exception("slack.work_failed", work=getattr(fn, "__name__", repr(fn)))

        future = pool.submit(guarded)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until every submitted piece of work is done (shutdown, tests)."""
        with self._lock:
            pending = list(self._pending)
        _done, not_done = wait(pending, timeout=timeout)
        if not_done:
            raise TimeoutError(f"{len(not_done)} Slack work items still running after {timeout}s")


def build_web_client(settings: Settings) -> WebClient:
    """A Web API client that survives Slack's rate limits (honouring `Retry-After`) and
    connection blips through slack-sdk's own retry handlers."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    kwargs: dict[str, Any] = {}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url.rstrip("/") + "/"
    return WebClient(
        token=token,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=3),
            ConnectionErrorRetryHandler(max_retry_count=2),
        ],
        **kwargs,
    )
