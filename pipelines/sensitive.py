"""Sensitive fields: a pipeline marks a field `Annotated[str, Sensitive]`, and its value is never
written or shown in clear, yet a resumed run still gets it back.

How: the marker gives the field a JSON serializer that seals the value (Fernet: AES-128-CBC +
HMAC-SHA256) into a string `gh-sealed:v1:<token>`, and a validator that opens such a string again.
Every record the engine writes (run input and output, step, tool and model results, approval
arguments, audit details, human answers) is a JSON dump of a model, so it holds the sealed form;
a resume validates the record with the same model and the pipeline sees the plain value. Nothing
is computed per call for models without the marker: pydantic builds the serializer once per class.

Readers never see the sealed form either: views, cards, `--json` and the review export show
`••••` (`mask`). Free text a pipeline builds from a sensitive value (an LLM prompt, an error
message, the model's raw answer) is scrubbed by value: the plain values sealed or opened in this
run are remembered (`seen_values`) and replaced by `[redacted]` where text is recorded or logged,
by the same scrubber that takes configured secrets out (`pipelines.scrub`, through `scrub`).

Keys: GATEHOUSE_SECRET_KEY, one or more Fernet keys separated by commas (the first seals, all
open: rotation). Without one, a SQLite database gets a key file beside it (`gatehouse.db.key`,
mode 0600, created on first use), an in-memory one a key for the process; PostgreSQL refuses to
seal with an error that says to set the key, so a sensitive value is never stored unsealed.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import core_schema

from pipelines import scrub as scrubber
from pipelines.errors import GatehouseError

if TYPE_CHECKING:
    # cryptography is imported where a key is used: importing the settings (every command)
    # must not pay for it.
    from cryptography.fernet import MultiFernet

SEALED_PREFIX = "gh-sealed:v1:"
MASK = "••••"
REDACTED = scrubber.REDACTED
MAKE_KEY = (
    "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)
MIN_SCRUB_LENGTH = 4  # shorter plain values are not scrubbed from free text (too many false hits)


class SensitiveValueError(GatehouseError):
    """A sensitive value could not be sealed or opened (no key, or the wrong key)."""


class _SensitiveMarker:
    """`Annotated[T, Sensitive]`: the value is sealed in every JSON dump and opened on validation."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        global _in_use
        _in_use = True
        inner = handler(source)
        return core_schema.no_info_wrap_validator_function(
            _open_then_validate,
            inner,
            serialization=core_schema.wrap_serializer_function_ser_schema(
                _serialize_sealed, schema=inner, when_used="json"
            ),
        )

    def __repr__(self) -> str:
        return "Sensitive"


Sensitive = _SensitiveMarker()
# Set once a model with a Sensitive field is built: until then nothing can be sealed or opened
# here, and masking, tracking and scrubbing cost one check per run.
_in_use = False


# -- which fields ---------------------------------------------------------------------------


@functools.cache
def sensitive_fields(model: type[BaseModel]) -> frozenset[str]:
    """Names of `model`'s fields marked Sensitive (computed once per class)."""
    return frozenset(
        name
        for name, info in model.model_fields.items()
        if any(isinstance(m, _SensitiveMarker) for m in info.metadata)
    )


def redact_fields(model: type[BaseModel], raw: Any) -> Any:
    """`raw` (input the model refused, recorded as given for the record) with the values of the
    model's sensitive fields replaced by [redacted]: nothing will resume from it."""
    names = sensitive_fields(model)
    if not names or not isinstance(raw, dict):
        return raw
    return {k: REDACTED if k in names and v is not None else v for k, v in raw.items()}


def remember_model(model: BaseModel) -> None:
    """Note a validated model's sensitive values for scrubbing (the input a run starts from)."""
    if not _in_use:
        return
    for name in sensitive_fields(type(model)):
        _remember(getattr(model, name))


# -- sealing --------------------------------------------------------------------------------


class _Keyring:
    """The process's keys: an explicit GATEHOUSE_SECRET_KEY, else one for the database in use.

    Every key ever configured in this process still opens (tests and tools open several
    databases one after another); the latest one seals.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._explicit: list[bytes] = []
        self._fallback: Path | str | None = None  # a key file, "memory", or "refuse:<why>"
        self._keys: list[bytes] = []
        self._fernet: MultiFernet | None = None

    def configure(self, secret_key: str | None, database_url: str | None) -> None:
        with self._lock:
            if secret_key:
                from cryptography.fernet import Fernet

                keys = [k.strip().encode() for k in secret_key.split(",") if k.strip()]
                try:
                    for key in keys:
                        Fernet(key)
                except ValueError as exc:
                    raise SensitiveValueError(
                        "GATEHOUSE_SECRET_KEY must be Fernet keys (32 url-safe base64 bytes), "
                        f"comma-separated; make one with {MAKE_KEY}"
                    ) from exc
                self._explicit = keys
                self._add(keys, primary=True)
            elif database_url is not None and not self._explicit:
                self._fallback = _fallback_for(database_url)
                self._fernet = None

    def _add(self, keys: list[bytes], *, primary: bool) -> None:
        from cryptography.fernet import Fernet, MultiFernet

        rest = [k for k in self._keys if k not in keys]
        self._keys = [*keys, *rest] if primary else [*rest, *keys]
        self._fernet = MultiFernet([Fernet(k) for k in self._keys])

    def _sealing(self) -> MultiFernet:
        with self._lock:
            if self._fernet is not None and (self._explicit or self._fallback is None):
                return self._fernet
            fallback = self._fallback
            if isinstance(fallback, Path):
                self._add([_load_or_create_key(fallback)], primary=True)
            elif fallback == "memory" or fallback is None:
                from cryptography.fernet import Fernet

                self._add([Fernet.generate_key()], primary=True)
            else:
                raise SensitiveValueError(
                    f"cannot store a sensitive field: {fallback[len('refuse:') :]}; set "
                    f"GATEHOUSE_SECRET_KEY (make one with {MAKE_KEY})"
                )
            self._fallback = None
            assert self._fernet is not None
            return self._fernet

    def seal(self, plain: bytes) -> str:
        return self._sealing().encrypt(plain).decode()

    def open(self, token: str) -> bytes:
        from cryptography.fernet import InvalidToken

        with self._lock:
            fernet = self._fernet
            fallback = self._fallback
        if fernet is None or isinstance(fallback, Path):
            fernet = self._sealing()  # loads the database's key file
        try:
            return fernet.decrypt(token.encode())
        except InvalidToken:
            raise SensitiveValueError(
                "a sensitive value was sealed with a key this process does not have; set "
                "GATEHOUSE_SECRET_KEY to the key (or keys) it was stored with"
            ) from None


def _fallback_for(url: str) -> Path | str:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        path = path.split("?", 1)[0]
        if not path or path == ":memory:":
            return "memory"
        return Path(path).with_name(Path(path).name + ".key")
    return "refuse:no GATEHOUSE_SECRET_KEY is configured for this database"


def _load_or_create_key(path: Path) -> bytes:
    """The key in `path`, created (mode 0600) if there is none. Written whole to a temporary
    file and linked into place, so two processes starting at once agree on one key."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    from cryptography.fernet import Fernet

    key = Fernet.generate_key()
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key + b"\n")
    try:
        os.link(temporary, path)
    except FileExistsError:  # another process won the race: use its key
        key = path.read_bytes().strip()
    finally:
        temporary.unlink()
    return key


keyring = _Keyring()


def configure(secret_key: str | None, database_url: str | None = None) -> None:
    """Set the keys: GATEHOUSE_SECRET_KEY when given, else the database's fallback."""
    keyring.configure(secret_key, database_url)


def seal(value: Any) -> str:
    """A JSON value sealed into one string (idempotent: a sealed string stays as it is)."""
    if is_sealed(value):
        return str(value)
    _remember(value)
    # ASCII: a lone surrogate in the value must not make sealing fail (it has no UTF-8 form).
    text = json.dumps(value, separators=(",", ":"))
    return SEALED_PREFIX + keyring.seal(text.encode())


def open_sealed(value: str) -> Any:
    plain = json.loads(keyring.open(value[len(SEALED_PREFIX) :]))
    _remember(plain)
    return plain


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def _serialize_sealed(value: Any, handler: core_schema.SerializerFunctionWrapHandler) -> str:
    return seal(handler(value))


def _open_then_validate(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
    if is_sealed(value):
        value = open_sealed(value)
    else:
        _remember(value)
    return handler(value)


# -- what readers see -----------------------------------------------------------------------


def mask(value: Any) -> Any:
    """`value` with every sealed string shown as ••••; unchanged (the same object) if none."""
    if not _in_use:
        return value
    if isinstance(value, str):
        return MASK if value.startswith(SEALED_PREFIX) else value
    if isinstance(value, dict):
        if not _has_sealed(value):
            return value
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, list):
        if not _has_sealed(value):
            return value
        return [mask(v) for v in value]
    return value


def _has_sealed(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    for item in items:
        if isinstance(item, str):
            if item.startswith(SEALED_PREFIX):
                return True
        elif isinstance(item, dict | list) and _has_sealed(item):
            return True
    return False


# -- free text: the plain values of this run ----------------------------------------------------

_seen: ContextVar[set[str] | None] = ContextVar("gatehouse_sensitive_seen", default=None)


class tracking:  # noqa: N801  (used as a function: `with sensitive.tracking():`)
    """Remember the plain values sealed or opened inside (one run's execution). A class, not a
    generator: it is entered on every run."""

    __slots__ = ("_token",)

    def __enter__(self) -> set[str] | None:
        if not _in_use:
            self._token = None
            return None
        seen: set[str] = set()
        self._token = _seen.set(seen)
        return seen

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            _seen.reset(self._token)


def _remember(value: Any) -> None:
    seen = _seen.get()
    if seen is None or value is None:
        return
    if isinstance(value, str):
        if len(value) >= MIN_SCRUB_LENGTH:
            seen.add(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
        if len(text) >= MIN_SCRUB_LENGTH:
            seen.add(text)
    elif isinstance(value, dict):
        for item in value.values():
            _remember(item)
    elif isinstance(value, list):
        for item in value:
            _remember(item)


def seen_values() -> frozenset[str]:
    seen = _seen.get()
    return frozenset(seen) if seen else frozenset()


def scrub(value: Any) -> Any:
    """Free text (and the strings inside JSON) with configured secrets, token-shaped strings and
    this run's sensitive plain values replaced by [redacted] (`pipelines.scrub`); sealed strings
    are left whole. The same object when there is nothing to do."""
    return scrubber.value(value, _seen.get() or (), keep=SEALED_PREFIX)
