"""A process entry point for the quorum tests: cast one decision on an approval, released
together with other processes (`--ready FILE --go FILE`, as tests/proc_driver.py does).

    python -m tests.quorum_driver approve APPROVAL_ID --user U
    python -m tests.quorum_driver reject APPROVAL_ID --user U --reason WHY

Prints one JSON object: the approval's status and progress after the decision, or
`{"error": ClassName, ...}` with exit status 3 for a GatehouseError (AlreadyVoted,
AlreadyDecided)."""

from __future__ import annotations

import argparse
import sys

import tests.quorum_pipelines  # noqa: F401  (registers q_payout and q_pay)
from pipelines import Gatehouse, GatehouseError
from pipelines.logs import configure_logging
from tests.proc_driver import EXIT_GATEHOUSE_ERROR, emit, wait_for_go, warm_up


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m tests.quorum_driver")
    top.add_argument("decision", choices=["approve", "reject"])
    top.add_argument("approval_id")
    top.add_argument("--user", required=True)
    top.add_argument("--reason", default="no")
    top.add_argument("--ready")
    top.add_argument("--go")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging("console", "warning")
    gh = Gatehouse.from_settings(upgrade=False)
    warm_up(gh)
    wait_for_go(args.ready, args.go)
    try:
        if args.decision == "approve":
            view = gh.approve(args.approval_id, user=args.user)
        else:
            view = gh.reject(args.approval_id, user=args.user, reason=args.reason)
    except GatehouseError as exc:
        emit({"error": type(exc).__name__, "message": str(exc)})
        return EXIT_GATEHOUSE_ERROR
    finally:
        gh.db.dispose()
    q = view.quorum
    emit({"status": view.status, "approved": q.approved if q else None})
    return 0


if __name__ == "__main__":
    sys.exit(main())
