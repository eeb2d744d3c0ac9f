"""A receiver for a `v1a` (Ed25519) hook, verifying with plain `cryptography`.

The official `standardwebhooks` library verifies only `v1` (HMAC) signatures today. A hook
created with `"signatureScheme": "v1a"` is signed with an Ed25519 key that never leaves the
gateway; its receiver needs only the public key, `whpk_...`, from
GET /api/v2/hooks/{id}/signing-secret (or, without a token, GET /v1/signing-keys/{tenant}/{id}).
Pin the key in the receiver's configuration: never take one from the request itself.

Per Standard Webhooks, the signed content is `{webhook-id}.{webhook-timestamp}.{raw body}` and
`webhook-signature` is a space-separated list such as `v1a,<base64 of the 64-byte signature>`
(two during a key rotation: any valid one is enough).

    WEBHOOK_PUBLIC_KEY=whpk_... python examples/receiver_v1a.py --port 9000
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import time
from collections.abc import Mapping, Sequence

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOLERANCE_S = 300  # how far the timestamp may be from now, either way (the standard's advice)


def load_public_key(whpk: str) -> Ed25519PublicKey:
    """`whpk_` + base64 of the 32-byte Ed25519 public key."""
    if not whpk.startswith("whpk_"):
        raise ValueError("expected a whpk_ public key")
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(whpk.removeprefix("whpk_"), validate=True))


def verify_v1a(
    body: bytes, headers: Mapping[str, str], keys: Sequence[Ed25519PublicKey], *, now: float | None = None
) -> bool:
    """True when the request's timestamp is fresh and one of its `v1a` signatures is valid for
    `body` under one of `keys` (several while the hook's key rotates)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    timestamp = lowered.get("webhook-timestamp", "").strip()
    if not msg_id or not timestamp.isdigit() or not timestamp.isascii():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_S:
        return False
    signed = f"{msg_id}.{timestamp}.".encode() + body  # the raw body, exactly as received
    for candidate in lowered.get("webhook-signature", "").split():
        version, _, encoded = candidate.partition(",")
        if version != "v1a":
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        for key in keys:
            try:
                key.verify(signature, signed)
            except InvalidSignature:
                continue
            return True
    return False


KEYS = web.AppKey("keys", tuple)


async def credentials_exchange(request: web.Request) -> web.Response:
    body = await request.read()
    if not verify_v1a(body, request.headers, request.app[KEYS]):
        return web.json_response({"error": "bad signature"}, status=401)
    event = json.loads(body)
    scope = [*event.get("scope", []), "read:reports"]
    claims = {"https://example.com/client": event["client"]["id"]}
    return web.json_response({"status": "success", "data": {"scope": scope, **claims}})


def make_app(*public_keys: str) -> web.Application:
    app = web.Application()
    app[KEYS] = tuple(load_public_key(k) for k in public_keys)
    app.router.add_post("/credentials-exchange", credentials_exchange)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    web.run_app(make_app(os.environ["WEBHOOK_PUBLIC_KEY"]), host="127.0.0.1", port=args.port)
