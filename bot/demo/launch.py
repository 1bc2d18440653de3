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
import shlex
import socket
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from bot.demo.history import DemoPeople, HistoryReport, NotAFreshDatabase, seed_history
from bot.demo.live_model import MODEL as LIVE_MODEL
from bot.demo.live_model import LiveModel
from bot.demo.samples import DEMO_SCHEDULES, TICKETS_PER_APPROVAL, demo_case, demo_schedule
from bot.demo.second_terminal import banner_lines, cli_environment, people_line
from bot.scheduler import FireTimeExecutor, SchedulerHandle
from bot.serve import build_bot, sandbox_settings, serve_with_sandbox
from bot.slack.alerts import check_alerts
from bot.slack.bot import Bot
from bot.slack.review import post_weekly_review
from pipelines import Settings
from pipelines.catalog.lead_qualify import InboundLead, lead_prompt
from pipelines.catalog.ticket_triage import SupportTicket, ticket_prompt
from pipelines.config import ConfigurationError, load_settings
from pipelines.fire_times import zone
from pipelines.inspect import pending
from pipelines.logs import configure_logging
from pipelines.operations.schedules import ScheduleOptions, fire
from pipelines.pipeline import CATALOG
from pipelines.views import ApprovalView
from storage import messages
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

    def __init__(self, settings: Settings, model: LiveModel | None = None) -> None:
        self.settings = settings
        self.model = model  # the scripted model the live cases' LLM steps call, if no other
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
        start_here = carol_refund_card(bot, self._stopping)
        what_to_try(sandbox, self.settings.slash_command, start_here)
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
                if self.model is not None:  # what it will say about this fire's case
                    case = demo_case(pipeline, fire_time)
                    self.model.expect(prompt_of(pipeline, case.input), case.answer)
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


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        # As the servers do: a port still in TIME_WAIT from the last demo is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _free_port_from(port: int, avoid: set[int]) -> int:
    candidate = port
    while candidate in avoid or _port_taken(candidate):
        candidate += 1
    return candidate


def with_flag(argv: list[str], flag: str, value: str) -> list[str]:
    """`argv` with `flag`'s value set to `value` (replaced where given, else appended)."""
    out: list[str] = []
    replaced = False
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == flag and index + 1 < len(argv):
            out += [flag, value]
            replaced = skip = True
        elif arg.startswith(f"{flag}="):
            out.append(f"{flag}={value}")
            replaced = True
        else:
            out.append(arg)
    return out if replaced else [*out, flag, value]


def busy_port_problem(settings: Settings, argv: list[str]) -> str | None:
    """Checked before seeding: a port in use would stop the demo only after the history. The
    hint repeats the other arguments given, with a free port for each busy one."""
    ports = {"--port": settings.sandbox_port, "--bot-port": settings.http_port}
    busy = {flag: port for flag, port in ports.items() if port != 0 and _port_taken(port)}
    if not busy:
        return None
    suggested = list(argv)
    taken = set(ports.values())
    for flag, port in busy.items():
        free = _free_port_from(port + 1, taken)
        taken.add(free)
        suggested = with_flag(suggested, flag, str(free))
    what = " and ".join(f"port {port} ({flag})" for flag, port in busy.items())
    args = shlex.join(suggested)
    return (
        f"{what} {'is' if len(busy) == 1 else 'are'} in use; pick another: "
        f"make demo DEMO_ARGS={shlex.quote(args)} (or python -m bot.demo {args})"
    )


def carol_refund_card(bot: Bot, stopping: threading.Event) -> tuple[str, str] | None:
    """The channel and ts of the card of carol's waiting refund, once the bot has posted it
    (the outbox delivers the owed cards as the bot starts); None if it is not there in time."""
    rt = bot.gatehouse.rt
    refund = next(
        (
            item
            for item in pending(rt)
            if isinstance(item, ApprovalView)
            and item.trigger_user == DemoPeople().requester
            and item.tool == "issue_refund"
        ),
        None,
    )
    if refund is None:
        return None
    deadline = time.monotonic() + BOT_READY_SECONDS
    while time.monotonic() < deadline and not stopping.is_set():
        with rt.db.transaction() as conn:
            ref = messages.message_ref(conn, kind="approval", ref_id=refund.id)
        if ref is not None:
            return ref.channel, ref.ts
        stopping.wait(0.1)
    return None


def what_to_try(sandbox: Sandbox, command: str, start_here: tuple[str, str] | None) -> None:
    """The steps, as the page shows them. `start_here`: carol's refund card, which the link
    opens #approvals on (`?as=alice&channel=…&ts=TS`, the sandbox page's)."""
    where = "open #approvals (carol's refund has no card to link: decided already, or not posted)"
    url = sandbox.url
    if start_here is not None:
        channel, ts = start_here
        url = f"{sandbox.url}/?{urlencode({'as': 'alice', 'channel': channel, 'ts': ts})}"
        where = "#approvals, on carol's refund over 100.00"
    every = 2 * TICKETS_PER_APPROVAL
    print(
        f"1. Open {url} in a browser: {where} (you are alice; switch user at the top).\n"
        "2. Switch to carol and click Approve on it: refused, carol is not in @finance-leads.\n"
        "3. Back as alice, click Approve, then Approve in the dialog: the card says who approved"
        " it and that the refund was issued. alice's own refund below it is refused to her"
        " (four-eyes); bob may approve it.\n"
        f"4. Type `{command} help` in the message box.\n"
        "A ticket arrives every 2 minutes and a lead every 5; the demo's scripted model"
        f" classifies them: every {TICKETS_PER_APPROVAL}th ticket (every {every} minutes) asks"
        " a finance lead to approve a 120.00 refund, and the vague ones it is unsure of come to"
        " you as a task whose card says why.",
        flush=True,
    )


def prompt_of(pipeline: str, case: dict[str, Any]) -> str:
    """The prompt the pipeline's LLM step sends for this input (what the live model is told)."""
    if pipeline == "ticket_triage":
        return ticket_prompt(SupportTicket.model_validate(case))
    return lead_prompt(InboundLead.model_validate(case))


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
    given = list(sys.argv[1:] if argv is None else argv)
    problem = busy_port_problem(demo_settings(base, "sqlite://", args), given)
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
    live = None if model else LiveModel().start()
    if live is not None:
        settings = settings.model_copy(
            update={
                "llm_base_url": live.base_url,
                "llm_model": LIVE_MODEL,
                "llm_api_key": None,
                # It costs nothing: the runs' cost says $0, not "no price for this model".
                "llm_prices": {
                    **settings.llm_prices,
                    LIVE_MODEL: {"prompt": 0.0, "completion": 0.0},
                },
            }
        )
    print(
        f"LLM steps: {model} at {settings.llm_base_url or 'OpenAI'}"
        if model
        else f"LLM steps: the demo's scripted model ({LIVE_MODEL}, on loopback); set "
        "GATEHOUSE_LLM_BASE_URL and GATEHOUSE_LLM_MODEL to call a real one",
        flush=True,
    )
    jobs = DemoJobs(settings, live)

    def ready(sandbox: Sandbox) -> None:
        second_terminal(sandbox, settings)
        print("Ctrl-C stops. The steps follow once the bot has posted its cards:", flush=True)
        jobs.start_when_ready(sandbox)

    try:
        serve_with_sandbox(settings, on_ready=ready, socket_mode=args.socket_mode)
    except ConfigurationError as exc:
        raise SystemExit(f"gatehouse demo: {exc}") from exc
    finally:
        jobs.stop()
        if live is not None:
            live.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
