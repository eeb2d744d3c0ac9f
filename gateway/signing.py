"""Standard Webhooks signing (v1 and v1a) and v1 verification, as pure functions.

A receiver gets `webhook-id`, `webhook-timestamp` and `webhook-signature` headers. The signed
content is `"{id}.{timestamp}.{body}"`; the signature is, by the key's scheme:

- `v1,<base64 HMAC-SHA256>` keyed with the base64 part of a `whsec_` secret (symmetric);
- `v1a,<base64 Ed25519 signature (64 bytes)>` by a `whsk_` private key, which receivers verify
  with its `whpk_` public key (asymmetric, the spec's preference). A `whsk_` key is base64 of
  the 32-byte seed followed by the 32-byte public key (libsodium's and Svix's form; a bare
  32-byte seed is read too), a `whpk_` key base64 of the 32-byte public key.

During a rotation one signature per valid key is sent, space-separated, so a receiver holding
any of them verifies. `Signer` decodes its keys once and is what the delivery hot path should
hold on to; the free functions wrap it for one-off use. Verifying `v1a` is the receiver's side:
gateway/client/ed25519.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from gateway.errors import GatewayError

if TYPE_CHECKING:  # imported when a v1a key is used: the SDK's v1 receivers need no cryptography
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "HEADER_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "PRIVATE_KEY_PREFIX",
    "PUBLIC_KEY_PREFIX",
    "SCHEMES",
    "SCHEME_ASYMMETRIC",
    "SCHEME_SYMMETRIC",
    "SECRET_PREFIX",
    "SignatureError",
    "SignedHeaders",
    "Signer",
    "check_headers",
    "decode_private_key",
    "decode_secret",
    "headers",
    "new_signing_key",
    "new_signing_secret",
    "public_key_of",
    "sign",
    "verify",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
PRIVATE_KEY_PREFIX = "whsk_"  # an Ed25519 private key (v1a): never leaves the gateway
PUBLIC_KEY_PREFIX = "whpk_"  # its public key: what receivers verify v1a signatures with
SECRET_KEY_BYTES = 32  # bytes of randomness in a new signing secret
ED25519_SEED_BYTES = 32  # an Ed25519 private key's seed (RFC 8032)
ED25519_PUBLIC_BYTES = 32
DEFAULT_TOLERANCE_S = 300  # seconds of clock skew accepted either way, as the standard advises

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

SCHEME_SYMMETRIC = "v1"  # HMAC-SHA256 with a `whsec_` secret; also the signature's version tag
SCHEME_ASYMMETRIC = "v1a"  # Ed25519 with a `whsk_` private key
SCHEMES = (SCHEME_SYMMETRIC, SCHEME_ASYMMETRIC)

_VERSION = SCHEME_SYMMETRIC


class SignatureError(GatewayError):
    """A webhook's signature headers are missing, malformed, stale or do not match."""


def new_signing_secret() -> str:
    """A fresh `whsec_` secret: base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_KEY_BYTES)).decode("ascii")


def new_signing_key(scheme: str) -> str:
    """A fresh key of `scheme`: a `whsec_` secret (v1) or a `whsk_` Ed25519 private key (v1a)."""
    if scheme == SCHEME_SYMMETRIC:
        return new_signing_secret()
    if scheme == SCHEME_ASYMMETRIC:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes_raw() + _raw_public(key)
        return PRIVATE_KEY_PREFIX + base64.b64encode(raw).decode("ascii")
    raise ValueError(f"unknown signature scheme {scheme!r}")


def decode_private_key(secret: str) -> Ed25519PrivateKey:
    """The Ed25519 key of a `whsk_` secret: base64 of seed and public key (64 bytes), or of the
    seed alone (32). A 64-byte form whose public half is not the seed's is refused."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    if not secret.startswith(PRIVATE_KEY_PREFIX):
        raise ValueError("not a whsk_ private key")
    try:
        raw = base64.b64decode(secret[len(PRIVATE_KEY_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("whsk_ private key is not valid base64") from exc
    if len(raw) not in (ED25519_SEED_BYTES, ED25519_SEED_BYTES + ED25519_PUBLIC_BYTES):
        raise ValueError("whsk_ private key must be 32 or 64 bytes")
    key = Ed25519PrivateKey.from_private_bytes(raw[:ED25519_SEED_BYTES])
    if len(raw) > ED25519_SEED_BYTES and not hmac.compare_digest(raw[ED25519_SEED_BYTES:], _raw_public(key)):
        raise ValueError("whsk_ private key's public half does not match its seed")
    return key


def public_key_of(secret: str) -> str:
    """The `whpk_` public key of a `whsk_` private key."""
    return PUBLIC_KEY_PREFIX + base64.b64encode(_raw_public(decode_private_key(secret))).decode("ascii")


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


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
    """Signs with one or more keys (`whsec_` secrets, `whsk_` private keys, or both during a
    switch of scheme); keys are decoded and HMAC states prepared once."""

    __slots__ = ("_keys", "_macs")

    def __init__(self, secrets: Sequence[str]) -> None:
        if isinstance(secrets, str):
            raise TypeError("Signer takes a sequence of secrets, not one string")
        if not secrets:
            raise ValueError("Signer needs at least one secret")
        # An HMAC object with only the key absorbed; `.copy()` skips re-deriving the pads.
        self._keys: tuple[hmac.HMAC | Ed25519PrivateKey, ...] = tuple(
            decode_private_key(s) if s.startswith(PRIVATE_KEY_PREFIX)
            else hmac.new(decode_secret(s), digestmod=hashlib.sha256)
            for s in secrets
        )
        self._macs = tuple(k for k in self._keys if isinstance(k, hmac.HMAC))

    def _digests(self, msg_id: str, timestamp: int | str, body: bytes) -> list[bytes]:
        """The v1 (HMAC) signatures, one per `whsec_` secret."""
        prefix = f"{msg_id}.{timestamp}.".encode()
        out: list[bytes] = []
        for base in self._macs:
            mac = base.copy()
            mac.update(prefix)
            mac.update(body)
            out.append(mac.digest())
        return out

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` value: one `v1,<sig>` or `v1a,<sig>` per key, in order,
        space-separated."""
        prefix = f"{msg_id}.{timestamp}.".encode()
        content: bytes | None = None  # the whole signed content, joined only for Ed25519
        parts: list[str] = []
        for key in self._keys:
            if isinstance(key, hmac.HMAC):
                mac = key.copy()
                mac.update(prefix)
                mac.update(body)
                parts.append(f"{_VERSION},{base64.b64encode(mac.digest()).decode('ascii')}")
            else:
                if content is None:
                    content = prefix + body
                parts.append(f"{SCHEME_ASYMMETRIC},{base64.b64encode(key.sign(content)).decode('ascii')}")
        return " ".join(parts)

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
        """Accept when any `v1` signature in the headers matches any of this signer's `whsec_`
        secrets (v1a signatures are verified with public keys: gateway/client/ed25519.py)."""
        msg_id, ts_text, sig_value = check_headers(headers, now=now, tolerance_s=tolerance_s)
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


class SignedHeaders(NamedTuple):
    msg_id: str
    timestamp: str  # the header's text as sent (stripped): the signed content uses it verbatim
    signatures: str  # the space-separated `version,signature` list


def check_headers(
    headers: Mapping[str, str], *, now: int, tolerance_s: int = DEFAULT_TOLERANCE_S
) -> SignedHeaders:
    """The three Standard Webhooks headers of a request, or `SignatureError` when one is missing,
    the timestamp is not an integer, or it is further than `tolerance_s` from `now` either way."""
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
    return SignedHeaders(msg_id, ts_text, sig_value)


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
