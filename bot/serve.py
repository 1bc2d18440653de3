"""`gatehouse serve`: the Slack bot, the workers (and later the scheduler) in one process.

Socket Mode when SLACK_APP_TOKEN is set (no public URL needed); otherwise HTTP mode on
GATEHOUSE_HTTP_HOST:GATEHOUSE_HTTP_PORT with everything Slack sends at `/slack/events`. With no
Slack credentials at all, the local Slack sandbox (bot/sandbox/) runs beside the bot and plays
Slack: `serve_with_sandbox(settings)`.

Against a real Slack the policy is closed (pipelines/authorization.py): `serve` refuses to start
until GATEHOUSE_TRIGGERERS and GATEHOUSE_OPERATORS are written down (`"*"` is anyone, as a
decision), and an empty list of who may act means nobody. The sandbox keeps the open policy.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import SecretStr
from slack_sdk import WebClient

from bot.heap import settle_heap
from bot.http.asgi import build_asgi
from bot.http.metrics import metrics_routes
from bot.http.observed import install_observer
from bot.http.server import StopSignals, serve_forever
from bot.http.webhooks import webhook_routes
from bot.scheduler import SchedulerHandle, add_retention_job, start_scheduler
from bot.slack.alerts import SlackAlerts, check_alerts, check_drift
from bot.slack.app import build_bolt_app
from bot.slack.audit_head import schedule_audit_head
from bot.slack.bot import Bot, build_web_client
from bot.slack.directory import SlackDirectory
from bot.slack.notifier import SlackNotifier
from bot.slack.review import (
    SlackReview,
    post_weekly_review,
    resume_review,
    summarize_due_reviews,
)
from bot.slack.run_notices import SlackRunNotices
from bot.slack.socket_mode import connect_socket_mode
from bot.slack.web_client import unretried_web_client
from bot.slack.workspaces import served_workspaces
from pipelines import Clock, Gatehouse, Settings, Worker
from pipelines.config import ConfigurationError
from pipelines.operations.stats import roll_up_stats
from pipelines.outbox import OutboxSender
from pipelines.replays import ReplayGuard

if TYPE_CHECKING:
    from bot.sandbox import Sandbox

log = structlog.get_logger()


def slack_config_problems(settings: Settings) -> list[str]:
    """One line per missing or contradictory setting, each naming its variable."""
    problems = []
    bot_token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else ""
    if not bot_token:
        problems.append("SLACK_BOT_TOKEN is not set: the bot's xoxb-… token (OAuth & Permissions)")
    elif not bot_token.startswith("xoxb-"):
        problems.append("SLACK_BOT_TOKEN should be a bot token starting with xoxb-")
    if app_token and not app_token.startswith("xapp-"):
        problems.append(
            "SLACK_APP_TOKEN should be an app-level token starting with xapp- (Socket Mode)"
        )
    if not app_token and not settings.slack_signing_secret:
        problems.append(
            "SLACK_SIGNING_SECRET is not set: HTTP mode needs it to verify requests "
            "(or set SLACK_APP_TOKEN for Socket Mode)"
        )
    if not settings.approvals_channel:
        problems.append("GATEHOUSE_APPROVALS_CHANNEL is not set: where approval cards are posted")
    return problems


def policy_problems(settings: Settings) -> list[str]:
    """Against a real Slack, who may trigger and who may operate are decisions someone makes:
    unset is refused (one line each) rather than read as "anyone"."""
    command = settings.slash_command
    problems = []
    if settings.triggerers is None:
        problems.append(
            f"GATEHOUSE_TRIGGERERS is not set: who may `{command} trigger` each pipeline, JSON by "
            """pipeline or "*", e.g. '{"refund_request": ["@finance-leads"], "*": ["@ops"]}' """
            """(user ids or @groups); '{"*": ["*"]}' lets anyone in the workspace trigger any"""
            " pipeline"
        )
    if settings.operators is None:
        problems.append(
            f"GATEHOUSE_OPERATORS is not set: who may replay, undo any call, export reviewed runs "
            f'and run evals from `{command}`, JSON, e.g. \'["@ops", "U123ABC"]\'; '
            """'["*"]' lets anyone in the workspace"""
        )
    return problems


def slack_notifier(
    settings: Settings, client: WebClient, gatehouse: Callable[[], Gatehouse]
) -> SlackNotifier:
    # Its own client without slack-sdk's retry handlers: the outbox sender retries, after
    # `Retry-After`, without holding a thread in a sleep; Slack's warnings logged like the rest.
    own = unretried_web_client(client)
    return SlackNotifier(
        own,
        approvals_channel=str(settings.approvals_channel),
        runtime=lambda: gatehouse().rt,
        alerts=SlackAlerts(
            own,
            channel=settings.alerts_channel,
            runtime=lambda: gatehouse().rt,
            command=settings.slash_command,
        ),
        review=SlackReview(
            own,
            channel=settings.review_channel,
            timezone=settings.timezone,
            command=settings.slash_command,
            runtime=lambda: gatehouse().rt,
        ),
        run_notices=SlackRunNotices(
            own,
            runtime=lambda: gatehouse().rt,
            command=settings.slash_command,
            enabled=settings.tell_triggerer,
        ),
    )


def attach_outbox_sender(gatehouse: Gatehouse, settings: Settings) -> OutboxSender:
    """`gatehouse worker --outbox`: this engine's cards, and every card owed by other processes
    (the CLI's decisions included), delivered to Slack from here."""
    problems = [
        line
        for line in slack_config_problems(settings)
        if not line.startswith(("SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"))
    ]
    if problems:
        raise ConfigurationError("; ".join(problems))
    gatehouse.rt.notifier = slack_notifier(settings, build_web_client(settings), lambda: gatehouse)
    sender = OutboxSender(gatehouse.rt)
    gatehouse.rt.sender = sender
    return sender


def build_bot(settings: Settings, *, clock: Clock | None = None, production: bool = False) -> Bot:
    """The bot on these settings. `production` (what `serve` against a real Slack passes) is
    the closed policy: TRIGGERERS and OPERATORS must be set and an empty list of who may act
    means nobody; without it (the sandbox, the demo, tests, one-off tools) an empty list is
    anyone."""
    problems = slack_config_problems(settings)
    if production:
        problems += policy_problems(settings)
    if problems:
        raise ConfigurationError("; ".join(problems))
    client = build_web_client(settings)
    holder: dict[str, Gatehouse] = {}
    notifier = slack_notifier(settings, client, lambda: holder["gatehouse"])
    gatehouse = Gatehouse.from_settings(
        settings,
        notifier=notifier,
        directory=SlackDirectory(client),
        clock=clock,
        open_by_default=not production,
    )
    holder["gatehouse"] = gatehouse
    install_observer()  # /metrics' histograms and counters of what this process sees
    # Cards go through the outbox. Until `start_jobs` starts the sender's thread, a change is
    # delivered inline right after its commit (the test harness, one-off tools).
    gatehouse.rt.sender = OutboxSender(gatehouse.rt)
    served = served_workspaces(settings, client, production=production)
    if served is not None:
        log.info("serve.workspaces", served=sorted(served))
    return Bot(
        gatehouse=gatehouse,
        client=client,
        settings=settings,
        workspaces=served,
        work_limit=settings.slack_work_limit,
    )


def start_workers(bot: Bot, count: int) -> list[tuple[Worker, threading.Thread]]:
    started = []
    for number in range(count):
        worker = bot.gatehouse.worker(poll_seconds=bot.settings.worker_poll_seconds)
        thread = threading.Thread(
            target=worker.run_forever, name=f"gatehouse-worker-{number}", daemon=True
        )
        thread.start()
        started.append((worker, thread))
    return started


def serve(settings: Settings, *, sandbox: bool = False) -> None:
    """Serve a real Slack under the production policy; `sandbox=True` only from
    `serve_with_sandbox`, whose Slack is the local sandbox (the open policy)."""
    # The event loop acks Slack while worker threads run pipelines: a shorter GIL switch
    # interval (default 5 ms) keeps CPU-bound runs from holding an ack back for long.
    sys.setswitchinterval(0.001)
    with StopSignals() as stop:
        _serve(settings, stop, production=not sandbox)


def _serve(settings: Settings, stop: StopSignals, *, production: bool) -> None:
    bot = build_bot(settings, production=production)
    app = build_bolt_app(bot)
    workers = start_workers(bot, settings.serve_workers)
    scheduler = start_jobs(bot, settings)
    hooks = [
        # Against a real Slack a webhook nobody can call is worth a warning; in the sandbox and
        # the demo (which register the example pipelines for you) it is only noted.
        *webhook_routes(bot.gatehouse, settings, warn_unconfigured=production),
        *metrics_routes(bot.gatehouse, token=settings.metrics_token),
    ]
    settle_heap()  # what start-up built is not walked by the collector again (bot/heap.py)
    try:
        if settings.slack_app_token:
            connection = connect_socket_mode(app, settings.slack_app_token.get_secret_value())
            log.info(
                "serve.socket_mode",
                webhooks=f"http://{settings.http_host}:{settings.http_port}/hooks/",
            )
            try:
                # Slack comes over the socket; the HTTP server still serves webhooks, /healthz.
                serve_forever(
                    build_asgi(None, hooks, settings),
                    settings.http_host,
                    settings.http_port,
                    stop,
                    trusted_proxies=settings.trusted_proxies,
                    announce=_announcer(settings, production=production, socket_mode=True),
                )
            finally:
                connection.close()  # no new Slack work while the runs drain
        else:
            log.info(
                "serve.http", url=f"http://{settings.http_host}:{settings.http_port}/slack/events"
            )
            serve_forever(
                build_asgi(app, hooks, settings, replays=ReplayGuard(bot.gatehouse.rt, "slack")),
                settings.http_host,
                settings.http_port,
                stop,
                trusted_proxies=settings.trusted_proxies,
                announce=_announcer(settings, production=production, socket_mode=False),
            )
    finally:
        scheduler.shutdown(wait=True)
        _drain(bot, workers)


def _announcer(
    settings: Settings, *, production: bool, socket_mode: bool
) -> Callable[[], None] | None:
    """Against a real Slack, one line on stdout once the port is bound, whatever the log level
    (lifecycle logs are `info`, below the default): an operator who starts `gatehouse serve`
    sees that it is up and where. The sandbox and the demo print their own banner instead."""
    if not production:
        return None
    base = f"http://{settings.http_host}:{settings.http_port}"
    if socket_mode:
        line = f"Gatehouse is serving Slack over Socket Mode; webhooks at {base}/hooks/"
    else:
        line = f"Gatehouse is serving Slack in HTTP mode at {base}/slack/events"
    line += f", health at {base}/healthz. Ctrl-C stops it (running runs finish or suspend first)."
    return lambda: print(line, flush=True)


def start_jobs(bot: Bot, settings: Settings) -> SchedulerHandle:
    """Pipeline schedules, plus the bot's own jobs: the alert check and the stats roll-up every
    minute, the drift check hourly (one replica a fire: it reads 35 days) and, with a review
    channel, the weekly review (one replica posts each:
    `claim=True`) and its summaries."""
    handle = start_scheduler(bot.gatehouse, settings)
    outbox_sender(bot).start()
    handle.add_system_job("alerts", "1m", lambda _fire_time: check_alerts(bot))
    handle.add_system_job("drift", "1h", lambda _fire_time: check_drift(bot), claim=True)
    # Every replica may roll: each hour's roll-up is claimed in the database.
    handle.add_system_job("stats-rollup", "1m", lambda _fire_time: roll_up_stats(bot.gatehouse.rt))
    if settings.review_channel:
        handle.add_system_job(
            "review",
            settings.review_cron,
            lambda fire_time: post_weekly_review(bot, fire_time),
            claim=True,
        )
        handle.add_system_job(
            "review-summaries", "1h", lambda fire_time: summarize_due_reviews(bot, fire_time)
        )
        bot.submit(resume_review, bot)  # finishes a post a crash interrupted; never starts one
    schedule_audit_head(bot, handle)  # daily to the alerts channel, and once now
    add_retention_job(handle)  # GATEHOUSE_RETENTION_DAYS: daily, one replica
    return handle


def outbox_sender(bot: Bot) -> OutboxSender:
    sender = bot.gatehouse.rt.sender
    assert isinstance(sender, OutboxSender), "build_bot attaches the outbox sender"
    return sender


def _drain(bot: Bot, workers: list[tuple[Worker, Any]]) -> None:
    """Stop claiming, let running runs finish or suspend, finish acknowledged Slack work."""
    for worker, _thread in workers:
        worker.stop()
    for _worker, thread in workers:
        thread.join(timeout=60)
    bot.shutdown()
    # Last: the sender ran while the runs finished or suspended, so their cards went out;
    # whatever Slack did not take stays in the outbox for the next process.
    outbox_sender(bot).stop()
    log.info("serve.stopped")


def wants_sandbox(settings: Settings) -> bool:
    """No Slack token at all: `gatehouse serve` plays Slack itself with the local sandbox."""
    return not settings.slack_bot_token and not settings.slack_app_token


def serve_with_sandbox(
    settings: Settings,
    *,
    on_ready: Callable[[Sandbox], None] | None = None,
    socket_mode: bool = False,
) -> None:
    """`gatehouse serve` with the local Slack sandbox beside the bot, in this process: the
    sandbox on GATEHOUSE_SANDBOX_HOST:GATEHOUSE_SANDBOX_PORT with a generated token (and signing
    secret unless SLACK_SIGNING_SECRET is set) that the bot shares, the bot's WebClient pointed
    at it, its channels created. Prints `Gatehouse sandbox: URL`, calls `on_ready(sandbox)`,
    then serves until SIGINT/SIGTERM like `serve`. With `socket_mode` the bot connects to the
    sandbox in Socket Mode (its app token) instead of taking requests at `/slack/events`."""
    from bot.sandbox import Sandbox, reachable_host
    from bot.sandbox.workspace import channels_for

    secret = settings.slack_signing_secret
    bot_host = reachable_host(settings.http_host)
    sandbox = Sandbox(
        bot_events_url=f"http://{bot_host}:{settings.http_port}/slack/events",
        signing_secret=secret.get_secret_value() if secret else None,
        host=settings.sandbox_host,
        port=settings.sandbox_port,
        channels=channels_for(
            settings.approvals_channel, settings.review_channel, settings.alerts_channel
        ),
        command=settings.slash_command,
        socket_mode=socket_mode,
    )
    try:
        sandbox.start()
    except OSError as exc:
        raise ConfigurationError(
            f"GATEHOUSE_SANDBOX_PORT: the sandbox cannot listen on {settings.sandbox_host}:"
            f"{settings.sandbox_port} ({exc.strerror or exc}); choose a free port"
        ) from exc
    try:
        log.info(
            "sandbox.started",
            url=sandbox.url,
            bot=f"http://{bot_host}:{settings.http_port}",
            mode="socket" if socket_mode else "http",
        )
        print(f"Gatehouse sandbox: {sandbox.url}", flush=True)
        if on_ready is not None:
            on_ready(sandbox)
        serve(sandbox_settings(settings, sandbox), sandbox=True)
    finally:
        sandbox.stop()


def sandbox_settings(settings: Settings, sandbox: Sandbox) -> Settings:
    """`settings` pointed at the sandbox (its token, signing secret and Web API; its app token
    when it runs Socket Mode), with its channels for whichever of approvals, review and alerts
    are unset."""
    app_token = sandbox.app_token
    return settings.model_copy(
        update={
            "slack_bot_token": SecretStr(sandbox.token),
            "slack_app_token": SecretStr(app_token) if app_token else None,
            "slack_signing_secret": SecretStr(sandbox.signing_secret),
            "slack_api_url": sandbox.api_url,
            "approvals_channel": settings.approvals_channel or "C_APPROVALS",
            "review_channel": settings.review_channel or "C_REVIEW",
            "alerts_channel": settings.alerts_channel or "C_ALERTS",
            # The sandbox is a workspace of its own, served like a real one.
            "slack_team_ids": (
                settings.slack_team_ids
                if settings.slack_team_ids is not None
                else [sandbox.api.team_id]
            ),
        }
    )
