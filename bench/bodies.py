"""Event bodies the auth server would forward, as bytes."""

from __future__ import annotations

import json
from pathlib import Path

CREDENTIALS_EXCHANGE = {
    "audience": "https://api.example.com/",
    "client": {"id": "bench-client", "name": "Bench", "tenant": "bench", "metadata": {}},
    "scope": ["read", "write"],
    "context": {"ip": "127.0.0.1", "userAgent": "bench"},
}

POST_USER_REGISTRATION = {
    "user": {
        "id": "auth0|5f7c8ec7c33c6c004bbafe82", "tenant": "bench", "username": "jane",
        "email": "jane@example.com", "emailVerified": False, "phoneNumber": None,
        "phoneNumberVerified": False, "user_metadata": {}, "app_metadata": {},
    },
    "context": {
        "requestLanguage": "en",
        "connection": {"id": "con_bench", "name": "Username-Password-Authentication", "tenant": "bench"},
    },
}


def encode(body: dict[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def write(workdir: Path, name: str, body: dict[str, object]) -> Path:
    path = workdir / f"{name}.json"
    path.write_bytes(encode(body))
    return path
