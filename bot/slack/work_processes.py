"""The work lane in processes of its own (GATEHOUSE_SLACK_WORK_PROCESSES): what a listener hands
to `Bot.submit` after its ack runs in another interpreter, so it never holds the GIL the acking
event loop needs (bench/ack_load.py: with the work on threads beside the loop, every hand-off on
the ack path waits for the interpreter, and the tail grows with the work done after each ack).

Each process builds its own bot from the same settings (its engine, Web API clients, notifier:
cards go through the outbox as they do from `gatehouse worker`) and takes work items: a
module-level function and its arguments, pickled, with the submitting `Bot` standing for the
process's own. A closure, or arguments that do not pickle, stay on the thread lane; so do the
`ui` and `modal` lanes (a trigger_id lives 3 s: no hop for it). A child that dies takes its
unfinished items with it, as a crashed `gatehouse serve` does; the pool is rebuilt on the next
submit.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError

from bot.slack.refusals import log_refusal
from pipelines import Settings

log = structlog.get_logger()


class _ThisBot:
    """Stands in a pickled work item for the bot of the process that runs it."""


THIS_BOT = _ThisBot()
# The bot of this work process (a `bot.slack.bot.Bot`; typed loosely, since that module imports
# this one).
_CHILD_BOT: list[Any] = []


def pack(
    bot: object, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bytes | None:
    """The work item as bytes for a work process; None when it cannot go (a closure, a lambda,
    an argument that does not pickle): the caller runs it on a thread instead."""
    if "<locals>" in getattr(fn, "__qualname__", "<locals>") or fn.__module__ == "__main__":
        return None
    swap = tuple(THIS_BOT if arg is bot else arg for arg in args)
    named = {key: THIS_BOT if value is bot else value for key, value in kwargs.items()}
    try:
        return pickle.dumps((fn, swap, named), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return None


def start_child(settings: Settings, production: bool, build: Callable[..., Any]) -> None:
    """The initializer of each work process: logging as configured, then its own bot, built by
    `build` (`bot.serve.build_bot`, pickled by name)."""
    from pipelines.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    own = settings.model_copy(update={"slack_work_processes": 0})  # no pool of its own
    _CHILD_BOT.append(build(own, production=production))


def run_packed(item: bytes) -> None:
    """In a work process: unpack and run one item, logged like the thread lane's."""
    fn, args, kwargs = pickle.loads(item)
    bot = _CHILD_BOT[0]
    args = tuple(bot if isinstance(arg, _ThisBot) else arg for arg in args)
    kwargs = {k: bot if isinstance(v, _ThisBot) else v for k, v in kwargs.items()}
    try:
        fn(*args, **kwargs)
    except SlackApiError as exc:
        log_refusal("slack.work_refused", exc, work=getattr(fn, "__name__", repr(fn)))
    except Exception:
        log.exception("slack.work_failed", work=getattr(fn, "__name__", repr(fn)))


class WorkProcesses:
    """`count` spawned processes (never forked: the parent has threads) running packed work."""

    def __init__(
        self, settings: Settings, count: int, *, production: bool, build: Callable[..., Any]
    ) -> None:
        self._settings, self._count, self._production = settings, count, production
        self._build = build
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self._count,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=start_child,
            initargs=(self._settings, self._production, self._build),
        )

    def submit(self, item: bytes) -> Future[None]:
        try:
            return self._pool.submit(run_packed, item)
        except BrokenProcessPool:
            log.error("slack.work_processes_restarted", hint="a work process died")
            self._pool = self._new_pool()
            return self._pool.submit(run_packed, item)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
