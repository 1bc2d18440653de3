"""The soak's operator (tests/test_soak.py): run operations mixed into the chaos.

Runs planned `cancel` are cancelled a moment after they are triggered, wherever they are then
(queued, running on a worker that may be killed, waiting for approval); about half of the
cancelled runs are retried once the chaos is over, their new approvals approved; and every run
that needs attention is resolved as the effect service says: it happened (with the tool's
result) when it counted the key, it did not otherwise. Once during the chaos the pipeline is
paused for a moment and resumed: triggers meanwhile are refused (and made again after), running
runs wait at their next call and carry on. The soak's invariants must still hold: no effect
twice, every run finished.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines import Gatehouse
from pipelines.errors import GatehouseError, RunNotCancellable


@dataclass
class Operator:
    gh: Gatehouse
    attempts: Callable[[], Counter[str]]  # the effect service's count by idempotency key
    rng: random.Random
    user: str = "U_ALICE"  # a finance lead: soak_pay's approvers may operate its runs
    counts: Counter[str] = field(default_factory=Counter)
    cancelled: set[str] = field(default_factory=set)
    _due: list[tuple[float, str]] = field(default_factory=list)
    _considered: set[str] = field(default_factory=set)
    pipeline: str = "soak_payout"
    _pause_window: tuple[float, float] | None = None
    paused: bool = False

    def plan_pause(self, start: float, end: float) -> None:
        """Pause the pipeline from `start` to `end` (monotonic seconds)."""
        self._pause_window = (start, end)

    def plan_cancel(self, run_id: str, now: float) -> None:
        self._due.append((now + self.rng.uniform(0.0, 1.5), run_id))

    def tick(self, now: float) -> None:
        """Cancel the runs whose moment came; pause or resume the pipeline when its time came."""
        if self._pause_window is not None:
            start, end = self._pause_window
            if not self.paused and start <= now < end:
                self.gh.pause_pipeline(self.pipeline, user=self.user, reason="the soak pauses it")
                self.paused = True
                self.counts["paused"] += 1
            elif self.paused and now >= end:
                self.gh.resume_pipeline(self.pipeline, user=self.user, reason="the soak resumes")
                self.paused = False
                self._pause_window = None
                self.counts["resumed"] += 1
        due = [(at, run_id) for at, run_id in self._due if at <= now]
        self._due = [(at, run_id) for at, run_id in self._due if at > now]
        for _, run_id in due:
            try:
                self.gh.cancel(run_id, user=self.user, reason="the soak's operator cancels it")
            except RunNotCancellable:
                self.counts["cancel_too_late"] += 1
                continue
            self.cancelled.add(run_id)
            self.counts["cancelled"] += 1

    def settle(self, run_plans: dict[str, str]) -> None:
        """Once the chaos is over: resolve what needs attention, retry some cancelled runs."""
        self.tick(float("inf"))
        for run in self.gh.runs(status="needs_attention", limit=1000):
            self._resolve(run.id)
        for run in self.gh.runs(status="cancelled", limit=1000):
            if run.id in self._considered:
                continue
            self._considered.add(run.id)
            if self.rng.random() < 0.5:
                run_plans[run.id] = "approve"  # its new approval, if it asks one, is approved
                self.gh.retry(run.id, user=self.user)
                self.counts["retried"] += 1

    def _resolve(self, run_id: str) -> None:
        run = self.gh.run(run_id)
        for call in run.calls:
            if call.status != "outcome_unknown":
                continue
            key = call.idempotency_key or ""
            happened = self.attempts()[key] > 0
            result = None
            if happened:
                tag, amount = run.input["tag"], run.input["amount"]
                result = {"receipt": f"paid-{tag}-{amount}"}
            try:
                self.gh.resolve(
                    call.id,
                    user=self.user,
                    happened=happened,
                    reason=f"the effect service counted {key} {self.attempts()[key]} times",
                    result=result,
                )
            except GatehouseError as exc:
                self.counts[f"resolve_refused: {exc}"] += 1
                continue
            self.counts["resolved_happened" if happened else "resolved_did_not_happen"] += 1
