"""A receiver for the gateway's credentials-exchange hook, in a few lines of aiohttp.

It verifies the Standard Webhooks signature with the `standardwebhooks` library and the hook's
`whsec_` signing secret (GET /api/v2/hooks/{id}/signing-secret), then answers Auth0's envelope:
the scopes to grant and a namespaced custom claim.

    WEBHOOK_SECRET=whsec_... python examples/receiver.py --port 9000
"""

from __future__ import annotations

import argparse
import json
import os

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = web.AppKey("webhook", Webhook)


async def credentials_exchange(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        request.app[SECRET].verify(body, dict(request.headers))
    except WebhookVerificationError:
        return web.json_response({"error": "bad signature"}, status=401)
    event = json.loads(body)
    scope = [*event.get("scope", []), "read:reports"]
    claims = {"https://example.com/client": event["client"]["id"]}
    return web.json_response({"status": "success", "data": {"scope": scope, **claims}})


def make_app(secret: str) -> web.Application:
    app = web.Application()
    app[SECRET] = Webhook(secret)
    app.router.add_post("/credentials-exchange", credentials_exchange)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    web.run_app(make_app(os.environ["WEBHOOK_SECRET"]), host=args.host, port=args.port)
