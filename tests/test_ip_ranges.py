"""`GET /v1/ip-ranges`: the published egress addresses, and cheap polling with ETag and dates."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import pytest
from conftest import Gateway

from gateway.errors import ConfigError
from gateway.settings import Settings

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeSettings = Callable[..., Settings]

UPDATED = "2026-11-20T08:30:00Z"
REGIONS = {"us": ["203.0.113.10/32", "203.0.113.11/32"], "eu": ["198.51.100.0/28", "2001:db8::/64"]}


@pytest.fixture
async def published(make_gateway: MakeGateway, make_settings: MakeSettings) -> Gateway:
    return await make_gateway(make_settings(egress={"regions": REGIONS, "regions_updated_at": UPDATED}))


async def get(gw: Gateway, **headers: str) -> Any:
    return await gw.client.get("/v1/ip-ranges", headers=headers)


async def test_ranges_are_published_without_authentication(published: Gateway) -> None:
    resp = await get(published)

    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == {
        "last_updated_at": UPDATED,
        "regions": {
            "eu": {"ipv4_cidrs": ["198.51.100.0/28"], "ipv6_cidrs": ["2001:db8::/64"]},
            "us": {"ipv4_cidrs": ["203.0.113.10/32", "203.0.113.11/32"], "ipv6_cidrs": []},
        },
        "changelog": [{"date": UPDATED, "change": "current egress ranges", "regions": ["eu", "us"]}],
    }
    assert resp.headers["ETag"].startswith('"') and resp.headers["ETag"].endswith('"')
    assert parsedate_to_datetime(resp.headers["Last-Modified"]).isoformat() == "2026-11-20T08:30:00+00:00"
    assert "max-age" in resp.headers["Cache-Control"]


async def test_a_bad_token_does_not_matter(published: Gateway) -> None:
    resp = await get(published, Authorization="Bearer not-a-token")
    assert resp.status == 200


@pytest.mark.parametrize("form", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
async def test_if_none_match_with_the_current_etag_is_304(published: Gateway, form: str) -> None:
    etag = (await get(published)).headers["ETag"]

    resp = await get(published, **{"If-None-Match": form.format(etag=etag)})

    assert resp.status == 304
    assert await resp.read() == b""
    assert resp.headers["ETag"] == etag


async def test_if_none_match_with_an_old_etag_gets_the_document(published: Gateway) -> None:
    resp = await get(published, **{"If-None-Match": '"0123456789abcdef"'})
    assert resp.status == 200
    assert "us" in (await resp.json())["regions"]


async def test_if_modified_since_the_last_change_is_304(published: Gateway) -> None:
    last_modified = (await get(published)).headers["Last-Modified"]

    assert (await get(published, **{"If-Modified-Since": last_modified})).status == 304
    assert (await get(published, **{"If-Modified-Since": "Sat, 01 Jan 2028 00:00:00 GMT"})).status == 304


@pytest.mark.parametrize("since", ["Thu, 19 Nov 2026 08:30:00 GMT", "not a date", ""])
async def test_if_modified_since_before_the_change_or_unreadable_gets_the_document(
    published: Gateway, since: str
) -> None:
    assert (await get(published, **{"If-Modified-Since": since})).status == 200


async def test_if_none_match_takes_precedence_over_if_modified_since(published: Gateway) -> None:
    last_modified = (await get(published)).headers["Last-Modified"]

    resp = await get(published, **{"If-None-Match": '"stale"', "If-Modified-Since": last_modified})

    assert resp.status == 200


async def test_changed_configuration_gives_a_new_etag(
    make_gateway: MakeGateway, make_settings: MakeSettings, published: Gateway
) -> None:
    old_etag = (await get(published)).headers["ETag"]
    moved = await make_gateway(
        make_settings(egress={"regions": {"us": ["203.0.113.12/32"]}, "regions_updated_at": UPDATED})
    )

    resp = await get(moved, **{"If-None-Match": old_etag})

    assert resp.status == 200
    assert resp.headers["ETag"] != old_etag
    assert (await resp.json())["regions"]["us"]["ipv4_cidrs"] == ["203.0.113.12/32"]


async def test_same_configuration_gives_the_same_etag_on_every_instance(
    make_gateway: MakeGateway, make_settings: MakeSettings, published: Gateway
) -> None:
    other = await make_gateway(make_settings(egress={"regions": REGIONS, "regions_updated_at": UPDATED}))
    assert (await get(other)).headers["ETag"] == (await get(published)).headers["ETag"]


async def test_without_a_declared_date_only_the_etag_answers_conditional_requests(
    make_gateway: MakeGateway, make_settings: MakeSettings
) -> None:
    # The gateway cannot tell when undated ranges changed: it must not claim "not modified".
    gw = await make_gateway(make_settings(egress={"regions": {"us": ["203.0.113.10/32"]}}))
    first = await get(gw)
    assert "Last-Modified" not in first.headers

    far_future = format_datetime(parsedate_to_datetime("Sat, 01 Jan 2100 00:00:00 GMT"), usegmt=True)
    assert (await get(gw, **{"If-Modified-Since": far_future})).status == 200
    assert (await get(gw, **{"If-None-Match": first.headers["ETag"]})).status == 304


async def test_no_regions_configured_publishes_an_empty_document(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    body = await (await get(gw)).json()
    assert body["regions"] == {}
    assert set(body) == {"last_updated_at", "regions", "changelog"}


def test_unreadable_regions_updated_at_stops_start_up(make_settings: MakeSettings) -> None:
    with pytest.raises(ConfigError, match="regions_updated_at"):
        make_settings(egress={"regions_updated_at": "last tuesday"})
