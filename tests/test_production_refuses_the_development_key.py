"""Production mode refuses the public development encryption key, even when it is set
explicitly: anyone can derive it from the gateway's source and decrypt the stored secrets."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.crypto import new_key
from gateway.errors import ConfigError
from gateway.settings import load

# Derived as gateway/crypto.py derives it: the text is in the public source.
PUBLIC_KEY = base64.b64encode(
    hashlib.sha256(b"hooks-gateway development key: never use in production").digest()
).decode()


def settings_file(tmp_path: Path, mode: str, key: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[server]\nmode = "{mode}"\n[database]\nurl = "sqlite:///{tmp_path}/g.db"\n'
        f'[auth]\nhs256_secret = "{"s" * 40}"\n[security]\nencryption_key = "{key}"\n'
    )
    return path


def test_production_refuses_the_development_key_set_in_the_file(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "production", PUBLIC_KEY)
    with pytest.raises(ConfigError, match="development key") as info:
        create_app(load(path, environ={}))
    assert "encryption_key" in str(info.value) and str(path) in str(info.value)
    assert PUBLIC_KEY not in str(info.value)


def test_production_refuses_the_development_key_set_in_the_environment(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "production", new_key())
    settings = load(path, environ={"GATEWAY_SECURITY_ENCRYPTION_KEY": PUBLIC_KEY})
    with pytest.raises(ConfigError, match="development key"):
        create_app(settings)


def test_production_accepts_a_key_of_its_own_and_development_the_public_one(tmp_path: Path) -> None:
    create_app(load(settings_file(tmp_path, "production", new_key()), environ={}))
    create_app(load(settings_file(tmp_path, "development", PUBLIC_KEY), environ={}))
