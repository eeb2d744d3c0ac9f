"""Verifying Standard Webhooks `v1a` (Ed25519) signatures with a hook's `whpk_` public key.

The gateway signs a v1a hook's deliveries with a private key that never leaves it; a receiver
holds only the public key (`GET /api/v2/hooks/{id}/signing-secret`, or the published
`GET /v1/signing-keys/{tenant}/{id}`). The official `standardwebhooks` library verifies only
`v1` today, so `Verifier` does both: `v1` with `whsec_` secrets (gateway/signing.py), `v1a` with
`whpk_` keys, against `"{webhook-id}.{webhook-timestamp}.{body}"` as the headers carry them.
`cryptography` is imported only when a `whpk_` key is used: a v1 receiver does without it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from gateway.signing import (
    DEFAULT_TOLERANCE_S,
    ED25519_PUBLIC_BYTES,
    PRIVATE_KEY_PREFIX,
    PUBLIC_KEY_PREFIX,
    SCHEME_ASYMMETRIC,
    SignatureError,
    SignedHeaders,
    Signer,
    check_headers,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["Verifier", "decode_public_key", "verify_v1a"]

SIGNATURE_BYTES = 64  # an Ed25519 signature


def decode_public_key(key: str) -> Ed25519PublicKey:
    """The Ed25519 key of a `whpk_` public key (base64 of its 32 bytes)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

    if key.startswith(PRIVATE_KEY_PREFIX):
        raise ValueError(
            "a whsk_ key is the gateway's private signing key; a receiver needs the whpk_ public key"
        )
    if not key.startswith(PUBLIC_KEY_PREFIX):
        raise ValueError("not a whpk_ public key")
    try:
        raw = base64.b64decode(key[len(PUBLIC_KEY_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("whpk_ public key is not valid base64") from exc
    if len(raw) != ED25519_PUBLIC_BYTES:
        raise ValueError(f"whpk_ public key must be {ED25519_PUBLIC_BYTES} bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_v1a(signed: SignedHeaders, body: bytes, keys: Sequence[Ed25519PublicKey]) -> bool:
    """Whether any `v1a` signature of the header is valid for `body` under any of `keys`."""
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415

    content = f"{signed.msg_id}.{signed.timestamp}.".encode() + body
    for candidate in signed.signatures.split():
        version, _, encoded = candidate.partition(",")
        if version != SCHEME_ASYMMETRIC:
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(signature) != SIGNATURE_BYTES:
            continue
        for key in keys:
            try:
                key.verify(signature, content)
            except InvalidSignature:
                continue
            return True
    return False


class Verifier:
    """Accepts a request when any signature in its `webhook-signature` header matches any of
    the keys: `whsec_` secrets check `v1` signatures, `whpk_` public keys check `v1a` ones."""

    __slots__ = ("_public", "_signer")

    def __init__(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str):
            raise TypeError("Verifier takes a sequence of keys, not one string")
        if not keys:
            raise ValueError("Verifier needs at least one key")
        asymmetric = (PUBLIC_KEY_PREFIX, PRIVATE_KEY_PREFIX)  # a whsk_ key is refused, by name
        symmetric = [k for k in keys if not k.startswith(asymmetric)]
        self._signer = Signer(symmetric) if symmetric else None
        self._public = tuple(decode_public_key(k) for k in keys if k.startswith(asymmetric))

    def verify(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        now: int,
        tolerance_s: int = DEFAULT_TOLERANCE_S,
    ) -> None:
        """Return when the request verifies; else `SignatureError` (missing or malformed
        headers, a stale timestamp, no matching signature)."""
        signed = check_headers(headers, now=now, tolerance_s=tolerance_s)
        if self._public and verify_v1a(signed, body, self._public):
            return
        if self._signer is None:
            raise SignatureError("no matching signature found")
        self._signer.verify(body, headers, now=now, tolerance_s=tolerance_s)
