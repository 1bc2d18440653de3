"""`make demo`: Gatehouse in a local Slack, with a few days of history, in one process.

A fresh SQLite database under `.demo/` (`--reuse` keeps the last one), migrated and seeded with
days of the example pipelines' runs by the real engine (`bot.demo.history`); then
`gatehouse serve` with the local Slack sandbox beside it (`bot.serve.serve_with_sandbox`):
workers, scheduler, the alert check. Once the bot answers, the demo's own jobs start: the
weekly review is posted at once, the alert of the seeded error spike goes to #alerts, and the
example pipelines run on short demo-only schedules (a ticket every 2 minutes, a lead every 5),
so new cards keep arriving. Nothing leaves the machine: the sandbox and the bot talk over
loopback, and with no model configured the LLM steps go to a person (with
GATEHOUSE_LLM_BASE_URL and GATEHOUSE_LLM_MODEL set they call the model). Ctrl-C stops.

`--socket-mode` has the bot connect to the sandbox in Socket Mode (`apps.connections.open` and a
WebSocket, as `manifest.yml` ships) instead of taking its requests at `/slack/events`.
`--terminal` runs the older walk-through in the terminal instead (`bot.demo.terminal`).
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from bot.demo.history import DemoPeople, HistoryReport, NotAFreshDatabase, seed_history
from bot.demo.samples import DEMO_SCHEDULES, demo_schedule
from bot.demo.second_terminal import banner_lines, cli_environment, people_line
from bot.scheduler import FireTimeExecutor, SchedulerHandle
from bot.serve import build_bot, sandbox_settings, serve_with_sandbox
from bot.slack.alerts import check_alerts
from bot.slack.bot import Bot
from bot.slack.review import post_weekly_review
from pipelines import Settings
from pipelines.config import ConfigurationError, load_settings
from pipelines.fire_times import zone
from pipelines.logs import configure_logging
from pipelines.operations.schedules import ScheduleOptions, fire
from pipelines.pipeline import CATALOG
from storage.db import Database

if TYPE_CHECKING:
    from bot.sandbox import Sandbox

log = structlog.get_logger()

DEMO_DIR = Path(".demo")
BOT_READY_SECONDS = 30.0
REVIEW_PACE_SECONDS = 0.02  # the sandbox has no rate limit to respect


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=DEMO_DIR, help="where the database lives")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the last demo's database (no new history)"
    )
    parser.add_argument("--days", type=int, default=5, help="days of history to seed (1-7)")
    parser.add_argument("--port", type=int, default=None, help="the sandbox page's port (8765)")
    parser.add_argument("--bot-port", type=int, default=None, help="the bot's HTTP port (3000)")
    parser.add_argument(
        "--socket-mode",
        action="store_true",
        help="the bot connects to the sandbox in Socket Mode (as manifest.yml ships) instead of HTTP",
    )
    parser.add_argument("--terminal", action="store_true", help="the terminal walk-through")
    args = parser.parse_args(argv)
    if not 1 <= args.days <= 7:
        parser.error("--days must be between 1 and 7")
    return args


def prepare_database(
    directory: Path, *, reuse: bool, days: int
) -> tuple[str, HistoryReport | None]:
    """The demo's SQLite database, migrated; seeded unless `reuse` found one with runs."""
    directory.mkdir(parents=True, exist_ok=True)
    path = (directory / "gatehouse.db").resolve()
    if not reuse:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    db = Database(url)
    try:
        db.upgrade()
        try:
            return url, seed_history(db, days=days, people=DemoPeople())
        except NotAFreshDatabase:
            return url, None  # --reuse of a demo database: its history is there already
    finally:
        db.dispose()


def demo_settings(base: Settings, database_url: str, args: argparse.Namespace) -> Settings:
    """The user's settings (their model, if any), pointed at the demo database and the sandbox's
    channels, on loopback, with the example pipelines registered. Slack credentials are dropped: the demo always plays Slack itself."""
    return base.model_copy(
        update={
            "database_url": database_url,
            "pipelines": ",".join(dict.fromkeys([*base.pipeline_modules, CATALOG])),
            "http_host": "127.0.0.1",
            "http_port": args.bot_port if args.bot_port is not None else base.http_port,
            "sandbox_host": "127.0.0.1",
            "sandbox_port": args.port if args.port is not None else base.sandbox_port,
            "slack_bot_token": None,
            "slack_app_token": None,
            "slack_signing_secret": None,
            "slack_api_url": None,
            "approvals_channel": "C_APPROVALS",
            "review_channel": "C_REVIEW",
            "alerts_channel": "C_ALERTS",
        }
    )


class DemoJobs:
    """What the demo adds to `gatehouse serve` once the bot answers: the weekly review and the
    spike's alert posted at once, and the short demo schedules. Its own engine handle and
    scheduler on the same database; the served bot's workers run what the schedules queue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bot: Bot | None = None
        self.handle: SchedulerHandle | None = None
        self._stopping = threading.Event()

    def start_when_ready(self, sandbox: Sandbox) -> None:
        threading.Thread(
            target=self._run, args=(sandbox,), name="gatehouse-demo", daemon=True
        ).start()

    def _run(self, sandbox: Sandbox) -> None:
        if not _wait_for(f"http://127.0.0.1:{self.settings.http_port}/healthz", self._stopping):
            log.warning("demo.bot_not_ready", port=self.settings.http_port)
            return
        bot = self.bot = build_bot(sandbox_settings(self.settings, sandbox))
        self.handle = self._schedule(bot)
        try:
            post_weekly_review(bot, pace_seconds=REVIEW_PACE_SECONDS)
            check_alerts(bot)
        except Exception:
            log.exception("demo.post_failed")

    def _schedule(self, bot: Bot) -> SchedulerHandle:
        scheduler = BackgroundScheduler(
            timezone=zone(self.settings.timezone),
            executors={"default": FireTimeExecutor()},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        options = ScheduleOptions.from_settings(self.settings)
        handle = SchedulerHandle(scheduler, bot.gatehouse, self.settings, options)
        rt = bot.gatehouse.rt
        for pipeline, (interval, _sample) in DEMO_SCHEDULES.items():

            def fire_demo(fire_time: datetime, pipeline: str = pipeline) -> object:
                return fire(rt, demo_schedule(pipeline, fire_time), fire_time, options)

            handle.add_system_job(f"demo-{pipeline}", interval, fire_demo)
        scheduler.start()
        return handle

    def stop(self) -> None:
        self._stopping.set()
        if self.handle is not None:
            self.handle.shutdown(wait=True)
        if self.bot is not None:
            self.bot.shutdown()
            self.bot.gatehouse.db.dispose()


def _wait_for(url: str, stopping: threading.Event) -> bool:
    deadline = time.monotonic() + BOT_READY_SECONDS
    while time.monotonic() < deadline and not stopping.is_set():
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        stopping.wait(0.1)
    return False


def busy_port_problem(settings: Settings) -> str | None:
    """Checked before seeding: a port in use would stop the demo only after the history."""
    for port, flag in ((settings.sandbox_port, "--port"), (settings.http_port, "--bot-port")):
        if port == 0:
            continue
        with socket.socket() as probe:
            # As the servers do: a port still in TIME_WAIT from the last demo is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return (
                    f"port {port} is in use; pick another: make demo DEMO_ARGS='{flag} {port + 1}'"
                    f" (or python -m bot.demo {flag} {port + 1})"
                )
    return None


def what_to_try(sandbox: Sandbox, command: str) -> None:
    print(
        f"1. Open {sandbox.url} in a browser (you are alice; switch user at the top).\n"
        f"2. Type `{command} help` in the message box.\n"
        "3. Approve carol's refund in #approvals as alice; a ticket arrives every 2 minutes.",
        flush=True,
    )


def second_terminal(sandbox: Sandbox, settings: Settings) -> None:
    """The environment for the CLI beside the demo, and who is who (bot/demo/second_terminal.py)."""
    environment = cli_environment(
        database_url=settings.database_url,
        pipelines=settings.pipelines,
        groups=sandbox.api.groups,
        users=sandbox.api.users,
    )
    people = people_line(sandbox.api.groups, sandbox.api.users)
    print("\n".join(banner_lines(environment, people)), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.terminal:
        from bot.demo import terminal as demo_terminal

        demo_terminal.main()
        return
    try:
        base = load_settings()
    except ConfigurationError as exc:
        raise SystemExit(f"gatehouse demo: {exc}") from exc
    # The history's injected failures log warnings as they would in production: not here.
    problem = busy_port_problem(demo_settings(base, "sqlite://", args))
    if problem:
        raise SystemExit(f"gatehouse demo: {problem}")
    configure_logging(base.log_format, "error")
    url, report = prepare_database(args.dir, reuse=args.reuse, days=args.days)
    configure_logging(base.log_format, base.log_level)
    if report is None:
        print(f"Gatehouse demo: reusing {args.dir / 'gatehouse.db'}", flush=True)
    else:
        print(f"Gatehouse demo: seeded {report.summary()}", flush=True)
    settings = demo_settings(base, url, args)
    model = settings.llm_model if settings.llm_base_url or settings.llm_api_key else None
    print(
        f"LLM steps: {model} at {settings.llm_base_url or 'OpenAI'}"
        if model
        else "LLM steps: no model configured, so a person answers them "
        "(set GATEHOUSE_LLM_BASE_URL and GATEHOUSE_LLM_MODEL to call one)",
        flush=True,
    )
    jobs = DemoJobs(settings)

    def ready(sandbox: Sandbox) -> None:
        what_to_try(sandbox, settings.slash_command)
        second_terminal(sandbox, settings)
        print("Ctrl-C stops.", flush=True)
        jobs.start_when_ready(sandbox)

    try:
        serve_with_sandbox(settings, on_ready=ready, socket_mode=args.socket_mode)
    except ConfigurationError as exc:
        raise SystemExit(f"gatehouse demo: {exc}") from exc
    finally:
        jobs.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
