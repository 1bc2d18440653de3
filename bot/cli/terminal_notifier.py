"""The terminal's `Notifier`: one line per approval or human task event, for the CLI and worker.

The Slack bot will post cards for the same events; in a terminal we print what happened and
the exact command that moves the run on.
"""

from __future__ import annotations

import typer

from bot.cli import render as cli_render
from pipelines import ApprovalView, TaskView
from pipelines.operations.alerting import AlertView
from pipelines.operations.review import ReviewItemView, ReviewWeekView


class TerminalNotifier:
    """Prints engine events; `err=True` sends them to stderr so `--json` stdout stays clean."""

    def __init__(self, *, err: bool = False) -> None:
        self.err = err

    def _say(self, line: str) -> None:
        typer.echo(line, err=self.err)

    def approval_requested(self, approval: ApprovalView) -> None:
        self._say(cli_render.approval_requested_line(approval))

    def approval_decided(self, approval: ApprovalView) -> None:
        self._say(cli_render.approval_decided_line(approval))

    def task_opened(self, task: TaskView) -> None:
        self._say(cli_render.task_opened_line(task))

    def task_answered(self, task: TaskView) -> None:
        self._say(cli_render.task_answered_line(task))

    def alert_opened(self, alert: AlertView) -> None:
        return None  # `gatehouse alerts check` prints its own changes

    def alert_recovered(self, alert: AlertView) -> None:
        return None

    def review_thread(self, week: ReviewWeekView) -> None:
        return None  # `gatehouse review post` prints the week it posted

    def review_summary(self, week: ReviewWeekView) -> None:
        return None

    def review_verdict(self, item: ReviewItemView) -> None:
        return None
