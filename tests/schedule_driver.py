"""A process entry point for the multi-process schedule tests.

    python -m tests.schedule_driver fire PAIRS_JSON --ready FILE --go FILE

PAIRS_JSON is a list of `[schedule, fire_time_iso]`. The process builds its engine from the
environment (GATEHOUSE_DATABASE_URL, GATEHOUSE_PIPELINES), creates `--ready`, waits for `--go`,
then fires each pair in order with its clock set just after that fire time (a scheduler firing
on time), and prints one JSON line per fire: `{"schedule", "fire_time", "outcome", "run_id",
"worker"}`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta

import tests.schedule_pipelines  # noqa: F401  (registers the s_ pipelines)
from pipelines import Gatehouse
from pipelines.config import load_settings
from pipelines.logs import configure_logging
from pipelines.operations.schedules import ScheduleOptions, fire
from tests.fakes.clock import FakeClock
from tests.proc_driver import emit, wait_for_go, warm_up

ON_TIME = timedelta(milliseconds=200)


def main(argv: list[str] | None = None) -> int:
    top = argparse.ArgumentParser(prog="python -m tests.schedule_driver")
    commands = top.add_subparsers(dest="command", required=True)
    fire_parser = commands.add_parser("fire")
    fire_parser.add_argument("pairs")
    fire_parser.add_argument("--ready")
    fire_parser.add_argument("--go")
    args = top.parse_args(argv)

    configure_logging("console", "warning")
    pairs = [(name, datetime.fromisoformat(at)) for name, at in json.loads(args.pairs)]
    clock = FakeClock(pairs[0][1])
    settings = load_settings()
    gh = Gatehouse.from_settings(settings, clock=clock, upgrade=False)
    options = ScheduleOptions.from_settings(settings)
    warm_up(gh)
    wait_for_go(args.ready, args.go)
    try:
        for name, fire_time in pairs:
            clock.advance(fire_time + ON_TIME - clock.now())
            emit({**fire(gh.rt, name, fire_time, options).to_json(), "worker": gh.rt.worker_id})
    finally:
        gh.db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
