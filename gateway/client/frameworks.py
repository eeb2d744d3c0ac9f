"""Thin adapters of `Receiver` to aiohttp, Starlette (and so FastAPI) and Flask.

Each reads the raw body (bounded), hands it with the headers to the receiver, and writes the
`(status, JSON)` it gets back. Each imports its framework only when it is called, so that the
SDK installs and imports without any of them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .errors import BodyTooLarge

if TYPE_CHECKING:
    import flask
    from aiohttp import web
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import Response as StarletteResponse

    from .receiver import E, Handler, Receiver, SyncHandler


def _too_large(receiver: Receiver[Any]) -> tuple[int, dict[str, Any]]:
    exc = BodyTooLarge(f"the body is over {receiver.max_body_bytes} bytes")
    return exc.status, exc.body()


def _over(receiver: Receiver[Any], content_length: int | None) -> bool:
    return content_length is not None and content_length > receiver.max_body_bytes


def aiohttp_handler(
    receiver: Receiver[E], handler: Handler[E]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        if _over(receiver, request.content_length):
            status, payload = _too_large(receiver)
            return web.json_response(payload, status=status)
        # Read by hand, not `request.read()`: a chunked body's size is learnt while reading, and
        # aiohttp's own bound (`client_max_size`) answers a plain-text 413 of its own.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > receiver.max_body_bytes:
                status, payload = _too_large(receiver)
                return web.json_response(payload, status=status)
            chunks.append(chunk)
        status, payload = await receiver.answer_async(b"".join(chunks), request.headers, handler)
        return web.json_response(payload, status=status)

    return handle


def starlette_endpoint(
    receiver: Receiver[E], handler: Handler[E]
) -> Callable[[StarletteRequest], Awaitable[StarletteResponse]]:
    from starlette.responses import JSONResponse

    async def endpoint(request: StarletteRequest) -> StarletteResponse:
        length = request.headers.get("content-length")
        if _over(receiver, int(length) if length and length.isdigit() else None):
            status, payload = _too_large(receiver)
            return JSONResponse(payload, status_code=status)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > receiver.max_body_bytes:
                status, payload = _too_large(receiver)
                return JSONResponse(payload, status_code=status)
            chunks.append(chunk)
        status, payload = await receiver.answer_async(b"".join(chunks), request.headers, handler)
        return JSONResponse(payload, status_code=status)

    return endpoint


def flask_view(receiver: Receiver[E], handler: SyncHandler[E]) -> Callable[[], flask.Response]:
    import flask

    def view() -> flask.Response:
        request = flask.request
        if _over(receiver, request.content_length):
            status, payload = _too_large(receiver)
        else:
            body = request.stream.read(receiver.max_body_bytes + 1)
            if len(body) > receiver.max_body_bytes:
                status, payload = _too_large(receiver)
            else:
                status, payload = receiver.answer(body, dict(request.headers.items()), handler)
        return flask.Response(json.dumps(payload), status=status, mimetype="application/json")

    # Flask names a view's endpoint after its function: one per handler, not one `view` for all.
    view.__name__ = getattr(handler, "__name__", "receiver")
    return view
