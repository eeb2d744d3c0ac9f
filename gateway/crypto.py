"""Encryption of hook secrets and signing secrets at rest (AES-256-GCM).

Stored form: `v1:` + base64url(nonce(12) || ciphertext+tag). The associated data binds a
value to where it belongs (e.g. `hook-secret:<hook id>:<name>`), so a ciphertext copied to
another row or tenant does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ConfigError, GatewayError
from .settings import Settings

log = logging.getLogger("gateway.crypto")

NONCE_BYTES = 12
KEY_BYTES = 32
PREFIX = "v1:"
# Used only in development mode when no key is configured; start-up says so loudly.
_DEVELOPMENT_KEY = hashlib.sha256(b"hooks-gateway development key: never use in production").digest()


class DecryptionError(GatewayError):
    """A stored secret could not be decrypted (wrong key, or tampered)."""


class Cipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"encryption key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, stored: str, context: str) -> str:
        if not stored.startswith(PREFIX):
            raise DecryptionError("unknown ciphertext format")
        try:
            raw = base64.urlsafe_b64decode(stored[len(PREFIX):])
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise DecryptionError("stored secret does not decrypt with the configured key") from exc


def cipher_from_settings(settings: Settings) -> Cipher:
    secret = settings.security.encryption_key
    if secret is None:
        if settings.server.mode == "production":
            raise ConfigError(
                f"{settings.source}: [security] encryption_key (or GATEWAY_SECURITY_ENCRYPTION_KEY) "
                "is required in production mode"
            )
        log.warning(
            "NO ENCRYPTION KEY CONFIGURED: secrets are encrypted with the public development key. "
            "Set [security] encryption_key (base64 of 32 bytes) before storing real secrets."
        )
        return Cipher(_DEVELOPMENT_KEY)
    try:
        key = base64.b64decode(secret.get(), validate=True)
    except binascii.Error:
        raise ConfigError(f"{settings.source}: [security] encryption_key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{settings.source}: [security] encryption_key must be base64 of {KEY_BYTES} bytes,"
            f" got {len(key)}"
        )
    if key == _DEVELOPMENT_KEY and settings.server.mode == "production":  # its source is public
        raise ConfigError(
            f"{settings.source}: [security] encryption_key is the public development key, refused "
            "in production mode"
        )
    return Cipher(key)


def new_key() -> str:
    """A fresh key for `[security] encryption_key`."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()
