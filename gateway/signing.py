"""Standard Webhooks (v1) signing and verification, as pure functions.

A receiver gets `webhook-id`, `webhook-timestamp` and `webhook-signature` headers, where the
signature is `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed with the base64 part
of a `whsec_` secret. During a rotation one signature per valid secret is sent, space-separated,
so any Standard Webhooks library verifies with either secret.

`Signer` decodes its keys once and is what the delivery hot path should hold on to; the free
functions wrap it for one-off use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Mapping, Sequence

from gateway.errors import GatewayError

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "HEADER_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "SECRET_PREFIX",
    "SignatureError",
    "Signer",
    "decode_secret",
    "headers",
    "new_signing_secret",
    "sign",
    "verify",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
SECRET_KEY_BYTES = 32  # bytes of randomness in a new signing secret
DEFAULT_TOLERANCE_S = 300  # seconds of clock skew accepted either way, as the standard advises

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

_VERSION = "v1"


class SignatureError(GatewayError):
    """A webhook's signature headers are missing, malformed, stale or do not match."""


def new_signing_secret() -> str:
    """A fresh `whsec_` secret: base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_KEY_BYTES)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret (the prefix is optional, as in the reference library)."""
    encoded = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        # Extra padding is ignored, so unpadded secrets decode too.
        key = base64.b64decode(encoded + "==", validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("signing secret is not valid base64") from exc
    if not key:
        raise ValueError("signing secret is empty")
    return key


class Signer:
    """Signs with one or more secrets; keys are decoded and HMAC states prepared once."""

    __slots__ = ("_macs",)

    def __init__(self, secrets: Sequence[str]) -> None:
        if isinstance(secrets, str):
            raise TypeError("Signer takes a sequence of secrets, not one string")
        if not secrets:
            raise ValueError("Signer needs at least one secret")
        # An HMAC object with only the key absorbed; `.copy()` skips re-deriving the pads.
        self._macs = tuple(hmac.new(decode_secret(s), digestmod=hashlib.sha256) for s in secrets)

    def _digests(self, msg_id: str, timestamp: int | str, body: bytes) -> list[bytes]:
        prefix = f"{msg_id}.{timestamp}.".encode()
        out: list[bytes] = []
        for base in self._macs:
            mac = base.copy()
            mac.update(prefix)
            mac.update(body)
            out.append(mac.digest())
        return out

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` value: one `v1,<sig>` per secret, in order, space-separated."""
        return " ".join(
            f"{_VERSION},{base64.b64encode(d).decode('ascii')}"
            for d in self._digests(msg_id, timestamp, body)
        )

    def header_lines(self, msg_id: str, timestamp: int, body: bytes) -> bytes:
        """The three headers as request header lines (ids and timestamps are ours: no CR/LF)."""
        return (f"{HEADER_ID}: {msg_id}\r\n{HEADER_TIMESTAMP}: {timestamp}\r\n"
                f"{HEADER_SIGNATURE}: {self.sign(msg_id, timestamp, body)}\r\n").encode("latin-1")

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers for one request."""
        return {
            HEADER_ID: msg_id,
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_SIGNATURE: self.sign(msg_id, timestamp, body),
        }

    def verify(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        now: int,
        tolerance_s: int = DEFAULT_TOLERANCE_S,
    ) -> None:
        """Accept when any `v1` signature in the headers matches any of this signer's keys."""
        lowered = {k.lower(): v for k, v in headers.items()}
        msg_id = _required_header(lowered, HEADER_ID)
        ts_value = _required_header(lowered, HEADER_TIMESTAMP)
        sig_value = _required_header(lowered, HEADER_SIGNATURE)
        ts_text = ts_value.strip()
        if not ts_text.isascii() or not ts_text.isdigit():
            raise SignatureError(f"invalid {HEADER_TIMESTAMP} header")
        timestamp = int(ts_text)
        if now - timestamp > tolerance_s:
            raise SignatureError("message timestamp too old")
        if timestamp - now > tolerance_s:
            raise SignatureError("message timestamp too new")

        # Sign the header text as sent: "0123" and "123" are different messages.
        expected = self._digests(msg_id, ts_text, body)
        for candidate in sig_value.split():
            version, _, encoded = candidate.partition(",")
            if version != _VERSION:
                continue
            try:
                given = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                continue
            matched = False
            for digest in expected:
                # No early exit on a match, so timing does not reveal which key matched.
                matched |= hmac.compare_digest(digest, given)
            if matched:
                return
        raise SignatureError("no matching signature found")


def _required_header(lowered: Mapping[str, str], name: str) -> str:
    value = lowered.get(name)
    if not value:
        raise SignatureError(f"missing {name} header")
    return value


def sign(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    """The `webhook-signature` value for `body` under each secret (see `Signer.sign`)."""
    return Signer(secrets).sign(msg_id, timestamp, body)


def headers(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` for one request."""
    return Signer(secrets).headers(msg_id, timestamp, body)


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    now: int,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> None:
    """Raise `SignatureError` unless `headers` carry a valid, fresh signature of `body` by `secret`."""
    Signer([secret]).verify(body, headers, now=now, tolerance_s=tolerance_s)
