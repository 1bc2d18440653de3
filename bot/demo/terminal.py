"""`python -m bot.demo --terminal`: the product in the terminal, on a fresh SQLite database
(.demo/terminal.db).

It runs the real `gatehouse` commands in this process, one after another, as a user would type
them: a small refund goes straight through, a large one waits for a finance lead, the person who
asked is refused (four-eyes), another lead approves, the run is inspected and the refund undone.
Non-interactive; finishes in a few seconds.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from bot.cli import main as cli
from pipelines import Gatehouse
from pipelines.pipeline import CATALOG

DEMO_DB = Path(".demo/terminal.db")
GROUPS = '{"finance-leads": ["alice", "bob"]}'


def section(number: int, title: str) -> None:
    print(f"\n=== {number}. {title} ".ljust(100, "="), flush=True)


def gatehouse(*args: str, expect: int = 0) -> None:
    """Run one `gatehouse` command in-process, echoing it like a shell would."""
    print(f"$ gatehouse {shlex.join(args)}", flush=True)
    try:
        cli.main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    if code != expect:
        raise SystemExit(f"demo: `gatehouse {args[0]}` exited {code}, expected {expect}")


def fresh_database() -> str:
    DEMO_DB.parent.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DEMO_DB}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{DEMO_DB.resolve()}"


def pending_approval_id() -> str:
    engine = Gatehouse.from_settings()
    try:
        return engine.pending()[0].id
    finally:
        engine.db.dispose()


def open_task_id() -> str | None:
    """The ticket's human task, if the LLM step took the human exit (no model configured)."""
    engine = Gatehouse.from_settings()
    try:
        return next((item.id for item in engine.pending() if item.id.startswith("task_")), None)
    finally:
        engine.db.dispose()


def newest_run_and_refund_call() -> tuple[str, str]:
    engine = Gatehouse.from_settings()
    try:
        run = engine.run(engine.runs(limit=1)[0].id)
    finally:
        engine.db.dispose()
    call = next(c for c in run.calls if c.name == "issue_refund")
    return run.id, call.id


def main() -> None:
    os.environ["GATEHOUSE_DATABASE_URL"] = fresh_database()
    os.environ["GATEHOUSE_GROUPS"] = GROUPS
    os.environ["GATEHOUSE_PIPELINES"] = CATALOG  # the example pipelines
    os.environ.pop("GATEHOUSE_USER", None)
    print(f"Gatehouse demo — a fresh database at {DEMO_DB}; alice and bob are @finance-leads")

    section(1, "Create the database")
    gatehouse("db", "upgrade")

    section(2, "The registered pipelines")
    gatehouse("pipelines")

    section(3, "carol asks for a 12.50 refund: under 100.00, it runs straight through")
    small = '{"order_id": "ord_1001", "amount": "12.50", "reason": "arrived scratched"}'
    gatehouse("trigger", "refund_request", "--input", small, "--as", "carol")

    section(4, "alice asks for a 150.00 refund: over 100.00, it waits for a finance lead")
    large = '{"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}'
    gatehouse("trigger", "refund_request", "--input", large, "--as", "alice")

    section(5, "What waits for a person")
    gatehouse("pending")
    approval = pending_approval_id()

    section(6, "alice tries to approve her own refund: four-eyes refuses (exit 1)")
    gatehouse("approve", approval, "--as", "alice", expect=1)

    section(7, "bob approves; the run carries on here and finishes")
    gatehouse("approve", approval, "--as", "bob", "--reason", "tracking shows it was lost")
    run_id, refund_call = newest_run_and_refund_call()

    section(8, "The finished run: every call, the approval, its transitions and audit trail")
    gatehouse("run", run_id)

    section(9, "Replay it with today's code: recorded results are reused, nothing runs")
    gatehouse("replay", run_id)

    section(10, "bob undoes the refund; the reversal is its own audited call")
    gatehouse("undo", refund_call, "--as", "bob")
    gatehouse("run", run_id)

    section(11, "A support ticket with an LLM step: with no model configured, a person answers")
    ticket = json.dumps(
        {
            "ticket_id": "T-1042",
            "customer_email": "ada@example.com",
            "subject": "Scratched lid",
            "body": "Order ord_1001 arrived scratched. Could I get 5.00 back?",
        }
    )
    gatehouse("trigger", "ticket_triage", "--input", ticket, "--as", "carol")
    task = open_task_id()
    if task is not None:
        gatehouse("pending")
        label = '{"kind": "refund", "confidence": 1, "order_id": "ord_1001", "amount": "5.00"}'
        gatehouse("answer", task, "--as", "olga", "--answer", label)

    section(12, "All runs")
    gatehouse("runs")
    print(
        "\nDone. Look around yourself: "
        f"GATEHOUSE_DATABASE_URL=sqlite:///{DEMO_DB} GATEHOUSE_PIPELINES={CATALOG} "
        ".venv/bin/gatehouse --help"
    )


if __name__ == "__main__":
    main()
