"""Helpers for tests of operational events (gateway/delivery/ops_events.py): wait for events of
a type at a real loopback endpoint, each body verified with the `standardwebhooks` library."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.signing import new_signing_secret


def operator_settings(url: str, secret: str | None = None, **events: Any) -> dict[str, Any]:
    """The `[events]` section for an operator endpoint at `url`."""
    return {"operator_url": url, "operator_secret": secret or new_signing_secret(), **events}


def verified(secret: str, body: bytes, headers: dict[str, str], *, any_time: bool = False) -> Any:
    """The body, once the library has verified its signature. `any_time`: for requests signed
    under a test's moved clock, the library's own `sign` checks the signature at the request's
    `webhook-timestamp`, days from now (its `verify` refuses any more than 5 minutes off)."""
    if not any_time:
        return Webhook(secret).verify(body, headers)
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp = datetime.fromtimestamp(int(lowered["webhook-timestamp"]), tz=UTC)
    expected = Webhook(secret).sign(lowered["webhook-id"], stamp, body.decode())
    if expected not in lowered["webhook-signature"].split(" "):
        raise WebhookVerificationError("no matching signature found")
    return json.loads(body)


async def events_of(
    rx: Any, kind: str, *, secret: str, count: int = 1, any_time: bool = False, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """The first `count` events of type `kind` the endpoint got (each verified), bounded in time."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        found = [verified(secret, r.body, r.headers, any_time=any_time) for r in list(rx.requests)]
        found = [e for e in found if e["type"] == kind]
        if len(found) >= count:
            return found
        if loop.time() > end:
            seen = [json.loads(r.body).get("type") for r in rx.requests]
            raise AssertionError(f"expected {count} {kind} event(s), the endpoint got {seen}")
        await asyncio.sleep(0.02)
