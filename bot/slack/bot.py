"""`Bot`: what every listener needs (the engine, the Web API clients, settings) and the three
thread pools its work runs on after the ack.

Three lanes, so that nothing a person waits on queues behind slower work:
- `modals` only exchanges trigger_ids (`views.open`), one call each through the modal client,
  which never sleeps on a retry: a trigger_id lives 3 s, and a 429 is answered at once;
- `ui` for the other Slack calls a person is waiting on (filling a modal opened as "loading");
- `work` for decisions, the runs they resume, the Home tab, commands: anything that may be slow.

A Slack refusal that reaches the lane's guard is logged as a warning naming the method and the
error (no traceback); a traceback is for our own bugs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack.refusals import log_refusal
from bot.slack.web_client import build_web_client, modal_web_client
from pipelines import Gatehouse, Settings

__all__ = ["Bot", "build_web_client"]

log = structlog.get_logger()


@dataclass
class Bot:
    """What the listeners need: the engine, the Web API clients, settings, and places to work.
    `modal_client` (built from `client`) is for the calls that spend a trigger_id."""

    gatehouse: Gatehouse
    client: WebClient
    settings: Settings
    # The workspaces whose requests are served (bot/slack/workspaces.py); None: no check.
    workspaces: frozenset[str] | None = None
    work: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "slack-work"))
    ui: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "slack-ui"))
    modals: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(4, "slack-modals")
    )
    # Unfinished work items (all lanes) past which a new Slack request is refused as busy
    # (bot/slack/backpressure.py); the lanes' own queues never drop what they were given.
    work_limit: int = 1000
    modal_client: WebClient = field(init=False)
    _pending: set[Future[None]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.modal_client = modal_web_client(self.client)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run after the ack on the work pool; errors are logged, never lost silently."""
        self._run(self.work, fn, *args, **kwargs)

    def submit_ui(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run after the ack on the pool that only talks to Slack (never waits on a run)."""
        self._run(self.ui, fn, *args, **kwargs)

    def submit_modal(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run after the ack on the lane that opens modals: `fn` must make its `views.open`
        through `modal_client` first thing and hand anything slower to another lane."""
        self._run(self.modals, fn, *args, **kwargs)

    def unfinished(self) -> int:
        """Work items submitted and not yet done, on every lane."""
        with self._lock:
            return len(self._pending)

    def has_room(self) -> bool:
        """Whether a new request's work may be taken (fewer than `work_limit` unfinished)."""
        return self.unfinished() < self.work_limit

    def shutdown(self) -> None:
        self.wait_idle(timeout=60)
        self.modals.shutdown(wait=True)
        self.ui.shutdown(wait=True)
        self.work.shutdown(wait=True)

    def _run(
        self, pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:

        def guarded() -> None:
            try:
                fn(*args, **kwargs)
            except SlackApiError as exc:  # Slack's answer, not our bug: no traceback
                log_refusal("slack.work_refused", exc, work=getattr(fn, "__name__", repr(fn)))
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
        """Block until every submitted piece of work is done (shutdown, tests), including the
        work it handed on to another lane (an opened modal's filling)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return
            _done, not_done = wait(pending, timeout=max(deadline - time.monotonic(), 0))
            if not_done:
                raise TimeoutError(
                    f"{len(not_done)} Slack work items still running after {timeout}s"
                )
