"""The terminal's `Notifier`: one line per approval or human task event, for the CLI and worker.

The Slack bot will post cards for the same events; in a terminal we print what happened and
the exact command that moves the run on.
"""

from __future__ import annotations

import typer

from bot.cli import render as cli_render
from bot.formatting import visible_controls
from pipelines import ApprovalView, TaskView
from pipelines.ports import SilentNotifier


class TerminalNotifier(SilentNotifier):
    """Prints engine events; `err=True` sends them to stderr so `--json` stdout stays clean.

    Alerts and review posts stay silent here: `gatehouse alerts check` and `gatehouse review
    post` print what they did themselves."""

    def __init__(self, *, err: bool = False) -> None:
        self.err = err

    def _say(self, line: str) -> None:
        typer.echo(visible_controls(line), err=self.err)

    def approval_requested(self, approval: ApprovalView) -> None:
        self._say(cli_render.approval_requested_line(approval))

    def approval_decided(self, approval: ApprovalView) -> None:
        self._say(cli_render.approval_decided_line(approval))

    def task_opened(self, task: TaskView) -> None:
        self._say(cli_render.task_opened_line(task))

    def task_answered(self, task: TaskView) -> None:
        self._say(cli_render.task_answered_line(task))
