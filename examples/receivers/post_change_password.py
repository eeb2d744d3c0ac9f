"""A post-change-password receiver: after a password change, end the user's other sessions
(here: print what would be revoked).

    WEBHOOK_SECRET=whsec_... python examples/receivers/post_change_password.py --port 9005

Point the hook's `url` at http://HOST:PORT/post-change-password.
"""

from __future__ import annotations

import argparse
import os

from aiohttp import web

from gateway.client import Envelope, PostChangePasswordEvent, Receiver, answers


async def on_password_changed(event: PostChangePasswordEvent) -> Envelope:
    changed = event.user.last_password_reset
    print(f"revoke sessions of user {event.user.id} (password changed {changed})", flush=True)
    return answers.success()


def make_app(secret: str) -> web.Application:
    app = web.Application()
    app.router.add_post("/post-change-password",
                        Receiver(PostChangePasswordEvent, secret).aiohttp(on_password_changed))
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9005)
    args = parser.parse_args()
    web.run_app(make_app(os.environ["WEBHOOK_SECRET"]), host=args.host, port=args.port, print=None)
