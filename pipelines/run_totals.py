"""A run's model totals (tokens in and out, cost in USD), summed from its recorded LLM calls.

Each LLM call records its own tokens and cost (`cost_usd`, priced when it was made from the
built-in table and `GATEHOUSE_LLM_PRICES`; None when that model had no price). The totals keep
what they are made of: how many calls went to a model, how many of them had a price, and which
models had none, so a reader is never shown a cost of 0 where nothing was priced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.views import Run

PRICE_SOURCE = "the built-in price table and GATEHOUSE_LLM_PRICES, when each call was made"


@dataclass(frozen=True)
class RunTotals:
    llm_calls: int = 0  # every `ctx.llm` (and validator) call of the run
    model_calls: int = 0  # those that reached a model (a call with no model configured did not)
    priced_calls: int = 0  # of the model calls, those with a recorded cost
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None  # over the priced calls; None when no call had a price
    unpriced_models: tuple[str, ...] = ()

    @property
    def cost_is_partial(self) -> bool:
        return 0 < self.priced_calls < self.model_calls

    def cost_source(self) -> str:
        """Where the cost figure comes from, in a sentence."""
        if self.model_calls == 0:
            return "no model calls"
        if self.priced_calls == 0:
            return (
                f"no price configured for {', '.join(self.unpriced_models) or 'the model'} "
                "(GATEHOUSE_LLM_PRICES)"
            )
        calls = f"{self.priced_calls} model call{'s' if self.priced_calls != 1 else ''}"
        text = f"from {calls}, priced by {PRICE_SOURCE}"
        if self.cost_is_partial:
            text += (
                f"; {self.model_calls - self.priced_calls} more had no price "
                f"({', '.join(self.unpriced_models)}: no price configured)"
            )
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "llm_calls": self.llm_calls,
            "model_calls": self.model_calls,
            "priced_calls": self.priced_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": self.cost_usd,
            "cost_partial": self.cost_is_partial,
            "unpriced_models": list(self.unpriced_models),
            "cost_source": self.cost_source(),
        }


def _int(meta: Mapping[str, Any], key: str) -> int:
    value = meta.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def run_totals(run: Run) -> RunTotals:
    """Sum the run's recorded LLM calls."""
    llm_calls = model_calls = priced = prompt = completion = 0
    cost: float | None = None
    unpriced: list[str] = []
    for call in run.calls:
        if call.kind != "llm":
            continue
        llm_calls += 1
        meta = call.meta if isinstance(call.meta, Mapping) else {}
        if not meta.get("attempts") and not _int(meta, "prompt_tokens"):
            continue  # no model was asked (none configured, a human answered): nothing spent
        model_calls += 1
        prompt += _int(meta, "prompt_tokens")
        completion += _int(meta, "completion_tokens")
        spent = meta.get("cost_usd")
        if isinstance(spent, int | float) and not isinstance(spent, bool):
            priced += 1
            cost = (cost or 0.0) + float(spent)
        else:
            model = str(meta.get("model") or "an unnamed model")
            if model not in unpriced:
                unpriced.append(model)
    return RunTotals(
        llm_calls=llm_calls,
        model_calls=model_calls,
        priced_calls=priced,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=None if cost is None else round(cost, 8),
        unpriced_models=tuple(unpriced),
    )


def totals_line(totals: RunTotals) -> str:
    """ "tokens 1,234 in / 56 out · cost 0.0042 USD from 3 model calls, priced by …" (plain
    text, for the CLI and Slack alike)."""
    tokens = f"tokens {totals.prompt_tokens:,} in / {totals.completion_tokens:,} out"
    if totals.model_calls == 0:
        return f"{tokens} · no model calls, no cost"
    if totals.cost_usd is None:
        return f"{tokens} · cost unknown: {totals.cost_source()}"
    at_least = "at least " if totals.cost_is_partial else ""
    return f"{tokens} · cost {at_least}{usd_amount(totals.cost_usd)} USD {totals.cost_source()}"


def usd_amount(value: float) -> str:
    """`0.0042`, `0.000012`, `1.2500`: enough places that a small cost is not shown as 0."""
    if value == 0:
        return "0"
    if value < 0.01:
        return f"{value:.8f}".rstrip("0")
    return f"{value:.4f}"
