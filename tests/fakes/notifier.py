"""A notifier that remembers what it was told, in order."""

from __future__ import annotations

from typing import Any

from pipelines.views import ApprovalView, TaskView


class RecordingNotifier:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def approval_requested(self, approval: ApprovalView) -> None:
        self.events.append(("approval_requested", approval))

    def approval_decided(self, approval: ApprovalView) -> None:
        self.events.append(("approval_decided", approval))

    def task_opened(self, task: TaskView) -> None:
        self.events.append(("task_opened", task))

    def task_answered(self, task: TaskView) -> None:
        self.events.append(("task_answered", task))

    def alert_opened(self, alert: Any) -> None:
        self.events.append(("alert_opened", alert))

    def alert_recovered(self, alert: Any) -> None:
        self.events.append(("alert_recovered", alert))

    def review_thread(self, week: Any) -> None:
        self.events.append(("review_thread", week))

    def review_summary(self, week: Any) -> None:
        self.events.append(("review_summary", week))

    def review_verdict(self, item: Any) -> None:
        self.events.append(("review_verdict", item))

    def run_needs_attention(self, run: Any) -> None:
        self.events.append(("run_needs_attention", run))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]
