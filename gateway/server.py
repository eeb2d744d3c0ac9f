"""The HTTP server `gateway serve` runs: aiohttp's, with its transport-level errors as JSON.

Requests aiohttp's parser refuses (a request line or header too long, too many headers, a
malformed request line, a NUL in a header, bad chunked framing, a bad `Content-Length`) never
reach the app's middlewares: aiohttp's `RequestHandler.handle_error` answers them in plain text
that quotes the offending bytes, which can be the start of a bearer token. `JsonErrorHandler`
answers them as `{statusCode, error, message}` with a fixed message, never request bytes, and
closes the connection; `GatewayRunner` is an `AppRunner` whose connections use it, and whose
app-level `HTTPException`s that escape the middlewares (a refused `Expect` header) are JSON too.

This hooks into aiohttp at `BaseRunner._make_server` and `Server.__call__` (aiohttp 3.x); the
tests in `tests/test_http_edge.py` send raw bytes to a running server and fail if it changes.

On SIGTERM or SIGINT the listener stays open while the app's `DRAIN` runs (new forwards are
answered `503`, `/readyz` too, and what is in flight finishes within the grace time); only then
are the connections closed. A second signal cuts the grace short (tests/test_graceful_shutdown.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable
from contextlib import suppress
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from .errors import ApiError, BadRequest, RequestHeaderFieldsTooLarge, UriTooLong
from .middleware import error_response

log = logging.getLogger("gateway.http")

KEEPALIVE_TIMEOUT_S = 75.0  # an idle client connection is closed after this (aiohttp's run_app default)
_TOO_MANY_HEADERS = "Too many headers received"  # aiohttp's fixed message for more than max_headers

SHUTDOWN_MIN_S = 0.1  # what is still running once the grace is over gets this long to end

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# The app's own drain (gateway/app.py): close the intake, let what is in flight finish within
# the grace time in seconds, or until the event is set (a second signal), give the rest back.
Drain = Callable[[float, asyncio.Event], Awaitable[None]]
DRAIN: web.AppKey[Drain] = web.AppKey("drain")


class JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, with errors answered as JSON that echoes nothing."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        request = self._current_request
        if request is not None and self._messages and isinstance(self._messages[-1][0], _ErrInfo):
            # The rest of the body of the request being handled is malformed (bad chunk framing):
            # aiohttp's C parser drops that body without an error, so its handler would wait for
            # it forever. It fails now (the middleware answers 400 and closes the connection).
            if not request.content.is_eof():
                request.content.set_exception(web.RequestPayloadError("malformed request body"))
                request.content.feed_eof()  # nothing more will come: aiohttp need not drain it

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp's: an answer has begun, nothing to add
            raise ConnectionError("an answer was already sent, cannot send an error")
        error = self._error_for(status, exc)
        if error.status >= 500:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
        else:  # the exception's text quotes the request's bytes: only its type is logged
            log.info("refused a malformed request from %s: %s", request.remote,
                     type(exc).__name__ if exc is not None else status)
        return json_error(error, close=True)

    def _error_for(self, status: int, exc: BaseException | None) -> ApiError:
        if isinstance(exc, LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else None
            if limit == self.max_line_size and limit != self.max_field_size:
                return UriTooLong("request line too long")
            return RequestHeaderFieldsTooLarge("request header fields too large")
        if isinstance(exc, BadHttpMessage) and exc.message == _TOO_MANY_HEADERS:
            return RequestHeaderFieldsTooLarge("request header fields too large")
        if status == 400 or isinstance(exc, BadHttpMessage):
            return BadRequest("malformed HTTP request")
        if status == 504:
            return _Fixed(504, "request handling timed out")
        return _Fixed(status, "internal error")  # aiohttp calls this with 400, 500 or 504


class _Fixed(ApiError):
    """An error of any status, its reason phrase the standard one."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        try:
            self.error = HTTPStatus(status).phrase
        except ValueError:
            self.error = "Error"


def json_error(error: ApiError, *, close: bool = False) -> web.Response:
    response = error_response(error)
    if close:
        response.force_close()
    return response


def _json_http_exceptions(handler: Handler) -> Handler:
    """`HTTPException`s raised before the app's middlewares run (the `Expect` check) as JSON
    with a fixed message: aiohttp's text quotes the header."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 417:
                return json_error(_Fixed(417, "only \"Expect: 100-continue\" is supported"), close=True)
            return json_error(_Fixed(exc.status, exc.reason), close=True)

    return handle


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An `AppRunner` whose server answers every error as JSON (see the module docstring)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # starts the app, builds aiohttp's server
        return _Server(
            _json_http_exceptions(server.request_handler),
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            **server._kwargs,
        )


def run(
    app: web.Application,
    *,
    host: str,
    port: int,
    shutdown_timeout: float,
    access_log: logging.Logger | None,
    on_ready: Callable[[str], None] = lambda url: None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve `app` until SIGINT or SIGTERM, then shut it down in order: `web.run_app` with
    `GatewayRunner` (run_app builds its own runner and takes no other)."""
    loop = asyncio.new_event_loop()
    main = loop.create_task(_serve(app, host=host, port=port, shutdown_timeout=shutdown_timeout,
                                   access_log=access_log, on_ready=on_ready, ssl_context=ssl_context))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):  # a SIGINT before `_serve` handles signals
        pass
    finally:
        try:
            if not main.done():
                main.cancel()  # runs the runner's cleanup: sites, app shutdown, cleanup contexts
                with suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            rest = asyncio.all_tasks(loop)
            for task in rest:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            asyncio.set_event_loop(None)
            loop.close()


async def _serve(app: web.Application, *, host: str, port: int, shutdown_timeout: float,
                 access_log: logging.Logger | None, on_ready: Callable[[str], None],
                 ssl_context: ssl.SSLContext | None = None) -> None:
    loop = asyncio.get_running_loop()
    stop, cut_short = asyncio.Event(), asyncio.Event()

    def on_signal(name: str) -> None:
        if not stop.is_set():
            log.info("%s: draining for up to %gs (a second signal cuts it short)", name, shutdown_timeout)
            stop.set()
        elif not cut_short.is_set():
            log.warning("%s again: cutting the grace period short", name)
            cut_short.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    runner = GatewayRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout,
                           keepalive_timeout=KEEPALIVE_TIMEOUT_S, access_log=access_log)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)  # HTTPS: [server] tls_cert
        await site.start()
        on_ready(site.name)
        await stop.wait()
        began = loop.time()
        drain = app.get(DRAIN)
        if drain is not None:
            await drain(shutdown_timeout, cut_short)
        left = 0.0 if cut_short.is_set() else shutdown_timeout - (loop.time() - began)
        runner._shutdown_timeout = max(SHUTDOWN_MIN_S, left)  # for requests other than forwards
    finally:
        await runner.cleanup()
