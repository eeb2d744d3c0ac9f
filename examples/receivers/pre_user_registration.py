"""A pre-user-registration receiver: refuse signups from blocked email domains with a message
for the user, and store a plan on every other new user.

    WEBHOOK_SECRET=whsec_... BLOCKED_DOMAINS=spam.example python examples/receivers/pre_user_registration.py

Point the hook's `url` at http://HOST:PORT/pre-user-registration.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.client import Envelope, PreUserRegistrationEvent, Receiver, answers


def screen(blocked: frozenset[str]) -> Callable[[PreUserRegistrationEvent], Awaitable[Envelope]]:
    async def on_signup(event: PreUserRegistrationEvent) -> Envelope:
        domain = (event.user.email or "").rpartition("@")[2].lower()
        if domain in blocked:
            return answers.deny("Signups from this email domain are not accepted.",
                                message=f"signup refused: domain {domain} is blocked")
        return answers.add_metadata(
            user_metadata={"onboarding": "pending"},
            app_metadata={"plan": "trial", "connection": event.context.get("connection", {}).get("name")},
        )

    return on_signup


def make_app(secret: str, blocked: frozenset[str] = frozenset({"blocked.example"})) -> web.Application:
    app = web.Application()
    receiver = Receiver(PreUserRegistrationEvent, secret)
    app.router.add_post("/pre-user-registration", receiver.aiohttp(screen(blocked)))
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    args = parser.parse_args()
    domains = os.environ.get("BLOCKED_DOMAINS", "blocked.example").split(",")
    blocked = frozenset(d.strip().lower() for d in domains)
    web.run_app(make_app(os.environ["WEBHOOK_SECRET"], blocked), host=args.host, port=args.port, print=None)
