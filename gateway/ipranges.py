"""`GET /v1/ip-ranges`: the gateway's egress addresses, for receivers' firewalls.

Shaped like the ranges documents of cloud providers (and Auth0's own IP allowlist):
`{last_updated_at, regions: {<region>: {ipv4_cidrs, ipv6_cidrs}}, changelog}`, with an `ETag`
(a hash of the document, so it changes with the configuration) and, when the operator
declares `[egress] regions_updated_at`, a `Last-Modified`; either lets a receiver poll cheaply
(`304` when nothing changed). Without a declared date the gateway cannot know when the ranges
last changed, so it sends no `Last-Modified` and answers `If-Modified-Since` in full: a poller
must never be told "not modified" about ranges that did change.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, NamedTuple

from aiohttp import web

from .context import services
from .settings import Settings

CACHE_CONTROL = "public, max-age=300"
UNDATED = "1970-01-01T00:00:00Z"  # last_updated_at when the operator declared no date


class Prepared(NamedTuple):
    body: bytes
    etag: str
    modified: datetime | None


def parse_updated_at(text: str) -> datetime:
    """`regions_updated_at` (ISO 8601, `Z` or an offset; a bare date is midnight UTC), whole seconds."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(microsecond=0)


def document(settings: Settings) -> dict[str, Any]:
    egress = settings.egress
    regions: dict[str, dict[str, list[str]]] = {}
    for region, cidrs in sorted(egress.regions.items()):
        v4 = [str(c) for c in cidrs if ipaddress.ip_network(c, strict=False).version == 4]
        v6 = [str(c) for c in cidrs if ipaddress.ip_network(c, strict=False).version == 6]
        regions[region] = {"ipv4_cidrs": v4, "ipv6_cidrs": v6}
    updated = egress.regions_updated_at or UNDATED
    return {
        "last_updated_at": updated,
        "regions": regions,
        "changelog": [{"date": updated, "change": "current egress ranges", "regions": sorted(regions)}],
    }


def prepare(settings: Settings) -> Prepared:
    """The body and its validators. Cheap enough (a few hundred bytes) to build per request."""
    body = json.dumps(document(settings), indent=2, sort_keys=True).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    declared = settings.egress.regions_updated_at
    return Prepared(body, etag, parse_updated_at(declared) if declared else None)


def _not_modified(request: web.Request, doc: Prepared) -> bool:
    """RFC 9110 section 13.2.2: If-None-Match decides when present, else If-Modified-Since."""
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return "*" in tags or doc.etag in tags
    ims = request.headers.get("If-Modified-Since")
    if not ims or doc.modified is None:
        return False
    try:
        since = parsedate_to_datetime(ims)
    except (TypeError, ValueError, IndexError, OverflowError):  # a 20-digit year or offset overflows
        return False  # an unreadable date is ignored, as RFC 9110 asks
    return since.tzinfo is not None and doc.modified <= since


async def ip_ranges(request: web.Request) -> web.Response:
    doc = prepare(services(request).settings)
    headers = {"ETag": doc.etag, "Cache-Control": CACHE_CONTROL}
    if doc.modified is not None:
        headers["Last-Modified"] = format_datetime(doc.modified, usegmt=True)
    if _not_modified(request, doc):
        return web.Response(status=304, headers=headers)
    return web.Response(body=doc.body, content_type="application/json", headers=headers)


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/ip-ranges", ip_ranges, allow_head=False)]
