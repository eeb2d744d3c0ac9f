"""A receiver URL made ready to send to: checked once, parsed once, its request head rendered once.

Hooks are called again and again at the same few URLs, so `Target.of` is cached: the static
check (scheme, user-info, a literal refused address), the parse and the bytes of the request
line and `Host` header are paid once per URL, not per request.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import yarl

from ..egress import check_url


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    host: str  # what DNS and TLS (SNI, certificate) are asked about: IDNA-encoded, no brackets
    port: int
    tls: bool
    head: bytes  # b"POST /path?query HTTP/1.1\r\nHost: host[:port]\r\n"

    @property
    def key(self) -> tuple[str, int, bool]:
        """Connections are pooled by this: same host, port and scheme."""
        return (self.host, self.port, self.tls)

    @staticmethod
    def of(url: str, *, allow_http: bool, allow_cidrs: Any) -> Target:
        """The checked target of `url`; raises `BadRequest` for a URL the policy refuses."""
        return _target(url, allow_http, allow_cidrs)


@functools.lru_cache(maxsize=4096)
def _target(url: str, allow_http: bool, allow_cidrs: Any) -> Target:
    # allow_cidrs is a peers.Cidrs: hashed by identity, so the cache is per allowlist. A refusal
    # raises and is not cached.
    check_url(url, allow_http=allow_http, allow_cidrs=allow_cidrs)
    parsed = yarl.URL(url)
    tls = parsed.scheme == "https"
    port = parsed.port or (443 if tls else 80)
    host = parsed.raw_host or ""
    path = parsed.raw_path_qs or "/"
    head = f"POST {path} HTTP/1.1\r\nHost: {parsed.host_port_subcomponent}\r\n".encode("ascii")
    return Target(url=url, host=host, port=port, tls=tls, head=head)
