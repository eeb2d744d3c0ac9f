"""`GET /v1/ip-ranges`: the gateway's egress addresses, for receivers' firewalls.

Shaped like the ranges documents of cloud providers (and Auth0's own IP allowlist):
`{last_updated_at, regions: {<region>: {ipv4_cidrs, ipv6_cidrs}}, changelog}`, with an `ETag`
and `Last-Modified` so a receiver can poll cheaply (`304` when nothing changed).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from aiohttp import web

from .context import services
from .settings import Settings

CACHE_CONTROL = "public, max-age=300"
_DOC: web.AppKey[tuple[bytes, str, datetime]] = web.AppKey("ip_ranges_doc", tuple)


def document(settings: Settings) -> dict[str, Any]:
    egress = settings.egress
    regions: dict[str, dict[str, list[str]]] = {}
    for region, cidrs in sorted(egress.regions.items()):
        v4 = [c for c in cidrs if ipaddress.ip_network(c, strict=False).version == 4]
        v6 = [c for c in cidrs if ipaddress.ip_network(c, strict=False).version == 6]
        regions[region] = {"ipv4_cidrs": v4, "ipv6_cidrs": v6}
    updated = egress.regions_updated_at or "2026-12-01T00:00:00Z"
    return {
        "last_updated_at": updated,
        "regions": regions,
        "changelog": [{"date": updated, "change": "current egress ranges",
                       "regions": sorted(regions)}],
    }


def _prepared(app: web.Application, settings: Settings) -> tuple[bytes, str, datetime]:
    cached = app.get(_DOC)
    if cached is None:
        doc = document(settings)
        body = json.dumps(doc, indent=2, sort_keys=True).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        modified = datetime.fromisoformat(doc["last_updated_at"].replace("Z", "+00:00"))
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        cached = (body, etag, modified.replace(microsecond=0))
        app[_DOC] = cached
    return cached


def _not_modified(request: web.Request, etag: str, modified: datetime) -> bool:
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return "*" in tags or etag in tags
    ims = request.headers.get("If-Modified-Since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError, IndexError):
            return False
        return since is not None and since.tzinfo is not None and modified <= since
    return False


async def ip_ranges(request: web.Request) -> web.Response:
    body, etag, modified = _prepared(request.app, services(request).settings)
    headers = {"ETag": etag, "Last-Modified": format_datetime(modified, usegmt=True), "Cache-Control": CACHE_CONTROL}
    if _not_modified(request, etag, modified):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/ip-ranges", ip_ranges, allow_head=False)]
