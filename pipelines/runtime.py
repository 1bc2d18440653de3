"""What a running engine holds: the database, the clock and the ports, and who this process is.

Connectors (like the demo store) reach the engine's database through `current_database()`
while a run executes, instead of opening a second engine of their own.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from sqlalchemy import Connection

from pipelines.authorization import Authorization
from pipelines.leases import LeaseKeeper
from pipelines.llm import LLMCaller, LLMConfig
from pipelines.ports import (
    ApproverDirectory,
    Clock,
    Notifier,
    SilentNotifier,
    StaticDirectory,
    SystemClock,
)
from storage import outbox as outbox_rows
from storage.db import Database

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from pipelines.budget_limits import Budget

log = structlog.get_logger()


class Deliverer(Protocol):
    """The outbox sender as the runtime sees it (`pipelines.outbox.OutboxSender`)."""

    def nudge(self, subject_id: str | None = None) -> None: ...


def new_worker_id() -> str:
    """`host:pid:random`: unique per process, and lets a worker on the same host tell that the
    owner of an orphaned run is dead without waiting for its lease to run out."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class Runtime:
    db: Database
    clock: Clock = field(default_factory=SystemClock)
    notifier: Notifier = field(default_factory=SilentNotifier)
    directory: ApproverDirectory = field(default_factory=StaticDirectory)
    worker_id: str = field(default_factory=new_worker_id)
    lease: timedelta = timedelta(minutes=5)
    llm_config: LLMConfig = field(default_factory=LLMConfig)
    authorization: Authorization = field(default_factory=Authorization)
    # Every change a person must see writes an outbox row (one INSERT in its transaction), for
    # whichever process delivers to Slack. With a `sender`, this runtime's notifier is fed by the
    # outbox; without one, the notifier is a local echo (the terminal, a test's recorder) told
    # right after the commit, and the rows wait for a delivering process.
    outbox: bool = True
    sender: Deliverer | None = None
    # Tell the Slack user who triggered a run how it went (`pipelines.run_notices`): on from
    # GATEHOUSE_TELL_TRIGGERER (`Gatehouse.from_settings`); an engine built in code does not.
    tell_triggerers: bool = False
    # A tool's outcome whose write lost the database is written again on fresh connections
    # after these pauses (seconds; ~20 s in all). Past them it is kept here, by call id, and
    # written when this process replays the run once the database is back.
    outcome_retry_delays: tuple[float, ...] = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0)
    unrecorded_outcomes: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # GATEHOUSE_BUDGETS: a pipeline's budget as configured, over its decorator's (pipelines.budgets).
    budgets: Mapping[str, Budget] = field(default_factory=dict)
    _llm_caller: LLMCaller | None = field(default=None, repr=False, compare=False)
    _lease_keeper: LeaseKeeper | None = field(default=None, repr=False, compare=False)
    # Calls whose approval this process decided `approved` (a decision is final): the resume
    # that follows here settles the call without reading the approval back
    # (`pipelines.approvals.settle`). Bounded; a forgotten entry only costs that read.
    approved_calls: set[str] = field(default_factory=set, repr=False, compare=False)

    def enqueue(self, conn: Connection, event: str, subject_id: str, now: datetime) -> None:
        """Owe `event` about `subject_id`; call inside the transaction making the change."""
        if self.outbox:
            outbox_rows.enqueue(conn, event=event, subject_id=subject_id, now=now)

    def notify(self, event: str, view: Any) -> None:
        """After the commit: nudge the sender (it delivers the subject's current state), or tell
        a local notifier directly. A failure (Slack down, a bug in a card) is logged and never
        undoes or blocks what the engine already committed."""
        if self.sender is not None:
            self.sender.nudge(getattr(view, "id", None))
            return
        try:
            getattr(self.notifier, event)(view)
        except Exception:
            log.exception("notifier.failed", notify=event, id=getattr(view, "id", None))

    @property
    def llm(self) -> LLMCaller:
        """The model client for `ctx.llm`, built on first use (none is needed without LLM steps)."""
        if self._llm_caller is None:
            self._llm_caller = LLMCaller(self.llm_config)
        return self._llm_caller

    @property
    def leases(self) -> LeaseKeeper:
        if self._lease_keeper is None:
            self._lease_keeper = LeaseKeeper(self)
        return self._lease_keeper


_current_runtime: ContextVar[Runtime | None] = ContextVar("gatehouse_runtime", default=None)


@contextmanager
def running_in(runtime: Runtime) -> Iterator[None]:
    token = _current_runtime.set(runtime)
    try:
        yield
    finally:
        _current_runtime.reset(token)


def current_clock() -> Clock:
    """The engine's clock while a run executes (a test's fake clock included); the system
    clock otherwise. Connectors stamp their records with it."""
    runtime = _current_runtime.get()
    return runtime.clock if runtime is not None else SystemClock()


def current_database() -> Database:
    runtime = _current_runtime.get()
    if runtime is None:
        raise RuntimeError("current_database() is only available while a run executes")
    return runtime.db
