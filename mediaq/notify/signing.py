"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the signature
header lists ``v1,<base64 HMAC-SHA256>`` for each secret, so receivers keep
verifying while a secret is rotated. Secrets are ``whsec_`` + base64 key bytes.

Receivers can verify with any Standard Webhooks library, with :func:`verify`, or
with ``mediaq webhooks verify``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

from mediaq.errors import ConfigError, SignatureError

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


def new_secret() -> str:
    """A fresh ``whsec_`` secret (24 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def parse_secrets(text: str) -> list[bytes]:
    """Key bytes of the comma-separated ``whsec_`` secrets in ``text`` (may be empty)."""
    keys = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        encoded = item.removeprefix(SECRET_PREFIX)
        try:  # padding is optional, as in the Standard Webhooks libraries
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("webhook_secret: not a whsec_ secret (base64 after "
                              "'whsec_' expected)") from None
        if len(key) < 16:
            raise ConfigError("webhook_secret: too short (at least 16 key bytes)")
        keys.append(key)
    return keys


def sign(msg_id: str, timestamp: int, body: bytes, keys: Sequence[bytes]) -> str:
    """The ``webhook-signature`` header value: one ``v1,…`` entry per key."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        for key in keys
    )


def signed_headers(msg_id: str, body: bytes, keys: Sequence[bytes],
                   now: float | None = None) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and (with keys) ``webhook-signature``."""
    timestamp = int(time.time() if now is None else now)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if keys:
        headers["webhook-signature"] = sign(msg_id, timestamp, body, keys)
    return headers


def verify(keys: Sequence[bytes], headers: Mapping[str, str], body: bytes, *,
           tolerance_s: int = DEFAULT_TOLERANCE_S, now: float | None = None) -> None:
    """Raise :class:`SignatureError` unless ``body`` carries a valid, fresh signature
    by one of ``keys`` (header names are matched case-insensitively)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signature = lowered.get("webhook-signature")
    if not (msg_id and stamp and signature):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not a number") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(f"webhook-timestamp is more than {tolerance_s} s away from now")
    expected = sign(msg_id, timestamp, body, keys).split()
    offered = [entry for entry in signature.split() if entry.startswith("v1,")]
    if not any(hmac.compare_digest(mine, theirs) for mine in expected for theirs in offered):
        raise SignatureError("no signature matches any of the secrets")
