"""`gatehouse`, the command line: trigger and inspect runs, decide approvals, run a worker.

Every command builds its own engine from the environment (`GATEHOUSE_*`), so nothing is cached
between invocations. Errors a user can act on print one line, `error: <message>`, on stderr and
exit 1 (2 for a malformed command line); `--json` prints JSON only on stdout.

A start costs only what the command uses (`gatehouse --help` imports typer and these modules,
nothing else; tests/test_cli_startup.py checks it). To add a command, here or in its own
module mounted by `_mount_subcommands`:

- At module level import only the standard library, typer and `bot.cli.session` (which is
  light itself). The engine (`pipelines`), `storage`, SQLAlchemy, Slack, the renderers and
  `bot.formatting` are imported inside the command's function, first thing:

      @app.command("prune")
      def prune_command(older: Annotated[str, typer.Option(...)], as_json: JsonFlag = False):
          # (its docstring: the help line `gatehouse --help` shows)
          from pipelines.retention import prune  # here, not at the top of the module

          with open_gatehouse(quiet=as_json) as gatehouse:
              ...

- Types for annotations of helpers go under `if TYPE_CHECKING:`. A command's own parameters
  use only str/int/float/bool/Path/Annotated (typer evaluates those annotations to build the
  help); a default taken from a heavy module is spelled here instead, with a test keeping the
  two equal (see `bot.cli.sandbox`).
- `open_gatehouse(read_only=True)` for a command that only reads: it checks the schema
  revision (storage.schema_version) instead of running Alembic and fails naming `gatehouse db
  upgrade` when the database is behind. Commands that write keep the default, which migrates.
- Positional arguments show as `NAME` in usage lines by themselves (session.NamedArgument).
"""

from __future__ import annotations

import copy
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.cli import alerts as cli_alerts
from bot.cli import audit as cli_audit
from bot.cli import edits as cli_edits
from bot.cli import eval as cli_eval
from bot.cli import new as cli_new
from bot.cli import pauses as cli_pauses
from bot.cli import prune as cli_prune
from bot.cli import ready as cli_ready
from bot.cli import review as cli_review
from bot.cli import run_ops as cli_run_ops
from bot.cli import sandbox as cli_sandbox
from bot.cli import schedules as cli_schedules
from bot.cli import stats as cli_stats
from bot.cli.session import (
    CliError,
    GatehouseGroup,
    JsonFlag,
    fail,
    open_database,
    open_gatehouse,
    parse_json_option,
    parse_since,
    parse_status,
    print_json,
    safe_url,
    say,
    settings_for_cli,
    show_help_without_a_command,
    without_cycle_collection,
)

if TYPE_CHECKING:
    from typer.models import CommandInfo

    from pipelines import Gatehouse, Run, Worker

app = typer.Typer(
    cls=GatehouseGroup,
    name="gatehouse",
    help="Gatehouse: durable pipelines with gated tools, approvals and an audit trail.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="The database: create and migrate it.")
app.add_typer(db_app, name="db")


app.callback(invoke_without_command=True)(show_help_without_a_command)
db_app.callback(invoke_without_command=True)(show_help_without_a_command)


NoRunFlag = Annotated[
    bool, typer.Option("--no-run", help="Only decide; leave the run queued for a worker.")
]
RequiredUser = Annotated[str, typer.Option("--as", help="Who acts (a user id).")]


# -- plumbing ----------------------------------------------------------------------------------


def carry_on(gatehouse: Gatehouse, run_id: str, *, here: bool) -> tuple[Run, str | None]:
    """After a decision or answer: execute the queued run here (unless --no-run)."""
    note = None
    if here and gatehouse.resume(run_id) is None:
        note = f"another worker took run {run_id} on; `gatehouse run {run_id}` shows how it ends"
    return gatehouse.run(run_id), note


def report_outcome(
    label: str, decided: dict[str, Any], run: Run, note: str | None, as_json: bool
) -> None:
    from bot.cli import render as cli_render

    if as_json:
        print_json({label: decided, "run": run.to_json()})
        return
    say(cli_render.run_summary(run))
    if note:
        typer.echo(f"  note: {note}")


# -- commands ----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the database or migrate it to the latest schema (safe to repeat)."""
    from storage.db import Database

    settings = settings_for_cli()
    database = Database(settings.database_url)
    try:
        database.upgrade()
        revision = database.current_revision()
    finally:
        database.dispose()
    typer.echo(f"database {safe_url(settings.database_url)} is at revision {revision} (latest)")


@app.command("pipelines")
def list_pipelines(as_json: JsonFlag = False) -> None:
    """List the registered pipelines: description, input fields and triggers."""
    from bot.cli import render as cli_render
    from pipelines import discover
    from pipelines.pipeline import CATALOG

    settings = settings_for_cli()
    found = discover(settings.pipeline_modules)
    paused = cli_pauses.paused_or_none(settings)
    if as_json:
        print_json(
            [
                cli_render.pipeline_json(p)
                | {"paused": paused[p.name].to_json() if p.name in paused else None}
                for p in found.values()
            ]
        )
        return
    if not found:
        typer.echo(
            "no pipelines registered: GATEHOUSE_PIPELINES names the modules that define them "
            f"(comma-separated; {CATALOG} for the examples)"
        )
    for index, pipeline in enumerate(found.values()):
        if index:
            typer.echo("")
        lines = cli_render.pipeline_lines(pipeline)
        if pipeline.name in paused:
            lines.insert(1, cli_pauses.paused_line(paused[pipeline.name]))
        say(lines)


@app.command()
def trigger(
    name: Annotated[str, typer.Argument(help="The pipeline's name (`gatehouse pipelines`).")],
    input_text: Annotated[
        str, typer.Option("--input", "-i", help="The input as JSON, or @file.json.")
    ] = "{}",
    as_user: Annotated[
        str | None,
        typer.Option(
            "--as",
            envvar="GATEHOUSE_USER",
            help="Who triggers the run (default: $GATEHOUSE_USER, then $USER).",
        ),
    ] = None,
    queue: Annotated[
        bool, typer.Option("--queue", help="Only enqueue it; a worker runs it.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a run and execute it here until it finishes or waits for a person."""
    from bot.cli import render as cli_render
    from storage.models import RunStatus

    payload = parse_json_option("--input", input_text)
    user = as_user or os.environ.get("USER") or None
    with open_gatehouse(quiet=as_json) as gatehouse:
        started = gatehouse.trigger(name, payload, user=user, source="cli", run_here=not queue)
        run = gatehouse.run(started.id)
    if as_json:
        print_json(run.to_json())
    elif run.status != RunStatus.INVALID_INPUT:
        say(cli_render.run_summary(run))
    if run.status == RunStatus.INVALID_INPUT:
        fail(f"{run.error} (recorded as run {run.id})")


@app.command()
def serve() -> None:
    """Start the Slack bot with its workers: Socket Mode with SLACK_APP_TOKEN, else HTTP mode
    on GATEHOUSE_HTTP_HOST:GATEHOUSE_HTTP_PORT at /slack/events; with no SLACK_BOT_TOKEN, the
    local Slack sandbox beside it (its URL is printed). Against a real Slack,
    GATEHOUSE_TRIGGERERS and GATEHOUSE_OPERATORS must be set ("*" for anyone). Ctrl-C drains
    and stops."""
    from bot.serve import policy_problems, serve_with_sandbox, slack_config_problems, wants_sandbox
    from bot.serve import serve as run_bot

    settings = settings_for_cli(worker=True)
    if wants_sandbox(settings):
        serve_with_sandbox(settings)
        return
    problems = slack_config_problems(settings) + policy_problems(settings)
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)
    run_bot(settings)


@app.command()
def worker(
    once: Annotated[
        bool, typer.Option("--once", help="Run what is ready, then exit instead of polling.")
    ] = False,
    poll: Annotated[
        float | None,
        typer.Option(
            "--poll",
            min=0.01,
            help="Seconds between polls when idle (GATEHOUSE_WORKER_POLL_SECONDS).",
        ),
    ] = None,
    scheduler: Annotated[
        bool,
        typer.Option(
            "--scheduler", help="Also fire the pipelines' cron/every schedules from this process."
        ),
    ] = False,
    outbox: Annotated[
        bool,
        typer.Option(
            "--outbox",
            help="Also deliver the Slack cards owed in the outbox (SLACK_BOT_TOKEN, "
            "GATEHOUSE_APPROVALS_CHANNEL); `gatehouse serve` does this already.",
        ),
    ] = False,
) -> None:
    """Execute queued runs (and expire approvals, wake timers) until Ctrl-C or SIGTERM."""
    from bot.http.observed import install_observer
    from bot.scheduler import start_scheduler
    from bot.serve import attach_outbox_sender
    from pipelines.config import ConfigurationError

    install_observer()  # its observations reach /metrics through PROMETHEUS_MULTIPROC_DIR
    settings = settings_for_cli(worker=True)
    with open_gatehouse(quiet=False, settings=settings) as gatehouse:
        runner = gatehouse.worker(poll_seconds=poll or settings.worker_poll_seconds)
        try:
            sender = attach_outbox_sender(gatehouse, settings) if outbox else None
        except ConfigurationError as exc:
            raise CliError(f"--outbox: {exc}") from None
        restore = install_stop_handlers(runner)
        schedules = start_scheduler(gatehouse, settings) if scheduler and not once else None
        if sender is not None and not once:
            sender.start()
        try:
            if once:
                count = runner.run_until_idle()
                if sender is not None:
                    sender.deliver_due()
                typer.echo(f"worker --once: executed {count} run(s); nothing else is ready")
                return
            typer.echo(
                f"worker {gatehouse.rt.worker_id} on {safe_url(settings.database_url)}: "
                f"polling every {runner.poll_seconds:g}s; Ctrl-C stops after the current run"
            )
            runner.run_forever()
            typer.echo(f"worker stopped after {runner.executed} run(s)")
        finally:
            if schedules is not None:
                schedules.shutdown(wait=True)
            if sender is not None:
                sender.stop()  # undelivered cards wait in the outbox for the next sender
            restore()


def install_stop_handlers(runner: Worker) -> Callable[[], None]:
    """SIGINT/SIGTERM ask the worker to stop once the current run is done; they never raise
    KeyboardInterrupt mid-run. Returns a function that puts the previous handlers back."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        # os.write: a handler must not re-enter a buffered stream the main thread may be using
        if runner.stopping:
            os.write(2, f"{name} again: still finishing the current run\n".encode())
            return
        os.write(2, f"{name}: stopping after the current run\n".encode())
        runner.stop()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


@app.command()
def runs(
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only this pipeline.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only runs in this state (e.g. waiting).")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Created within this long (24h, 7d) or since.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List recent runs, newest first."""
    with without_cycle_collection():
        filters: dict[str, Any] = {"pipeline": pipeline, "limit": limit}
        filters["status"] = parse_status(status) if status is not None else None
        filters["since"] = parse_since(since) if since is not None else None
        if as_json:  # every run whole, through the engine's views
            with open_gatehouse(quiet=True, read_only=True) as gatehouse:
                print_json([gatehouse.run(r.id).to_json() for r in gatehouse.runs(**filters)])
            return
        # The table needs a few columns of `runs` and nothing of the engine: read in Core
        # alone, so that the command starts in a fraction of the engine's import time.
        from bot.cli.tables import runs_table
        from storage.run_list import list_runs

        with open_database() as database, database.transaction() as conn:
            found = list_runs(conn, **filters)
        say(runs_table(found))


@app.command("run")
def show_run(
    run_id: Annotated[str, typer.Argument(help="A run id (`gatehouse runs`).")],
    as_json: JsonFlag = False,
) -> None:
    """Everything recorded about one run: calls, approvals, transitions, audit trail."""
    with without_cycle_collection():
        from bot.cli import render as cli_render
        from pipelines.inspect import run_history
        from pipelines.run_totals import run_totals, totals_line

        with open_gatehouse(quiet=as_json, read_only=True) as gatehouse:
            run = gatehouse.run(run_id)
            history = run_history(gatehouse.rt, run_id)
        totals = run_totals(run)  # tokens and cost, summed from the run's LLM calls
        if as_json:
            print_json({**run.to_json(), "totals": totals.to_json()})
        else:
            say(cli_render.run_detail(run, history))
            say(["", f"totals: {totals_line(totals)}"])


@app.command()
def pending(as_json: JsonFlag = False) -> None:
    """Approvals and human tasks waiting for a person, oldest first."""
    with without_cycle_collection():
        from bot.cli import render as cli_render

        with open_gatehouse(quiet=as_json, read_only=True) as gatehouse:
            items = gatehouse.pending()
        if as_json:
            print_json([item.to_json() for item in items])
        else:
            say(cli_render.pending_lines(items))


@app.command()
def approve(
    approval_id: Annotated[str, typer.Argument(help="An approval id (`gatehouse pending`).")],
    as_user: RequiredUser,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (optional).")] = None,
    edited_args: Annotated[
        str | None,
        typer.Option(
            "--args",
            help="Approve with edits: the changed arguments as JSON or @file (only the "
            "tool's editable fields; validated by its argument model).",
        ),
    ] = None,
    no_run: NoRunFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Approve a gated action (with `--args`, as edited), then carry the run on here. An
    approval that needs several people counts this as one vote and says how many remain; the
    run waits for them."""
    from pipelines import quorum

    edits = cli_edits.parse_edit_args(edited_args) if edited_args is not None else None
    with open_gatehouse(quiet=as_json) as gatehouse:
        decided = gatehouse.approve(approval_id, user=as_user, reason=reason, args=edits)
        counted = decided.quorum is not None and decided.status == "pending"
        run, note = carry_on(gatehouse, decided.run_id, here=not no_run and not counted)
    if counted and decided.quorum is not None and not as_json:
        typer.echo(
            f"approval {decided.id}: {as_user}'s approval counted, "
            f"{quorum.progress(decided.quorum)}"
        )
    report_outcome("approval", decided.to_json(), run, note, as_json)


@app.command()
def reject(
    approval_id: Annotated[str, typer.Argument(help="An approval id (`gatehouse pending`).")],
    as_user: RequiredUser,
    reason: Annotated[str, typer.Option("--reason", help="Why (required).")],
    no_run: NoRunFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Reject a gated action, then carry the run on here (it ends rejected unless it reroutes)."""
    with open_gatehouse(quiet=as_json) as gatehouse:
        decided = gatehouse.reject(approval_id, user=as_user, reason=reason)
        run, note = carry_on(gatehouse, decided.run_id, here=not no_run)
    report_outcome("approval", decided.to_json(), run, note, as_json)


@app.command()
def answer(
    task_id: Annotated[str, typer.Argument(help="A human task id (`gatehouse pending`).")],
    as_user: RequiredUser,
    answer_text: Annotated[
        str, typer.Option("--answer", help="The answer as JSON, or @file.json.")
    ],
    no_run: NoRunFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Answer a human task, then carry the run on here."""
    payload = parse_json_option("--answer", answer_text)
    with open_gatehouse(quiet=as_json) as gatehouse:
        answered = gatehouse.answer(task_id, user=as_user, answer=payload)
        run, note = carry_on(gatehouse, answered.run_id, here=not no_run)
    report_outcome("task", answered.to_json(), run, note, as_json)


@app.command()
def undo(
    call_id: Annotated[str, typer.Argument(help="A tool call id (`gatehouse run RUN_ID`).")],
    as_user: RequiredUser,
    as_json: JsonFlag = False,
) -> None:
    """Reverse a tool call with the tool's declared reverse; recorded as its own audited call."""
    from bot.formatting import took

    with open_gatehouse(quiet=as_json) as gatehouse:
        reversal = gatehouse.undo(call_id, user=as_user)
    if as_json:
        print_json(reversal.to_json())
        return
    typer.echo(
        f"↶ undid call {call_id} ({reversal.name}): reversal call {reversal.id} "
        f"{reversal.status} in {took(reversal.started_at, reversal.finished_at)}"
    )


@app.command()
def replay(
    run_id: Annotated[
        str | None, typer.Argument(help="A run id (`gatehouse runs`); or --since for many.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Replay the runs finished in this window (7d, 24h, an ISO time) and every "
            "waiting run.",
        ),
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", help="Only this pipeline's runs (with --since).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=0, help="At most N finished runs, newest first (--since)."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Exit 1 when today's code does not reproduce a run (CI)."),
    ] = False,
    junit: Annotated[
        str | None,
        typer.Option("--junit", help="Also write JUnit XML to this file, a testcase per run."),
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Ask the model again and show where each LLM answer differs from the record.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-execute runs with today's code and no side effects; show where they diverge."""
    from bot.cli import replay_check

    replay_check.replay(
        run_id,
        since=since,
        pipeline=pipeline,
        limit=limit,
        check=check,
        junit=junit,
        fresh=fresh,
        as_json=as_json,
    )


def _mount_subcommands() -> None:
    """Command groups that live in their own modules."""
    app.add_typer(cli_audit.app, name="audit")
    app.add_typer(cli_alerts.app, name="alerts")
    app.add_typer(cli_stats.app, name="stats")
    app.add_typer(cli_review.app, name="review")
    app.add_typer(cli_schedules.app, name="schedules")
    app.add_typer(cli_new.app, name="new")
    app.command("sandbox")(cli_sandbox.sandbox)
    app.command("eval")(cli_eval.eval_command)
    app.command("evals")(cli_eval.evals_command)
    app.command("ready")(cli_ready.ready_command)
    app.command("pause")(cli_pauses.pause_command)
    app.command("resume")(cli_pauses.resume_command)
    app.command("cancel")(cli_run_ops.cancel_command)
    app.command("retry")(cli_run_ops.retry_command)
    app.command("resolve")(cli_run_ops.resolve_command)
    app.command("prune")(cli_prune.prune_command)


_mount_subcommands()


def app_for(args: Sequence[str]) -> typer.Typer:
    """The app to run `gatehouse ARGS` with: `app` with only the command or group ARGS names
    when it names one (typer builds every command's parameters from its signature before
    parsing: ~25 ms of a start that one command does not need), else the whole of `app` (no
    command, an option first, a misspelled name: the whole tree's help or suggestions)."""
    from typer.main import get_command_name

    def named(command: CommandInfo) -> str:
        return command.name or get_command_name(getattr(command.callback, "__name__", ""))

    name = args[0] if args else None
    commands = [c for c in app.registered_commands if named(c) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if name is None or len(commands) + len(groups) != 1:
        return app
    only = copy.copy(app)
    only.registered_commands, only.registered_groups = commands, groups
    return only


def main(argv: Sequence[str] | None = None) -> None:
    """The console script `gatehouse` (and `python -m bot.cli`)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    app_for(args)(args=args, prog_name="gatehouse")


if __name__ == "__main__":
    main()
