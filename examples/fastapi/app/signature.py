"""Standard Webhooks verification (https://www.standardwebhooks.com/).

Written out with hmac, hashlib and base64 from the standard library: the
`standardwebhooks` package from PyPI is not packaged by Debian, and the
algorithm is a dozen lines. It follows the specification:

  signed content  = webhook-id + "." + webhook-timestamp + "." + raw body
  signature       = base64(HMAC-SHA256(key, signed content))
  webhook-signature: "v1,<signature>", several space-separated during a
                  key rotation (Spool signs with every key it holds)
  key             = "whsec_" + base64(secret bytes)

A request is accepted when any "v1" entry matches any of the receiver's
keys (compared in constant time) and its timestamp is within the
tolerance of the receiver's clock, which bounds replays of a captured
request to that window (the webhook-id deduplication covers the rest).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Iterable, Mapping, Sequence

DEFAULT_TOLERANCE_SECONDS = 5 * 60


class VerificationError(Exception):
    """The request is not a valid delivery: refuse it with a 4xx."""


def parse_key(text: str) -> bytes:
    """Decodes one "whsec_<base64>" key into its secret bytes."""
    raw = text.strip()
    if raw.startswith("whsec_"):
        raw = raw[len("whsec_"):]
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a signing key is not whsec_<base64>") from exc
    if len(key) < 16:
        raise ValueError("a signing key is shorter than 16 bytes")
    return key


def parse_keys(text: str) -> list[bytes]:
    """Keys separated by commas, spaces or newlines; # starts a comment line."""
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for item in line.replace(",", " ").split():
            keys.append(parse_key(item))
    return keys


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The "v1,<base64>" signature of one message (used by the tests too)."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    keys: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> str:
    """Checks a delivery's headers against keys; returns its webhook-id.

    Raises VerificationError on a missing header, a timestamp outside the
    tolerance, or no matching signature.
    """
    msg_id = headers.get("webhook-id")
    ts_text = headers.get("webhook-timestamp")
    sig_header = headers.get("webhook-signature")
    if not msg_id or not ts_text or not sig_header:
        raise VerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(ts_text)
    except ValueError as exc:
        raise VerificationError("webhook-timestamp is not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise VerificationError("webhook-timestamp is outside the tolerance")
    expected = [sign(key, msg_id, timestamp, body).split(",", 1)[1] for key in keys]
    for entry in _entries(sig_header):
        version, _, value = entry.partition(",")
        if version != "v1":
            continue  # other schemes (v1a, asymmetric) are not used by Spool
        for candidate in expected:
            if hmac.compare_digest(value.encode(), candidate.encode()):
                return msg_id
    raise VerificationError("no valid signature")


def _entries(header: str) -> Iterable[str]:
    return (e for e in header.split(" ") if e)
