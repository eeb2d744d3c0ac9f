"""A post-user-registration receiver: welcome each new user once. Deliveries are at least
once, so a repeat (same `webhook-id`) is acknowledged without a second welcome.

    WEBHOOK_SECRET=whsec_... python examples/receivers/post_user_registration.py --port 9004

Point the hook's `url` at http://HOST:PORT/post-user-registration.
"""

from __future__ import annotations

import argparse
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.client import Envelope, PostUserRegistrationEvent, Receiver, answers

SEEN_MAX = 10_000  # delivery ids remembered (a database table in a real service)


def welcomer() -> Callable[[PostUserRegistrationEvent], Awaitable[Envelope]]:
    seen: OrderedDict[str, None] = OrderedDict()

    async def on_user(event: PostUserRegistrationEvent) -> Envelope:
        if event.webhook_id in seen:
            return answers.success()
        seen[event.webhook_id] = None
        if len(seen) > SEEN_MAX:
            seen.popitem(last=False)
        print(f"welcome mail to {event.user.email} (user {event.user.id})", flush=True)
        return answers.success()

    return on_user


def make_app(secret: str) -> web.Application:
    app = web.Application()
    app.router.add_post("/post-user-registration",
                        Receiver(PostUserRegistrationEvent, secret).aiohttp(welcomer()))
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9004)
    args = parser.parse_args()
    web.run_app(make_app(os.environ["WEBHOOK_SECRET"]), host=args.host, port=args.port, print=None)
