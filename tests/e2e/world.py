"""The whole product on loopback, as `gatehouse serve` runs it without a Slack token: the Slack
sandbox (Web API + web page), the Bolt app served by uvicorn, the engine on the test database
with the shipped pipelines, a worker and the outbox sender's thread. The clock is the real one:
a person is clicking. (No scheduler: the tests post the weekly review themselves.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from bot.http.asgi import build_asgi
from bot.http.server import BackgroundServer
from bot.sandbox import Sandbox
from bot.serve import build_bot, outbox_sender, start_workers
from bot.slack.app import build_bolt_app
from bot.slack.bot import Bot
from pipelines import Gatehouse, Run, Settings, Worker

SIGNING_SECRET = "e2e-signing-secret-0123456789abcdef"
APPROVALS, REVIEW, ALERTS = "C_APPROVALS", "C_REVIEW", "C_ALERTS"
FINISHED = frozenset(
    {"succeeded", "failed", "rejected", "invalid_input", "needs_attention", "cancelled"}
)


@dataclass
class SandboxWorld:
    sandbox: Sandbox
    bot: Bot
    server: BackgroundServer
    workers: list[tuple[Worker, threading.Thread]]

    @property
    def gatehouse(self) -> Gatehouse:
        return self.bot.gatehouse

    def settle(self) -> None:
        """Wait until the work the bot took after its acks is done."""
        self.bot.wait_idle(timeout=15)

    def wait_for_run(self, run_id: str, *, timeout: float = 15.0) -> Run:
        """The run once it has finished (resumed by the bot after a click, or by the worker)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.gatehouse.run(run_id)
            if run.status in FINISHED or time.monotonic() > deadline:
                return run
            threading.Event().wait(0.05)

    def only_run(self, pipeline: str) -> Run:
        [run] = self.gatehouse.runs(pipeline=pipeline)
        return run


def settings_for(sandbox: Sandbox, database_url: str) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "slack_bot_token": SecretStr(sandbox.token),
        "slack_signing_secret": SecretStr(SIGNING_SECRET),
        "slack_api_url": sandbox.api_url,
        "approvals_channel": APPROVALS,
        "review_channel": REVIEW,
        "alerts_channel": ALERTS,
        "worker_poll_seconds": 0.1,
    }
    return Settings.model_construct(**{**Settings().model_dump(), **values})


@contextmanager
def sandbox_world(database_url: str) -> Iterator[SandboxWorld]:
    with Sandbox(signing_secret=SIGNING_SECRET, host="127.0.0.1", port=0) as sandbox:
        bot = build_bot(settings_for(sandbox, database_url))
        server = BackgroundServer(build_asgi(build_bolt_app(bot))).start()
        sandbox.connect_bot(f"{server.url}/slack/events")
        workers = start_workers(bot, 1)
        outbox_sender(bot).start()  # cards go out from its thread, as in `gatehouse serve`
        try:
            yield SandboxWorld(sandbox, bot, server, workers)
        finally:
            for worker, _thread in workers:
                worker.stop()
            for _worker, thread in workers:
                thread.join(timeout=15)
            server.stop()
            bot.shutdown()
            outbox_sender(bot).stop()
            bot.gatehouse.db.dispose()
