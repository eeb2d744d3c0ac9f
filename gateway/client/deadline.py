"""The call's deadline on every socket wait of the sync client.

httpx's timeouts are per operation (the connect, each read, each write), so a gateway that
sends its answer a byte at a time, each byte within the timeout, would hold a call far past
its deadline. The async session cancels the whole request at the deadline (an anyio cancel
scope). A thread cannot be cancelled, so the sync session's own transport clamps each socket
wait to what is left of the deadline of the call running on that thread (a context variable),
and a wait with nothing left fails as a timeout, which the session reports as
`DeadlineExceeded`.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

# `time.monotonic()` when the call running in this context must end; None: no call.
_ENDS_AT: ContextVar[float | None] = ContextVar("gateway_client_call_ends_at", default=None)


@contextmanager
def deadline(seconds_left: float) -> Iterator[None]:
    """Socket waits of this thread's requests end within `seconds_left` from now."""
    token = _ENDS_AT.set(time.monotonic() + seconds_left)
    try:
        yield
    finally:
        _ENDS_AT.reset(token)


def _clamp(timeout: float | None, timeout_error: type[Exception]) -> float | None:
    ends_at = _ENDS_AT.get()
    if ends_at is None:
        return timeout
    left = ends_at - time.monotonic()
    if left <= 0:
        raise timeout_error("the call's deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def transport(verify: ssl.SSLContext | bool) -> httpx.HTTPTransport:
    """httpx's own transport, its sockets bound by the call's deadline (`deadline()`)."""
    made = httpx.HTTPTransport(verify=verify)
    pool = made._pool  # httpx builds its httpcore pool privately: give it our network backend
    if not isinstance(pool, httpcore.ConnectionPool):
        raise RuntimeError("this httpx version builds its transport differently: pass transport=")
    pool._network_backend = _Backend(pool._network_backend)
    return made
