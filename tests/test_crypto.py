"""Encryption of secrets at rest: AES-256-GCM bound to where the value belongs."""

from __future__ import annotations

import base64

import pytest

from gateway.crypto import Cipher, DecryptionError, new_key
from gateway.errors import ConfigError


def cipher() -> Cipher:
    return Cipher(base64.b64decode(new_key()))


def test_a_value_round_trips_and_the_ciphertext_hides_it() -> None:
    c = cipher()
    sealed = c.encrypt("hunter2", "hook-secret:hk_1:x-api-key")
    assert sealed.startswith("v1:")
    assert "hunter2" not in sealed
    assert c.decrypt(sealed, "hook-secret:hk_1:x-api-key") == "hunter2"


def test_the_same_value_encrypts_differently_each_time() -> None:
    c = cipher()
    assert c.encrypt("same", "ctx") != c.encrypt("same", "ctx")


def test_a_ciphertext_moved_to_another_place_does_not_decrypt() -> None:
    c = cipher()
    sealed = c.encrypt("hunter2", "hook-secret:hk_1:a")
    with pytest.raises(DecryptionError):
        c.decrypt(sealed, "hook-secret:hk_2:a")


def test_another_key_or_a_tampered_ciphertext_does_not_decrypt() -> None:
    sealed = cipher().encrypt("hunter2", "ctx")
    with pytest.raises(DecryptionError):
        cipher().decrypt(sealed, "ctx")
    c = cipher()
    sealed = c.encrypt("hunter2", "ctx")
    raw = bytearray(base64.urlsafe_b64decode(sealed[3:]))
    raw[-1] ^= 1
    with pytest.raises(DecryptionError):
        c.decrypt("v1:" + base64.urlsafe_b64encode(bytes(raw)).decode(), "ctx")
    for junk in ("v2:abc", "plain", "v1:!!!", "v1:"):
        with pytest.raises(DecryptionError):
            c.decrypt(junk, "ctx")


def test_a_key_must_be_32_bytes() -> None:
    with pytest.raises(ConfigError):
        Cipher(b"short")
    assert len(base64.b64decode(new_key())) == 32
