"""The one scrubber: what no record, message or log line may hold in clear.

Configured secrets (every SecretStr of the Settings, webhook secrets and tokens, the LLM key of a
`Gatehouse` built in code; `remember`), anything shaped like a credential (Slack's `xoxb-`,
`xoxp-`, `xapp-`… tokens, OpenAI-style `sk-…` keys, the credential after `Bearer `) and, through
`pipelines.sensitive.scrub`, the plain values of this run's sensitive fields are replaced by
`[redacted]`. The engine scrubs every error text, recorded output and free text with it before it
is written (runs, calls, run events, audit details) or shown (Slack, the CLI), and the log
processor (`pipelines.logs`) uses the same function, so a secret cannot reach one place the
others keep it out of.

Secrets are process-wide, not per engine: a log line cannot tell which engine it came from, and a
secret one engine knows must not leak through another in the same process.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    from pipelines.config import Settings

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words

# Slack tokens (xoxb-, xoxp-, xoxa-, xoxr-, xoxs-, xoxe-, xapp-), OpenAI-style keys (sk-…,
# sk-proj-…) and bearer credentials; long enough not to catch words like "sk-ip".
TOKEN_SHAPE = re.compile(
    r"\b(?:xox[abeoprs]-[A-Za-z0-9-]{8,}|xapp-[A-Za-z0-9-]{8,}|sk-[A-Za-z0-9_-]{16,})"
    r"|(?<=Bearer )[A-Za-z0-9._~+/=-]{8,}",
    re.I,
)

_known: tuple[str, ...] = ()  # longest first: a secret that contains another goes whole
_in_dumps: tuple[str, ...] = ()  # the same, and as they appear inside JSON text (quick check)
_lock = threading.Lock()


def remember(values: Iterable[str | None]) -> None:
    """Add exact values to redact everywhere from now on (settings and engines call this)."""
    global _known, _in_dumps
    fresh = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
    if not fresh.difference(_known):
        return
    with _lock:
        _known = tuple(sorted({*_known, *fresh}, key=len, reverse=True))
        _in_dumps = (*_known, *({_in_json(v) for v in _known} - set(_known)))


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value a Settings holds: its SecretStr fields and the webhook credentials."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
    values.extend(settings.webhook_secrets.values())
    values.extend(settings.webhook_tokens.values())
    return values


def text(value: str, also: Collection[str] = ()) -> str:
    """`value` with every known secret, every value in `also` and every token-shaped string
    replaced by [redacted]."""
    for secret in _known:
        if secret in value:
            value = value.replace(secret, REDACTED)
    if also:
        for plain in sorted(also, key=len, reverse=True):
            if plain in value:
                value = value.replace(plain, REDACTED)
    if _may_hold_token(value):
        value = TOKEN_SHAPE.sub(REDACTED, value)
    return value


# What every token shape contains, in the cases credentials are written in: a few substring
# checks cost a tenth of one case-insensitive regex search, and most text has none of them.
_TOKEN_HINTS = ("sk-", "SK-", "xox", "XOX", "xapp", "XAPP", "earer", "EARER")


def _may_hold_token(value: str) -> bool:
    return any(hint in value for hint in _TOKEN_HINTS)


def value(data: Any, also: Collection[str] = (), *, keep: str | None = None) -> Any:
    """A JSON value (or a tuple of them) with `text` applied to every string in it, keys
    included; strings starting with `keep` (sealed values) are left whole. The same object when
    nothing in it needed scrubbing, which is checked on its JSON text first (one C call) rather
    than string by string."""
    if data is None or isinstance(data, bool | int | float):
        return data
    if isinstance(data, str):
        if keep is not None and data.startswith(keep):
            return data
        return text(data, also)
    if not _may_hold_secret(data, also):
        return data
    return _walk(data, also, keep)


def _may_hold_secret(data: Any, also: Collection[str]) -> bool:
    try:
        dumped = _ENCODER.encode(data)
    except (TypeError, ValueError):  # not JSON (a cycle, odd keys): look string by string
        return True
    # JSON escapes characters one by one, so a string holding a secret holds its escaped form.
    for secret in _in_dumps:
        if secret in dumped:
            return True
    for plain in also:
        if plain in dumped or _in_json(plain) in dumped:
            return True
    return _may_hold_token(dumped) and TOKEN_SHAPE.search(dumped) is not None


def _in_json(plain: str) -> str:
    return _ENCODER.encode(plain)[1:-1]


# Built once: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


def _walk(data: Any, also: Collection[str], keep: str | None) -> Any:
    if isinstance(data, str):
        if keep is not None and data.startswith(keep):
            return data
        return text(data, also)
    if isinstance(data, dict):
        return {
            (text(k, also) if isinstance(k, str) else k): _walk(v, also, keep)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_walk(v, also, keep) for v in data]
    if isinstance(data, tuple):
        return tuple(_walk(v, also, keep) for v in data)
    return data
