"""A send-phone-message receiver: deliver the one-time code. This one prints the message
instead of calling an SMS provider; replace `deliver` with your provider's client.

    WEBHOOK_SECRET=whsec_... python examples/receivers/send_phone_message.py --port 9003

Point the hook's `url` at http://HOST:PORT/send-phone-message.
"""

from __future__ import annotations

import argparse
import os

from aiohttp import web

from gateway.client import Envelope, Receiver, SendPhoneMessageEvent, answers


def deliver(recipient: str, text: str, channel: str) -> str:
    """Send `text` (the provider's message id back). Here: print it."""
    print(f"{channel} to {recipient}: {text}", flush=True)
    return "console-1"


async def on_message(event: SendPhoneMessageEvent) -> Envelope:
    if not event.recipient.startswith("+"):
        return answers.send_failed("the recipient is not an E.164 number")
    message_id = deliver(event.recipient, event.text, event.message_type)
    return answers.success({"messageId": message_id})


def make_app(secret: str) -> web.Application:
    app = web.Application()
    app.router.add_post("/send-phone-message", Receiver(SendPhoneMessageEvent, secret).aiohttp(on_message))
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9003)
    args = parser.parse_args()
    web.run_app(make_app(os.environ["WEBHOOK_SECRET"]), host=args.host, port=args.port, print=None)
