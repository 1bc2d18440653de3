"""One `configure_logging()`: structlog, JSON in production, console in development.

Secrets are redacted by one processor (the engine's scrubber, `pipelines.scrub`, which records
and messages go through too), after exceptions are formatted and before anything is rendered,
wherever they sit in an event (a value, inside a longer string, a traceback, a nested dict): the configured secret values (Slack tokens, the signing secret, the LLM key, webhook
secrets and tokens, the secret key; `remember_secrets`), the plain text of sensitive fields seen
by this run (`pipelines.sensitive`), anything shaped like a Slack or OpenAI-style token, and the
whole value of a key that names a secret (token, secret, password, api_key, authorization) or
is configured as personal data (GATEHOUSE_LOG_REDACT_KEYS, e.g. `["email", "phone"]`).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Collection, Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from pipelines import scrub as scrubber
from pipelines import sensitive, tracing

# A key that names a secret as a word: `token`, `bot_token`, `webhook_secrets`, `api_key`,
# `Authorization`; not `prompt_tokens` (a count) or `idempotency_key`.
_SECRET_KEY = re.compile(
    r"(?:^|[_\-.])(?:token|secrets?|passwords?|passwd|api[_\-]?keys?|authorization|cookie)(?:$|[_\-.])",
    re.I,
)
REDACTED = scrubber.REDACTED

_extra_keys: frozenset[str] = frozenset()  # GATEHOUSE_LOG_REDACT_KEYS: PII such as "email"


def remember_secrets(values: Iterable[str | None], *, keys: Iterable[str] = ()) -> None:
    """Add exact values to redact from every event, record and message (`pipelines.scrub`),
    and key names whose values are always redacted from log events (settings call this as they
    load)."""
    global _extra_keys
    scrubber.remember(values)
    _extra_keys = _extra_keys | {k.lower() for k in keys}


settings_secrets = scrubber.settings_secrets


def scrub(text: str, known: Collection[str] = ()) -> str:
    """`text` with every known secret value and token-shaped string replaced by [redacted]."""
    return scrubber.text(text, known)


def _scrub_value(value: Any, known: frozenset[str]) -> Any:
    if isinstance(value, str):
        return scrub(value, known)
    if isinstance(value, dict):
        return {k: REDACTED if _secret_key(k) else _scrub_value(v, known) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v, known) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return scrub(str(value), known)


def _secret_key(key: Any) -> bool:
    return isinstance(key, str) and (
        bool(_SECRET_KEY.search(key)) or (bool(_extra_keys) and key.lower() in _extra_keys)
    )


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    known = sensitive.seen_values()
    for key in list(event):
        if _secret_key(key):
            event[key] = REDACTED
        else:
            event[key] = _scrub_value(event[key], known)
    return event


def add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """`trace_id` and `span_id` of the span open where the line is written (tracing on)."""
    ids = tracing.current_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


class _RedactingFilter(logging.Filter):
    """The same redaction for the standard library's records (slack_bolt, uvicorn, httpx)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = scrub(message, sensitive.seen_values())
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_filter = _RedactingFilter()


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    """Whatever `sys.stderr` is when a line is written, not when logging was configured: a
    stream swapped out since (a test's capture, a daemon's redirect) may be closed by now."""
    return structlog.PrintLogger(sys.stderr)


def configure_logging(
    fmt: str = "console", level: str = "warning", stream: TextIO | None = None
) -> None:
    """Lines go to `stream` when given, else to whatever `sys.stderr` is at each line."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks become text first, so a secret in an exception message is redacted too.
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_stderr_logger if stream is None else structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    for handler in logging.getLogger().handlers:
        if _filter not in handler.filters:
            handler.addFilter(_filter)


def ensure_redaction() -> None:
    """Keep secrets out of the logs of a process that never called `configure_logging` (an
    application that builds `Gatehouse(url)` in code): the redacting processor goes into
    structlog's chain just before its renderer, with tracebacks turned into text first, and onto
    the standard library's handlers. A chain that already redacts is left as it is."""
    processors = list(structlog.get_config()["processors"])
    if redact_secrets not in processors:
        added: list[Any] = [redact_secrets]
        if structlog.processors.format_exc_info not in processors:
            added.insert(0, structlog.processors.format_exc_info)
        at = max(len(processors) - 1, 0)  # the last processor renders
        structlog.configure(processors=[*processors[:at], *added, *processors[at:]])
    for handler in logging.getLogger().handlers:
        if _filter not in handler.filters:
            handler.addFilter(_filter)
