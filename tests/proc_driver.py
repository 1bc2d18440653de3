"""A small process entry point for the multi-process tests, on the public library API only.

    python -m tests.proc_driver trigger NAME JSON [--user U] [--queue] [--count N]
    python -m tests.proc_driver approve APPROVAL_ID --user U [--no-run]
    python -m tests.proc_driver worker [--until-idle]

The engine comes from the environment (`Gatehouse.from_settings()`: GATEHOUSE_DATABASE_URL,
GATEHOUSE_PIPELINES, GATEHOUSE_GROUPS). Every command prints one JSON object per line. With
`--ready FILE --go FILE` the process builds the engine, creates FILE `--ready`, and waits for
`--go` to appear before acting, so that a test can release several processes together.
A GatehouseError prints `{"error": ClassName, "message": ...}` and exits 3.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import tests.proc_pipelines  # noqa: F401  (registers the p_ pipelines and tools)
from pipelines import Gatehouse, GatehouseError, Run
from pipelines.logs import configure_logging

GO_TIMEOUT_SECONDS = 30.0
EXIT_GATEHOUSE_ERROR = 3
EXIT_NO_GO = 98


def emit(obj: Any) -> None:
    print(json.dumps(obj, default=str), flush=True)


def run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": str(run.status),
        "error": run.error,
        "waiting_for": run.waiting_for,
        "output": run.output,
    }


def wait_for_go(ready: str | None, go: str | None) -> None:
    if ready:
        Path(ready).write_text("ready")
    if not go:
        return
    deadline = time.monotonic() + GO_TIMEOUT_SECONDS
    while not Path(go).exists():
        if time.monotonic() > deadline:
            emit({"error": "NoGo", "message": f"{go} did not appear"})
            sys.exit(EXIT_NO_GO)
        time.sleep(0.002)


def warm_up(gh: Gatehouse) -> None:
    """Open a pooled connection before `ready`, so the released processes race on work only."""
    with gh.db.transaction():
        pass


def cmd_trigger(gh: Gatehouse, args: argparse.Namespace) -> None:
    payload = json.loads(args.input)
    for _ in range(args.count):
        run = gh.trigger(args.name, payload, user=args.user, run_here=not args.queue)
        emit(run_summary(run))


def cmd_approve(gh: Gatehouse, args: argparse.Namespace) -> None:
    approval = gh.approve(args.approval_id, user=args.user)
    result: dict[str, Any] = {"approval": approval.id, "status": str(approval.status)}
    if not args.no_run:
        resumed = gh.resume(approval.run_id)
        result["run"] = run_summary(resumed) if resumed is not None else None
    emit(result)


def cmd_worker(gh: Gatehouse, args: argparse.Namespace) -> None:
    worker = gh.worker(poll_seconds=0.05)
    if args.until_idle:
        executed = worker.run_until_idle()
    else:
        signal.signal(signal.SIGTERM, lambda *_: worker.stop())
        worker.run_forever()
        executed = worker.executed
    emit({"worker": gh.rt.worker_id, "executed": executed, "claims": worker.claims})


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m tests.proc_driver")
    commands = top.add_subparsers(dest="command", required=True)

    trigger = commands.add_parser("trigger")
    trigger.add_argument("name")
    trigger.add_argument("input")
    trigger.add_argument("--user")
    trigger.add_argument("--queue", action="store_true", help="queue it for a worker")
    trigger.add_argument("--count", type=int, default=1)

    approve = commands.add_parser("approve")
    approve.add_argument("approval_id")
    approve.add_argument("--user", required=True)
    approve.add_argument("--no-run", action="store_true")

    worker = commands.add_parser("worker")
    worker.add_argument("--until-idle", action="store_true")

    for sub in (trigger, approve, worker):
        sub.add_argument("--ready")
        sub.add_argument("--go")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging("console", "warning")  # logs go to stderr; stdout carries the JSON
    gh = Gatehouse.from_settings(upgrade=False)
    warm_up(gh)
    wait_for_go(args.ready, args.go)
    handlers = {"trigger": cmd_trigger, "approve": cmd_approve, "worker": cmd_worker}
    try:
        handlers[args.command](gh, args)
    except GatehouseError as exc:
        emit({"error": type(exc).__name__, "message": str(exc)})
        return EXIT_GATEHOUSE_ERROR
    finally:
        gh.db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
