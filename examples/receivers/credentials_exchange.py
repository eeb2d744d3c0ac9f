"""A credentials-exchange receiver: grant an extra scope and add namespaced claims to the
access token of a `client_credentials` grant; refuse an `admin` scope (OAuth2 invalid_scope).

    WEBHOOK_SECRET=whsec_... python examples/receivers/credentials_exchange.py --port 9001

The secret is the hook's (GET /api/v2/hooks/{id}/signing-secret); point the hook's `url` at
http://HOST:PORT/credentials-exchange.
"""

from __future__ import annotations

import argparse
import os

from aiohttp import web

from gateway.client import CredentialsExchangeEvent, Envelope, Receiver, answers

NAMESPACE = "https://example.com/"  # claims must be named by a URL of your own


async def on_token(event: CredentialsExchangeEvent) -> Envelope:
    if "admin" in event.scope:
        return answers.invalid_scope("the admin scope is not granted to clients")
    claims = {
        f"{NAMESPACE}client": event.client.id,
        f"{NAMESPACE}tier": event.client.metadata.get("tier", "free"),
    }
    return answers.grant([*event.scope, "read:reports"], claims)


def make_app(secret: str) -> web.Application:
    app = web.Application()
    app.router.add_post("/credentials-exchange", Receiver(CredentialsExchangeEvent, secret).aiohttp(on_token))
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    web.run_app(make_app(os.environ["WEBHOOK_SECRET"]), host=args.host, port=args.port, print=None)
