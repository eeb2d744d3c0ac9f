"""Who is calling: the peer address (socket, or X-Forwarded-For behind trusted proxies),
and CIDR allowlists."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from aiohttp import web

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@functools.lru_cache(maxsize=4096)
def _address(text: str | None) -> IPAddress | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def contains(nets: Iterable[IPNetwork], addr: IPAddress | None) -> bool:
    if addr is None:
        return False
    if isinstance(nets, tuple):
        return _contains_cached(nets, addr)
    return any(addr in n for n in nets)


@functools.lru_cache(maxsize=4096)
def _contains_cached(nets: tuple[IPNetwork, ...], addr: IPAddress) -> bool:
    """Per (allowlist, peer): the same few peers call again and again (auth servers, proxies)."""
    return any(addr in n for n in nets)


def peer_address(request: web.Request, trusted_proxies: tuple[IPNetwork, ...]) -> IPAddress | None:
    """The socket's peer; behind a trusted proxy, the right-most untrusted X-Forwarded-For entry."""
    peer = None
    transport = request.transport
    if transport is not None:
        info = transport.get_extra_info("peername")
        if isinstance(info, tuple) and info:
            peer = _address(str(info[0]))
    if peer is None or not contains(trusted_proxies, peer):
        return peer
    chain = [p for h in request.headers.getall("X-Forwarded-For", []) for p in h.split(",")]
    last = peer
    for entry in reversed(chain):
        addr = _address(entry)
        if addr is None:
            return None  # an unparsable hop: trust nothing beyond it
        if not contains(trusted_proxies, addr):
            return addr
        last = addr
    return last
