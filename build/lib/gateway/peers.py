"""Who is calling: the peer address (socket, or X-Forwarded-For behind trusted proxies),
and CIDR allowlists."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from aiohttp import web

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Cidrs(tuple[IPNetwork, ...]):
    """An allowlist: a tuple of networks that hashes by identity, so the per-peer caches below
    cost one dict lookup (hashing the networks themselves runs Python code per network)."""

    __slots__ = ()
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other


def networks(cidrs: Iterable[str]) -> Cidrs:
    return Cidrs(ipaddress.ip_network(c, strict=False) for c in cidrs)


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
    if isinstance(nets, Cidrs):
        return _contains_cached(nets, addr)
    return any(addr in n for n in nets)


@functools.lru_cache(maxsize=4096)
def _contains_cached(nets: Cidrs, addr: IPAddress) -> bool:
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
