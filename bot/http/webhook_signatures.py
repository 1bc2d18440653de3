"""Who may deliver to `/hooks/PIPELINE`: the timestamped `v1` signature and bearer tokens.

`X-Gatehouse-Signature: v1=<hex HMAC-SHA256 of "v1:<timestamp>:<raw body>">` with
`X-Gatehouse-Timestamp: <unix seconds>`, as Slack and Stripe sign: the timestamp is inside the
HMAC, so a captured delivery is good for `SIGNATURE_WINDOW` only, and within it the replay guard
accepts each signature once. Several `v1=` values, comma-separated, are tried in turn, so a
sender can sign with an old and a new secret while the receiver's secret is being rotated.

What a caller is told never depends on the path: the checks that need no secret (the scheme,
the timestamp) run the same for every pipeline name, and every other failure (unknown pipeline,
no `webhook()` trigger, no credentials, wrong signature or token) is one `UNAUTHENTICATED`
message, so nobody can list the pipelines by probing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.datastructures import Headers

from pipelines.replays import SIGNATURE_WINDOW

TIMESTAMP_HEADER = "X-Gatehouse-Timestamp"
SIGNATURE_HEADER = "X-Gatehouse-Signature"
SCHEME = "v1"
MAX_TIMESTAMP_DIGITS = 12  # unix seconds until the year 33658

UNAUTHENTICATED = (
    f"not authenticated: send {TIMESTAMP_HEADER}: <unix seconds> and "
    f'{SIGNATURE_HEADER}: v1=<hex HMAC-SHA256 of "v1:<timestamp>:<body>"> with this '
    "pipeline's secret (GATEHOUSE_WEBHOOK_SECRETS), or Authorization: Bearer <token> "
    "(GATEHOUSE_WEBHOOK_TOKENS); an unknown pipeline, one without a webhook() trigger and one "
    "with no secret or token configured are refused with this same answer"
)
OLD_SCHEME = (
    f"{SIGNATURE_HEADER}: sha256=… (an HMAC of the body alone, which a captured request could "
    f"replay) is no longer accepted: send {TIMESTAMP_HEADER}: <unix seconds> and "
    f'{SIGNATURE_HEADER}: v1=<hex HMAC-SHA256 of "v1:<timestamp>:<body>">'
)
NO_TIMESTAMP = (
    f"{SIGNATURE_HEADER}: v1=… needs {TIMESTAMP_HEADER}: <unix seconds>, the integer time it "
    'was signed at (the one in "v1:<timestamp>:<body>")'
)

# HMAC'd in place of a missing secret, so an unknown pipeline costs what a wrong signature does.
_DECOY = secrets.token_hex(32)


@dataclass(frozen=True)
class Authenticated:
    """A delivery the caller may make. `signature` (a v1 one, canonical) and `signed_at` are
    set when a signature authenticated it, for the replay guard; None for a bearer token,
    which carries nothing that tells a replay from a new request."""

    signature: str | None = None
    signed_at: datetime | None = None


@dataclass(frozen=True)
class Refused:
    """Why a delivery is 401: `reason` for the log, `message` for the caller."""

    reason: str
    message: str = UNAUTHENTICATED


def sign_delivery(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers a sender adds to POST `body` at `timestamp` (unix seconds, now)."""
    stamp = str(timestamp)
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: f"{SCHEME}={_hmac(secret, stamp, body)}"}


def _hmac(secret: str, stamp: str, body: bytes) -> str:
    signed = f"{SCHEME}:{stamp}:".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def authenticate(
    headers: Headers, body: bytes, *, secret: str | None, token: str | None, now: datetime
) -> Authenticated | Refused:
    """A valid, fresh v1 signature or a valid bearer token; otherwise why not. `secret` and
    `token` are None (or empty) for a path that names no webhook pipeline, or one nobody
    configured: it is refused like a wrong signature, after the same work."""
    signed = _verify_signature(headers, body, secret or None, now)
    if isinstance(signed, Authenticated):
        return signed  # a signature, when there is one, so that its replays are caught
    if token and _bearer_matches(headers, token):
        return Authenticated()
    return signed


def _verify_signature(
    headers: Headers, body: bytes, secret: str | None, now: datetime
) -> Authenticated | Refused:
    sent = headers.get(SIGNATURE_HEADER, "").strip()
    if not sent:
        return Refused("no_signature_or_token")
    items = [item.strip() for item in sent.split(",")]
    candidates = [item[3:].strip().lower() for item in items if item[:3].lower() == "v1="]
    if not candidates:
        if any(item[:7].lower() == "sha256=" for item in items):
            return Refused("old_scheme", OLD_SCHEME)
        return Refused("bad_signature")
    stamp = headers.get(TIMESTAMP_HEADER, "").strip()
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= MAX_TIMESTAMP_DIGITS):
        return Refused("no_timestamp", NO_TIMESTAMP)
    stale = _outside_window(int(stamp), now)
    if stale is not None:
        return stale
    signed_at = datetime.fromtimestamp(int(stamp), tz=UTC)  # in range: within the window
    expected = _hmac(secret or _DECOY, stamp, body).encode()
    matched = any(hmac.compare_digest(expected, c.encode()) for c in candidates)
    if matched and secret is not None:
        return Authenticated(f"{SCHEME}:{stamp}:{expected.decode()}", signed_at)
    return Refused("bad_signature")


def _outside_window(signed_at: int, now: datetime) -> Refused | None:
    # In integer seconds: a timestamp past datetime's year 9999 is refused, not an error.
    window = int(SIGNATURE_WINDOW.total_seconds())
    skew = int(now.timestamp()) - signed_at
    if skew > window:
        return Refused(
            "timestamp_too_old",
            f"{TIMESTAMP_HEADER} is {skew} s old, over the {window} s allowed: sign each "
            "delivery, and each retry, with the current time (and check the sender's clock)",
        )
    if -skew > window:
        return Refused(
            "timestamp_in_the_future",
            f"{TIMESTAMP_HEADER} is {-skew} s in the future, over the {window} s allowed: "
            "the sender's clock is ahead; sync it (NTP) and sign with the current time",
        )
    return None


def _bearer_matches(headers: Headers, token: str) -> bool:
    scheme, _, sent = headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), sent.strip().encode())
