"""Scoped LLM calls: one model call that does one thing, parsed into a pydantic schema.

The official `openai` SDK talks to OpenAI or any compatible server (`base_url`). Output that
fails the schema is asked for again with the validation error fed back, up to `max_attempts`;
429s, 5xx and timeouts are the SDK's own retries (`max_retries`, `timeout`), not a second layer
here. Whatever goes wrong — no model, a refusal, no valid answer, low confidence, the model
unreachable after the SDK's retries — comes back as a failure with its reason, for the engine
to turn into a human task (or `CannotAnswer`).

The `response_format` for an output model is built once and cached: the SDK's `parse()` rebuilds
the strict JSON schema on every call, which costs more than the call itself against a fast
server.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from pipelines.config import Settings
from pipelines.errors import GatehouseError
from pipelines.validation import format_validation_errors

if TYPE_CHECKING:
    import openai

TASKS = ("classify", "extract", "draft", "summarize")
# Client errors that mean the configuration is wrong (not retryable, not a model's doubt).
_CONFIGURATION_STATUSES = frozenset({400, 401, 403, 404, 422})


class LLMConfigurationError(GatehouseError):
    """The model server rejects the request itself: a configuration problem, not the model's."""


Task = Literal["classify", "extract", "draft", "summarize"]
OutputMode = Literal["json_schema", "json_object"]
Failure = Literal["no_model", "refused", "invalid", "low_confidence", "model_error", "budget"]

_TASK_INSTRUCTIONS = {
    "classify": "Classify the input into exactly one of the categories the schema allows.",
    "extract": "Extract the requested fields from the input. Use null for anything the input does not state; never guess.",
    "draft": "Draft the requested text, following the instructions and the facts given, and nothing else.",
    "summarize": "Summarize the input faithfully: no facts that are not in it.",
}
_ANSWER_FORMAT = "Answer with one JSON object that matches the schema, and nothing else."
_CONFIDENCE_NOTE = "Set `confidence` between 0 and 1 to how sure you are; a low confidence sends the case to a person."


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    prompt: float
    completion: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return round(
            (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1_000_000, 8
        )


# List prices in USD per million tokens; override or extend with GATEHOUSE_LLM_PRICES.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o3": Price(2.00, 8.00),
    "o4-mini": Price(1.10, 4.40),
}


def price_for(prices: Mapping[str, Price], model: str) -> Price | None:
    """The exact model's price, else the longest known prefix (`gpt-4o-mini-2024-07-18`)."""
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(name)]
    return prices[max(matches, key=len)] if matches else None


@dataclass(frozen=True)
class LLMConfig:
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_seconds: float = 60.0
    max_retries: int = 2
    output_mode: OutputMode = "json_schema"
    prices: Mapping[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    @property
    def configured(self) -> bool:
        return bool(self.model) and bool(self.api_key or self.base_url)


def llm_config_from(settings: Settings) -> LLMConfig:
    prices = dict(DEFAULT_PRICES)
    prices.update(
        {name: Price(p["prompt"], p["completion"]) for name, p in settings.llm_prices.items()}
    )
    return LLMConfig(
        model=settings.llm_model,
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
        timeout_seconds=settings.llm_timeout_seconds,
        max_retries=settings.llm_max_retries,
        output_mode=settings.llm_output_mode,
        prices=prices,
    )


@dataclass
class Attempt:
    raw: str | None
    error: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    model: str | None = None  # the model the server says answered (traces)

    def to_json(self) -> dict[str, Any]:
        return {
            "raw": self.raw,
            "error": self.error,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": self.latency_ms,
        }


@dataclass
class LLMResult:
    """What one `ctx.llm` call got: a value, or a failure with its reason; and what it cost."""

    model: str | None
    system: str
    prompt: str
    value: BaseModel | None = None
    failure: Failure | None = None
    reason: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    confidence: float | None = None
    cost: float | None = None
    latency_ms: float = 0.0

    @property
    def prompt_tokens(self) -> int:
        return sum(a.prompt_tokens for a in self.attempts)

    @property
    def completion_tokens(self) -> int:
        return sum(a.completion_tokens for a in self.attempts)

    @property
    def last_raw(self) -> str | None:
        for attempt in reversed(self.attempts):
            if attempt.raw is not None:
                return attempt.raw
        return None

    def meta(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "attempts": [a.to_json() for a in self.attempts],
            "failure": self.failure,
            "reason": self.reason,
            "confidence": self.confidence,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost,
            "latency_ms": self.latency_ms,
        }


def has_confidence(output: type[BaseModel]) -> bool:
    return "confidence" in output.model_fields


@functools.lru_cache(maxsize=512)
def system_prompt(task: str, output: type[BaseModel], system: str | None, mode: OutputMode) -> str:
    parts = [system.strip()] if system else []
    parts.append(_TASK_INSTRUCTIONS[task])
    parts.append(_ANSWER_FORMAT)
    if has_confidence(output):
        parts.append(_CONFIDENCE_NOTE)
    if mode == "json_object":
        # JSON mode has no schema parameter: the schema travels in the instructions.
        parts.append("The JSON schema:\n" + json.dumps(output.model_json_schema()))
    return "\n\n".join(parts)


class LLMCaller:
    """The SDK client for one configuration, and the per-model `response_format` cache."""

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self._formats: dict[type[BaseModel], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._client: openai.OpenAI | None = None

    @property
    def client(self) -> openai.OpenAI:
        if self._client is None:
            import openai  # ~0.5 s and ~40 MB: loaded by the first call, not by every import

            self._client = openai.OpenAI(
                base_url=self.config.base_url,
                # Local OpenAI-compatible servers usually need no key; the SDK insists on one.
                api_key=self.config.api_key or "not-needed",
                timeout=self.config.timeout_seconds,
                max_retries=self.config.max_retries,
            )
        return self._client

    def response_format(self, output: type[BaseModel]) -> dict[str, Any]:
        cached = self._formats.get(output)
        if cached is None:
            if self.config.output_mode == "json_schema":
                from openai.lib._parsing._completions import type_to_response_format_param

                cached = dict(type_to_response_format_param(output))  # type: ignore[arg-type]
            else:
                cached = {"type": "json_object"}
            with self._lock:
                self._formats[output] = cached
        return cached

    def call(
        self,
        *,
        task: str,
        prompt: str,
        output: type[BaseModel],
        system: str | None = None,
        model: str | None = None,
        min_confidence: float | None = None,
        max_attempts: int = 3,
        name: str | None = None,
    ) -> LLMResult:
        """`name`: the call's name in the run's record (`classify_ticket`, `validator:TOOL`);
        not sent to the model; a caller that answers by name reads it (pipelines.testing)."""
        model_name = model or self.config.model
        system_text = system_prompt(task, output, system, self.config.output_mode)
        result = LLMResult(model=model_name, system=system_text, prompt=prompt)
        if not self.config.configured or not model_name:
            result.failure = "no_model"
            result.reason = "no model is configured (set GATEHOUSE_LLM_MODEL and GATEHOUSE_LLM_BASE_URL or an API key)"
            return result
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system_text},
            {"role": "user", "content": prompt},
        ]
        response_format = self.response_format(output)
        began = time.perf_counter()
        for _ in range(max_attempts):
            if self._attempt(result, messages, model_name, output, response_format, min_confidence):
                break
        else:
            result.failure = "invalid"
            result.reason = (
                f"no answer matched {output.__name__} after {max_attempts} attempts; "
                f"last error: {result.attempts[-1].error}"
            )
        result.latency_ms = round((time.perf_counter() - began) * 1000, 3)
        price = price_for(self.config.prices, model_name)
        if price is not None:
            result.cost = price.cost(result.prompt_tokens, result.completion_tokens)
        return result

    def _attempt(
        self,
        result: LLMResult,
        messages: list[Any],
        model: str,
        output: type[BaseModel],
        response_format: Any,
        min_confidence: float | None,
    ) -> bool:
        """One request. True when the call is settled (an answer, or a failure not worth
        another attempt); False to ask again with the validation error fed back."""
        import openai  # already loaded by `self.client`; the name is for the except clauses
        from openai.types.chat import ChatCompletion

        began = time.perf_counter()
        try:
            completion = self.client.post(
                "/chat/completions",
                # What `chat.completions.create(model=, messages=, response_format=)` sends, and
                # through the same request path (auth, retries, timeout, response parsing), but
                # posted whole: `create` walks every parameter through the SDK's TypedDict
                # transform, which has nothing to change in these plain JSON values and costs
                # ~1 ms CPU a call, more than the rest of a case (issue 19).
                body={"model": model, "messages": messages, "response_format": response_format},
                options={"security": {"bearer_auth": True}},
                cast_to=ChatCompletion,
            )
        except openai.APIStatusError as exc:
            if exc.status_code in _CONFIGURATION_STATUSES:
                # Not the model being unsure or busy: the request itself is wrong. A person
                # can't fix that by answering; fail the run loudly instead.
                raise LLMConfigurationError(
                    f"the model server refused the request (HTTP {exc.status_code}: {exc.message}); "
                    "check GATEHOUSE_LLM_MODEL, GATEHOUSE_LLM_BASE_URL, GATEHOUSE_LLM_API_KEY and "
                    "GATEHOUSE_LLM_OUTPUT_MODE (json_object for servers without structured outputs)"
                ) from exc
            error = f"{type(exc).__name__}: {exc}"
            result.attempts.append(Attempt(None, error, latency_ms=_ms_since(began)))
            result.failure = "model_error"
            result.reason = f"the model could not be reached after the SDK's retries ({error})"
            return True
        except openai.APIError as exc:
            error = f"{type(exc).__name__}: {exc}"
            result.attempts.append(Attempt(None, error, latency_ms=_ms_since(began)))
            result.failure = "model_error"
            result.reason = f"the model could not be reached after the SDK's retries ({error})"
            return True
        usage = completion.usage
        attempt = Attempt(
            raw=None,
            error=None,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_ms=_ms_since(began),
            model=completion.model,
        )
        result.attempts.append(attempt)
        message = completion.choices[0].message if completion.choices else None
        if message is None:
            attempt.error = "the response had no choices"
            return False
        if message.refusal:
            attempt.raw = message.refusal
            attempt.error = "refused"
            result.failure = "refused"
            result.reason = f"the model refused: {message.refusal}"
            return True
        attempt.raw = message.content or ""
        try:
            value = output.model_validate_json(attempt.raw)
        except ValidationError as exc:
            attempt.error = format_validation_errors(exc, whole="(answer)")
            messages.append({"role": "assistant", "content": attempt.raw})
            messages.append(
                {
                    "role": "user",
                    "content": f"That answer does not match the schema: {attempt.error}. {_ANSWER_FORMAT}",
                }
            )
            return False
        result.value = value
        confidence = getattr(value, "confidence", None)
        result.confidence = float(confidence) if isinstance(confidence, int | float) else None
        if min_confidence is not None and (
            result.confidence is None or result.confidence < min_confidence
        ):
            result.failure = "low_confidence"
            result.reason = (
                f"the model's confidence {result.confidence} is below the bar of {min_confidence}"
            )
        return True


def _ms_since(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 3)


def diff_outputs(recorded: Any, fresh: Any) -> dict[str, Any]:
    """Field-by-field differences between a recorded and a fresh output (JSON values)."""
    if isinstance(recorded, dict) and isinstance(fresh, dict):
        keys = list(dict.fromkeys([*recorded, *fresh]))
        return {
            k: {"recorded": recorded.get(k), "fresh": fresh.get(k)}
            for k in keys
            if recorded.get(k) != fresh.get(k)
        }
    return {} if recorded == fresh else {"(output)": {"recorded": recorded, "fresh": fresh}}
