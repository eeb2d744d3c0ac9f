"""The egress (SSRF) guard: URL rules, the address classifier, the guarded resolver/connector.

A hook URL is checked twice. `check_url` runs when a hook is created or updated and refuses
what is plainly wrong (scheme, user-info, a literal refused address, a host name DNS cannot
carry) without any DNS; the outbound client runs it again on every URL it sends to. At
delivery time the outbound client (`gateway.transport`) resolves through `GuardedResolver`,
which checks every address a host resolves to (literal addresses too) and raises
`DestinationRefused` if any is refused; the client then connects only to those checked
addresses, so there is no check-then-connect race with DNS.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import NamedTuple

import aiohttp
import idna
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gateway.errors import BadRequest, DestinationRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Response limits, in one place (header limits: gateway/transport/connection.py).
MAX_SYNC_BODY_BYTES = 256 * 1024  # longest answer read from a receiver; longer fails the attempt
MAX_STORED_BODY_BYTES = 4 * 1024  # body kept with a delivery attempt
DNS_CACHE_TTL_S = 10  # seconds a checked DNS answer is reused


class RefusedRange(NamedTuple):
    network: IPNetwork
    name: str


def _refused(cidr: str, name: str) -> RefusedRange:
    return RefusedRange(ipaddress.ip_network(cidr), name)


REFUSED_RANGES: tuple[RefusedRange, ...] = (
    _refused("0.0.0.0/8", "this network"),
    _refused("10.0.0.0/8", "private"),
    _refused("100.64.0.0/10", "shared address space (CGNAT)"),
    _refused("127.0.0.0/8", "loopback"),
    _refused("169.254.0.0/16", "link-local (cloud metadata)"),
    _refused("172.16.0.0/12", "private"),
    _refused("192.0.0.0/24", "IETF protocol assignments"),
    _refused("192.0.2.0/24", "documentation (TEST-NET-1)"),
    _refused("192.88.99.0/24", "6to4 relay anycast"),
    _refused("192.168.0.0/16", "private"),
    _refused("198.18.0.0/15", "benchmarking"),
    _refused("198.51.100.0/24", "documentation (TEST-NET-2)"),
    _refused("203.0.113.0/24", "documentation (TEST-NET-3)"),
    _refused("224.0.0.0/4", "multicast"),
    _refused("240.0.0.0/4", "reserved"),
    _refused("255.255.255.255/32", "limited broadcast"),
    _refused("::/128", "unspecified"),
    _refused("::1/128", "loopback"),
    _refused("::/96", "IPv4-compatible (deprecated)"),
    _refused("::ffff:0:0:0/96", "IPv4-translated"),
    _refused("64:ff9b:1::/48", "local-use NAT64"),
    _refused("100::/64", "discard-only"),
    _refused("2001::/32", "Teredo"),
    _refused("2001:2::/48", "benchmarking"),
    _refused("fec0::/10", "site-local (deprecated)"),
    _refused("fc00::/7", "unique local"),
    _refused("fe80::/10", "link-local"),
    _refused("ff00::/8", "multicast"),
    _refused("2001:db8::/32", "documentation"),
)

# IPv6 ranges that carry an IPv4 address: the embedded address is what gets checked.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # IPv4-mapped: the last 32 bits
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # NAT64 well-known prefix: the last 32 bits
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")  # 6to4: bits 16..48


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address in _MAPPED or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    return None


def classify(address: IPAddress, allow_cidrs: Sequence[IPNetwork]) -> str | None:
    """Return the refused range `address` falls in (e.g. "127.0.0.0/8"), or None if allowed."""
    if any(address in network for network in allow_cidrs):
        return None
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return classify(embedded, allow_cidrs)
    matches = [r.network for r in REFUSED_RANGES if address in r.network]
    # Name the most specific range: 255.255.255.255 is "limited broadcast", not just "reserved".
    return str(max(matches, key=lambda network: network.prefixlen)) if matches else None


def _ipv4_part(part: str) -> int | None:
    """One part of an inet_aton-style address: decimal, 0x-hex or 0-octal."""
    if part[:2] in ("0x", "0X"):
        digits, base, allowed = part[2:], 16, "0123456789abcdefABCDEF"
        if not digits:
            return 0  # "0x" alone is zero, as browsers read it
    elif len(part) > 1 and part.startswith("0"):
        digits, base, allowed = part[1:], 8, "01234567"
    else:
        digits, base, allowed = part, 10, "0123456789"
    if not digits or any(c not in allowed for c in digits):
        return None
    return int(digits, base)


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    if host.endswith("."):
        host = host[:-1]  # browsers accept one trailing dot
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or "" in parts:
        return None
    numbers = [_ipv4_part(part) for part in parts]
    if any(n is None for n in numbers):
        return None
    *head, last = [n for n in numbers if n is not None]
    # Leading parts are one byte each; the last part fills the remaining bytes.
    if any(n > 0xFF for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def parse_ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Read `host` as a literal address, in any notation inet_aton or a browser accepts.

    Returns None for a hostname, and for anything with an out-of-range part.
    """
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]  # brackets only ever hold IPv6
    if bracketed or ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None
    return _parse_ipv4(host)


def check_url(url: str, *, allow_http: bool, allow_cidrs: Sequence[IPNetwork]) -> None:
    """Refuse a hook URL that is plainly not deliverable; hostnames are not resolved here."""
    if any(c <= " " or c == "\x7f" for c in url):
        # yarl drops tabs and line breaks silently: what is stored must be what is sent.
        raise BadRequest("url must not contain spaces or control characters")
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:  # UnicodeError (an invalid IDNA name) included
        raise BadRequest(f"url is not a valid URL: {exc}") from exc
    except IndexError:  # yarl on "https://[]@/": empty brackets before the user-info's "@"
        raise BadRequest("url is not a valid URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parsed.scheme not in schemes:
        raise BadRequest(f"url must use {' or '.join(schemes)}, not {parsed.scheme or 'no scheme'!r}")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise BadRequest("url must not contain user-info (user:password@)")
    host = parsed.raw_host
    if not host:
        raise BadRequest("url must have a host")
    if parsed.explicit_port == 0:
        raise BadRequest("url must not use port 0")
    address = parse_ip_literal(host)
    if address is None:
        problem = hostname_problem(host)
        if problem is not None:
            raise BadRequest(f"url has an invalid host name: {problem}")
    elif isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise BadRequest("url must not hold an IPv6 zone id (%25eth0): it names an interface of one machine")
    else:
        range_ = classify(address, allow_cidrs)
        if range_ is not None:
            raise BadRequest(f"url is not allowed: {DestinationRefused(str(address), range_)}")


MAX_LABEL_BYTES = 63  # RFC 1035 2.3.4
MAX_NAME_BYTES = 253  # RFC 1035 2.3.4: 255 on the wire, less the first length byte and the root
_LDH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def hostname_problem(host: str) -> str | None:
    """Why `host` (a URL's host as sent: IDNA-encoded, not an address) is not a name DNS can
    carry, or None. Letters, digits and hyphens (LDH, RFC 1123 2.1) in labels of 1 to 63 bytes
    that neither start nor end with a hyphen, 253 bytes in all, a final dot allowed; an `xn--`
    label must be valid IDNA (RFC 5891), and the last label must not be a number (a name that
    reads as a refused address to some resolvers; an IPv4 address is parsed as one before)."""
    name = host[:-1] if host.endswith(".") else host
    if not name:
        return "empty"
    if len(name) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    labels = name.split(".")
    for label in labels:
        if not label:
            return "an empty label"
        if len(label) > MAX_LABEL_BYTES:
            return f"a label longer than {MAX_LABEL_BYTES} bytes"
        if not _LDH.issuperset(label):
            return "only letters, digits, hyphens and dots may be used (or an IP address)"
        if label[0] == "-" or label[-1] == "-":
            return "a label starts or ends with a hyphen"
    if labels[-1].isdigit():
        return "the last label is a number, but the host is not an IP address"
    if any(label[:4].lower() == "xn--" for label in labels):
        try:
            idna.decode(name)
        except idna.IDNAError:
            return "not a valid internationalized domain name (IDNA)"
    return None


def _check(host: str, allow_cidrs: Sequence[IPNetwork]) -> None:
    """Raise DestinationRefused unless `host`, an address about to be connected to, is allowed."""
    address = parse_ip_literal(host)
    if address is None:
        # Fail closed: something that is not an address would be resolved again, unchecked.
        raise DestinationRefused(host, "not an IP address")
    range_ = classify(address, allow_cidrs)
    if range_ is not None:
        raise DestinationRefused(str(address), range_)


class GuardedResolver(AbstractResolver):
    """Resolve with `inner`, then refuse the whole answer if any address in it is refused."""

    def __init__(self, *, allow_cidrs: Sequence[IPNetwork], inner: AbstractResolver | None = None) -> None:
        self._allow_cidrs = tuple(allow_cidrs)
        self._owns_inner = inner is None
        self._inner = aiohttp.ThreadedResolver() if inner is None else inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        literal = parse_ip_literal(host)
        if literal is not None:
            # "0x7f.1" and friends: use the address itself, never ask DNS about it.
            results = [
                ResolveResult(
                    hostname=host,
                    host=str(literal),
                    port=port,
                    family=socket.AF_INET if literal.version == 4 else socket.AF_INET6,
                    proto=0,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            ]
        else:
            results = await self._inner.resolve(host, port, family)
        for result in results:
            _check(result["host"], self._allow_cidrs)
        return results

    async def close(self) -> None:
        if self._owns_inner:
            await self._inner.close()
