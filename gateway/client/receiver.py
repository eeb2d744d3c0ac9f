"""A receiver helper: verify the gateway's signature, parse the point's event, answer.

    receiver = Receiver(CredentialsExchangeEvent, secret="whsec_...")

    async def on_token(event: CredentialsExchangeEvent) -> Envelope:
        return answers.grant([*event.scope, "read:reports"], {"https://example.com/tier": "gold"})

    app.router.add_post("/credentials-exchange", receiver.aiohttp(on_token))      # aiohttp
    app.add_route("/credentials-exchange", receiver.starlette(on_token), ["POST"])  # Starlette, FastAPI
    app.add_url_rule("/credentials-exchange", view_func=receiver.flask(on_token_sync),
                     methods=["POST"])                                             # Flask (sync handler)

Verification is Standard Webhooks v1 with a `whsec_` secret, as gateway/signing.py does it
(constant-time compare, any of the space-separated signatures, a timestamp within the
tolerance either way), or v1a with a v1a hook's `whpk_` public key (gateway/client/ed25519.py).
A request that fails it is answered `401`, a body that is not the point's event `400`, a body
over the limit `413`, each with `{statusCode, error, message}`; an exception in the handler
is the framework's (a `500`, which the gateway counts as a failed attempt and retries).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gateway.signing import DEFAULT_TOLERANCE_S, HEADER_ID, HEADER_TIMESTAMP, SignatureError

from .answers import Envelope, success
from .ed25519 import Verifier
from .errors import BodyTooLarge, EventInvalid, ReceiverError, SignatureInvalid
from .events import Event

if TYPE_CHECKING:
    import flask
    from aiohttp import web
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import Response as StarletteResponse

E = TypeVar("E", bound=Event)

#: What a handler returns: an envelope (gateway/client/answers.py), or None for plain success.
Answer = Envelope | None
Handler = Callable[[E], Answer | Awaitable[Answer]]
SyncHandler = Callable[[E], Answer]

DEFAULT_MAX_BODY_BYTES = 1_048_576  # the gateway sends at most its ingest limit (256 KiB by default)


class Receiver(Generic[E]):
    """Verifies and parses the deliveries of one point, signed with the hook's secret(s)."""

    def __init__(
        self,
        event_type: type[E],
        secret: str | Sequence[str],
        *,
        tolerance_s: int = DEFAULT_TOLERANCE_S,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`secret`: the hook's `whsec_` signing secret (GET /api/v2/hooks/{id}/signing-secret),
        or a v1a hook's `whpk_` public key, or several, e.g. the old and the new one while you
        switch. `tolerance_s`: how far the delivery's timestamp may be from `clock()`, either
        way, in seconds."""
        self.event_type = event_type
        self.max_body_bytes = max_body_bytes
        self._signer = Verifier([secret] if isinstance(secret, str) else list(secret))
        self._tolerance_s = tolerance_s
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> E:
        """The event of a request with this raw `body` and `headers`, or `SignatureInvalid` /
        `EventInvalid`. The signature is checked before the body is parsed."""
        if len(body) > self.max_body_bytes:
            raise BodyTooLarge(f"the body is over {self.max_body_bytes} bytes")
        try:
            self._signer.verify(body, headers, now=int(self._clock()), tolerance_s=self._tolerance_s)
        except SignatureError as exc:
            raise SignatureInvalid(f"webhook signature refused: {exc}") from None
        except ValueError:  # a timestamp of thousands of digits, an id that is not UTF-8
            raise SignatureInvalid("webhook signature refused: malformed webhook headers") from None
        lowered = {k.lower(): v for k, v in headers.items() if k.lower() in (HEADER_ID, HEADER_TIMESTAMP)}
        try:
            decoded = json.loads(body)
        except ValueError:
            raise EventInvalid("the body is not JSON") from None
        return self.event_type.parse(
            decoded, webhook_id=lowered[HEADER_ID], timestamp=int(lowered[HEADER_TIMESTAMP].strip())
        )

    def answer(
        self, body: bytes, headers: Mapping[str, str], handler: SyncHandler[E]
    ) -> tuple[int, dict[str, Any]]:
        """`(status, JSON)` to answer a request: the handler's envelope, or the refusal."""
        try:
            event = self.verify(body, headers)
        except ReceiverError as exc:
            return exc.status, exc.body()
        result = handler(event)
        if inspect.isawaitable(result):
            raise TypeError("an async handler needs answer_async() (or the aiohttp/Starlette adapter)")
        return 200, dict(result if result is not None else success())

    async def answer_async(
        self, body: bytes, headers: Mapping[str, str], handler: Handler[E]
    ) -> tuple[int, dict[str, Any]]:
        """As `answer`, for a handler that may be a coroutine function."""
        try:
            event = self.verify(body, headers)
        except ReceiverError as exc:
            return exc.status, exc.body()
        result = handler(event)
        if inspect.isawaitable(result):
            result = await result
        return 200, dict(result if result is not None else success())

    # Adapters (gateway/client/frameworks.py); each imports its framework when called.

    def aiohttp(self, handler: Handler[E]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """An aiohttp request handler: `app.router.add_post(path, receiver.aiohttp(handler))`."""
        from .frameworks import aiohttp_handler

        return aiohttp_handler(self, handler)

    def starlette(self, handler: Handler[E]) -> Callable[[StarletteRequest], Awaitable[StarletteResponse]]:
        """A Starlette endpoint, for Starlette and FastAPI: `app.add_route(path, endpoint, ["POST"])`."""
        from .frameworks import starlette_endpoint

        return starlette_endpoint(self, handler)

    def flask(self, handler: SyncHandler[E]) -> Callable[[], flask.Response]:
        """A Flask view: `app.add_url_rule(path, view_func=receiver.flask(handler), methods=["POST"])`."""
        from .frameworks import flask_view

        return flask_view(self, handler)
