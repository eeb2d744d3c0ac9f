"""A pytest plugin that keeps tests on loopback: `pytest_plugins = ["netguard"]`.

Every outbound connection (and DNS lookup of a name other than localhost) is checked before
it happens. One to an address outside 127.0.0.0/8 and ::1 is blocked with `NetguardBlocked`
(an `OSError`, so no packet leaves and callers see an ordinary connection failure), recorded,
and the test then fails naming the address. Unix sockets pass.

Covered: `socket.socket.connect`/`connect_ex` (and so `socket.create_connection` and the
selector event loop), `socket.getaddrinfo` (and so `loop.getaddrinfo`), and the event loops'
own `sock_connect`/`create_connection`, including uvloop's, which do not go through Python
sockets. Not covered: UDP `sendto`, and C extensions that open their own sockets.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Generator
from typing import Any

import pytest

Attempt = tuple[str, int]

# Refused attempts of the running test; recorded from any thread (getaddrinfo runs in executors).
_attempts: list[Attempt] = []
_reported = 0


class NetguardBlocked(PermissionError):
    """A test tried to reach the network beyond loopback."""

    def __init__(self, host: str, port: int) -> None:
        message = f"netguard: connection to {host}:{port} blocked (tests stay on loopback)"
        super().__init__(errno.EACCES, message)


def _is_loopback_name(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


def _allowed(host: str) -> bool:
    """Loopback addresses, and the name localhost (which resolves from the hosts file)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return _is_loopback_name(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _guard(host: object, port: object) -> None:
    host_text = host.decode() if isinstance(host, bytes) else str(host)
    if not _allowed(host_text):
        port_number = port if isinstance(port, int) else 0
        _attempts.append((host_text, port_number))
        raise NetguardBlocked(host_text, port_number)


def _guard_address(family: int, address: Any) -> None:
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        _guard(address[0], address[1])


def _wrap_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(self: socket.socket, address: Any) -> Any:
        _guard_address(self.family, address)
        return original(self, address)

    return connect


def _wrap_connect_ex(original: Callable[..., Any]) -> Callable[..., Any]:
    def connect_ex(self: socket.socket, address: Any) -> Any:
        try:
            _guard_address(self.family, address)
        except NetguardBlocked as exc:
            return exc.errno  # connect_ex reports failures as an errno
        return original(self, address)

    return connect_ex


def _guard_lookup(host: Any, port: Any) -> None:
    if host is None:
        return
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
        return  # a numeric lookup sends nothing; the connect guard judges the address
    except ValueError:
        if _is_loopback_name(text):
            return
    _attempts.append((text, port if isinstance(port, int) else 0))
    raise socket.gaierror(socket.EAI_NONAME, f"netguard: DNS lookup of {text!r} blocked")


def _wrap_getaddrinfo(original: Callable[..., Any]) -> Callable[..., Any]:
    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        _guard_lookup(host, port)
        return original(host, port, *args, **kwargs)

    return getaddrinfo


def _wrap_loop_getaddrinfo(original: Callable[..., Any]) -> Callable[..., Any]:
    async def getaddrinfo(self: Any, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        _guard_lookup(host, port)
        return await original(self, host, port, *args, **kwargs)

    return getaddrinfo


def _wrap_sock_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    async def sock_connect(self: Any, sock: socket.socket, address: Any) -> Any:
        _guard_address(sock.family, address)
        return await original(self, sock, address)

    return sock_connect


def _wrap_create_connection(original: Callable[..., Any]) -> Callable[..., Any]:
    async def create_connection(
        self: Any, protocol_factory: Any, host: Any = None, port: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        if host is not None:
            for one in [host] if isinstance(host, str | bytes) else host:
                _guard(one, port)
        return await original(self, protocol_factory, host, port, *args, **kwargs)

    return create_connection


_patch = pytest.MonkeyPatch()


def _install(patch: pytest.MonkeyPatch) -> None:
    import asyncio.base_events
    import asyncio.selector_events

    patch.setattr(socket.socket, "connect", _wrap_connect(socket.socket.connect))
    patch.setattr(socket.socket, "connect_ex", _wrap_connect_ex(socket.socket.connect_ex))
    patch.setattr(socket, "getaddrinfo", _wrap_getaddrinfo(socket.getaddrinfo))
    # The stdlib loops: create_connection(host=...) checks names before any DNS; it and
    # sock_connect() end in socket.connect, which is guarded above as well.
    base, selector = asyncio.base_events.BaseEventLoop, asyncio.selector_events.BaseSelectorEventLoop
    patch.setattr(base, "create_connection", _wrap_create_connection(base.create_connection))
    patch.setattr(selector, "sock_connect", _wrap_sock_connect(selector.sock_connect))
    try:
        import uvloop
    except ImportError:
        return
    # uvloop connects and resolves in libuv, out of reach of the socket module.
    loop = uvloop.Loop
    patch.setattr(loop, "create_connection", _wrap_create_connection(loop.create_connection))
    patch.setattr(loop, "sock_connect", _wrap_sock_connect(loop.sock_connect))
    patch.setattr(loop, "getaddrinfo", _wrap_loop_getaddrinfo(loop.getaddrinfo))


def pytest_configure(config: pytest.Config) -> None:
    _install(_patch)


def pytest_unconfigure(config: pytest.Config) -> None:
    _patch.undo()


def _fail_on_new_attempts(when: str) -> None:
    global _reported
    new = _attempts[_reported:]
    _reported = len(_attempts)
    if new:
        names = ", ".join(f"{host}:{port}" for host, port in new)
        pytest.fail(f"netguard: test tried to reach the network beyond loopback during {when}: {names}")


def _phase(when: str) -> Generator[None, object, object]:
    try:
        return (yield)
    finally:
        _fail_on_new_attempts(when)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    global _reported
    _attempts.clear()
    _reported = 0
    return (yield from _phase("setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _phase("call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _phase("teardown"))


@pytest.fixture
def netguard_attempts() -> list[Attempt]:
    """The (host, port) of every refused attempt so far in this test; clear it to forgive them."""
    return _attempts
