"""The dashboard's hooks pages: create, edit, enable and disable, order a chain, delete after a
confirmation, with the Management API's errors shown beside the field; secrets masked; the
signing secret revealed and rotated; the test runner; deliveries, retry and replay; health."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway, Received, Receiver
from dashboard_pages import Browser, Browsers, browser_factory, signed_in, text_of

from gateway.delivery.throttle import destination
from gateway.points import sample_event

MakeReceiver = Callable[..., Awaitable[Receiver]]
POINTS = ("credentials-exchange", "pre-user-registration", "send-phone-message", "post-user-registration",
          "post-change-password")


@pytest.fixture
async def browsers() -> AsyncIterator[Browsers]:
    async with browser_factory() as make:
        yield make


@pytest.fixture
async def browser(gateway: Gateway, browsers: Browsers) -> Browser:
    return await signed_in(browsers, gateway)


def field_error(page: str, field_id: str) -> str:
    """The error shown beside the field whose input has id `field_id` (empty: none)."""
    found = re.search(rf'<p class="error"[^>]* id="e-{re.escape(field_id)}">(.*?)</p>', page, re.S)
    return text_of(found.group(1)) if found else ""


async def create(browser: Browser, **fields: Any) -> Any:
    data = {"name": "hook", "triggerId": "post-user-registration", "url": "https://hooks.example.com/x",
            **fields}
    return await browser.act("/dashboard/hooks", data)


async def api_hook(gw: Gateway, hook_id: str) -> tuple[int, Any]:
    resp = await gw.client.get(f"/api/v2/hooks/{hook_id}", headers=gw.auth())
    return resp.status, await resp.json()


def hook_id_of(resp: Any) -> str:
    return str(resp.url.path.rsplit("/", 1)[-1])


# -- create, edit, enable, disable, delete -------------------------------------------------------


async def test_a_hook_can_be_created_on_each_point_and_is_listed_under_it(
    gateway: Gateway, browser: Browser
) -> None:
    for i, point in enumerate(POINTS):
        resp = await create(browser, name=f"hook-{i}", triggerId=point, timeoutMs="2500")
        assert resp.status == 200, await resp.text()
        assert "Hook created." in await resp.text()
        status, hook = await api_hook(gateway, hook_id_of(resp))
        assert status == 200 and hook["triggerId"] == point and hook["timeoutMs"] == 2500
    _, page = await browser.page("/dashboard/hooks")
    sections = re.split(r'<section class="point"', page)[1:]
    assert len(sections) == 5
    for i, (section, point) in enumerate(zip(sections, POINTS, strict=True)):
        assert f'id="point-{point}"' in section and f"hook-{i}" in section
    assert page.count('class="badge blocking"') == 3 and page.count('class="badge async"') == 2


async def test_a_duplicate_name_is_shown_beside_the_name_field(gateway: Gateway, browser: Browser) -> None:
    await gateway.create_hook(name="taken")
    resp = await create(browser, name="taken", url="https://other.example.com/")
    assert resp.status == 409
    page = await resp.text()
    assert "already exists" in field_error(page, "f-name")
    assert re.search(r'id="f-name"[^>]*aria-invalid="true"', page)
    assert 'value="https://other.example.com/"' in page  # what was typed is kept


async def test_a_bad_value_is_shown_beside_its_field(gateway: Gateway, browser: Browser) -> None:
    resp = await create(browser, name="n", timeoutMs="soon")
    assert resp.status == 400
    assert "'timeoutMs' must be an integer" in field_error(await resp.text(), "f-timeoutMs")
    resp = await create(browser, name="bad name!")
    assert "'name' must match" in field_error(await resp.text(), "f-name")


async def test_a_refused_url_is_shown_beside_the_url_field(gateway: Gateway, browser: Browser) -> None:
    resp = await create(browser, name="metadata", url="https://169.254.169.254/latest/")
    assert resp.status == 400
    assert "not allowed" in field_error(await resp.text(), "f-url")


async def test_only_one_send_phone_message_hook_may_be_enabled(gateway: Gateway, browser: Browser) -> None:
    first = await create(browser, name="sms-1", triggerId="send-phone-message", enabled="on")
    assert first.status == 200
    resp = await create(browser, name="sms-2", triggerId="send-phone-message", enabled="on")
    assert resp.status == 409
    assert "only one send-phone-message hook can be enabled" in field_error(await resp.text(), "f-enabled")
    second = await create(browser, name="sms-2", triggerId="send-phone-message")
    assert second.status == 200
    second_id = hook_id_of(second)
    # enabling it from the list: refused, the reason beside that hook
    resp = await browser.act(f"/dashboard/hooks/{second_id}/enable", {"back": "list"})
    assert resp.status == 409
    page = await resp.text()
    assert "only one send-phone-message hook can be enabled" in text_of(
        re.search(rf'id="row-error-{second_id}">(.*?)</p>', page, re.S).group(1))  # type: ignore[union-attr]
    # and from its own page
    resp = await browser.act(f"/dashboard/hooks/{second_id}/enable", on=f"/dashboard/hooks/{second_id}")
    assert resp.status == 409
    assert "only one" in field_error(await resp.text(), "enabled")
    assert (await api_hook(gateway, second_id))[1]["enabled"] is False


async def test_enable_and_disable_switch_the_hook(gateway: Gateway, browser: Browser) -> None:
    hook = await gateway.create_hook(name="switch")
    resp = await browser.act(f"/dashboard/hooks/{hook['id']}/enable", {"back": "list"})
    assert resp.status == 200 and "Hook enabled." in await resp.text()
    assert (await api_hook(gateway, hook["id"]))[1]["enabled"] is True
    resp = await browser.act(f"/dashboard/hooks/{hook['id']}/disable", on=f"/dashboard/hooks/{hook['id']}")
    assert resp.status == 200 and "is disabled" in await resp.text()  # the banner of a disabled hook
    assert (await api_hook(gateway, hook["id"]))[1]["enabled"] is False


async def test_edit_changes_the_hook_but_never_its_point(gateway: Gateway, browser: Browser) -> None:
    hook = await gateway.create_hook(name="before", triggerId="credentials-exchange")
    path = f"/dashboard/hooks/{hook['id']}"
    _, page = await browser.page(path)
    assert re.search(r'id="f-triggerId"[^>]*readonly', page)
    resp = await browser.submit(page, path, {
        "name": "after", "url": "https://changed.example.com/", "triggerId": "post-change-password",
        "timeoutMs": "1500", "failurePolicy": "skip", "order": "3", "maxConcurrency": "4",
        "rateLimitPerSecond": "2.5", "format": "standard",
    })
    assert resp.status == 200 and "Changes saved." in await resp.text()
    _, after = await api_hook(gateway, hook["id"])
    assert after["triggerId"] == "credentials-exchange"
    assert {k: after[k] for k in ("name", "url", "timeoutMs", "failurePolicy", "order", "maxConcurrency",
                                  "rateLimitPerSecond", "format")} == {
        "name": "after", "url": "https://changed.example.com/", "timeoutMs": 1500, "failurePolicy": "skip",
        "order": 3, "maxConcurrency": 4, "rateLimitPerSecond": 2.5, "format": "standard"}
    resp = await browser.submit(page, path, {"name": "after", "url": "https://changed.example.com/",
                                             "maxConcurrency": "0"})
    assert resp.status == 400
    assert "'maxConcurrency' must be between" in field_error(await resp.text(), "f-maxConcurrency")


async def test_a_blocking_chain_is_reordered_with_move_up_and_down(
    gateway: Gateway, browser: Browser
) -> None:
    ids = [(await gateway.create_hook(name=f"c{i}", triggerId="credentials-exchange", enabled=True))["id"]
           for i in range(3)]

    async def listed() -> list[str]:
        _, page = await browser.page("/dashboard/hooks")
        section = page.split('id="point-credentials-exchange"')[1].split("</section>")[0]
        return re.findall(r'href="/dashboard/hooks/(hk_[^"]+)"', section)

    assert await listed() == ids
    resp = await browser.act(f"/dashboard/hooks/{ids[2]}/move", {"direction": "up"})
    assert resp.status == 200 and "Order of the chain changed." in await resp.text()
    assert await listed() == [ids[0], ids[2], ids[1]]
    await browser.act(f"/dashboard/hooks/{ids[0]}/move", {"direction": "down"})
    assert await listed() == [ids[2], ids[0], ids[1]]
    view = await gateway.svc.registry.view("acme")
    assert view is not None
    assert [h.hook.id for h in view.enabled["credentials-exchange"]] == [ids[2], ids[0], ids[1]]


async def test_delete_asks_for_confirmation_first(gateway: Gateway, browser: Browser) -> None:
    hook = await gateway.create_hook(name="doomed")
    status, page = await browser.page(f"/dashboard/hooks/{hook['id']}/delete")
    assert status == 200 and "Delete doomed?" in text_of(page)
    assert (await api_hook(gateway, hook["id"]))[0] == 200  # looking at the confirmation deletes nothing
    resp = await browser.submit(page, f"/dashboard/hooks/{hook['id']}/delete")
    assert resp.status == 200 and resp.url.path == "/dashboard/hooks" and "Hook deleted." in await resp.text()
    assert (await api_hook(gateway, hook["id"]))[0] == 404


# -- secrets -------------------------------------------------------------------------------------


async def test_secrets_are_masked_after_saving(gateway: Gateway, browser: Browser) -> None:
    hook = await gateway.create_hook(name="with-secrets")
    path = f"/dashboard/hooks/{hook['id']}/secrets"
    resp = await browser.act(path, {"name": "X-Api-Key", "value": "s3cret-value-one"}, on=path)
    assert resp.status == 200
    page = await resp.text()
    assert "X-Api-Key" in page and "s3cret-value-one" not in page
    resp = await browser.act(f"{path}/update", {"name": "X-Api-Key", "value": "s3cret-value-two"}, on=path)
    page = await resp.text()
    assert "Secret updated." in page and "s3cret-value-two" not in page
    live = (await gateway.svc.registry.view("acme")).hooks[hook["id"]]  # type: ignore[union-attr]
    assert b"X-Api-Key: s3cret-value-two" in live.head
    resp = await browser.act(path, {"name": "X-Api-Key", "value": "again"}, on=path)
    assert resp.status == 409 and "already exists" in field_error(await resp.text(), "add-name")
    resp = await browser.act(path, {"name": "Host", "value": "x"}, on=path)
    assert resp.status == 400 and "reserved header" in field_error(await resp.text(), "add-name")
    resp = await browser.act(f"{path}/delete", {"name": "X-Api-Key"}, on=path)
    assert "Secret deleted." in await resp.text()
    listed = await gateway.client.get(f"/api/v2/hooks/{hook['id']}/secrets", headers=gateway.auth())
    assert await listed.json() == {}


async def test_the_signing_secret_is_revealed_on_request_and_rotated_with_its_grace(
    gateway: Gateway, browser: Browser
) -> None:
    hook = await gateway.create_hook(name="signed")
    path = f"/dashboard/hooks/{hook['id']}/secrets"
    secret = await gateway.signing_secret(hook["id"])
    _, page = await browser.page(path)
    assert secret not in page
    resp = await browser.submit(page, f"/dashboard/hooks/{hook['id']}/signing-secret/reveal")
    assert resp.status == 200 and secret in await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    before = time.time()
    resp = await browser.act(f"/dashboard/hooks/{hook['id']}/signing-secret/rotate", {"graceHours": "2"},
                             on=path)
    page = await resp.text()
    assert resp.status == 200 and "Signing secret rotated." in page
    assert await gateway.signing_secret(hook["id"]) != secret
    until = re.search(r"keeps signing until <strong>([^<]+)</strong>", page)
    assert until
    shown = time.strptime(until.group(1), "%Y-%m-%d %H:%M:%S UTC")
    assert abs(time.mktime(shown) - time.timezone - (before + 7200)) < 120


# -- the test runner -----------------------------------------------------------------------------


async def _hostile(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
    return web.json_response({"status": "success", "data": {"note": "<script>alert(1)</script>"}},
                             headers={"X-Receiver": "<b>bold</b>"})


async def test_the_runner_sends_the_edited_event_and_shows_the_answer_escaped(
    gateway: Gateway, browser: Browser, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(_hostile)
    hook = await gateway.create_hook(name="runner", url=receiver.url())
    await gateway.add_secrets(hook["id"], {"X-Api-Key": "never-shown-key"})
    path = f"/dashboard/hooks/{hook['id']}/test"
    _, page = await browser.page(path)
    prefilled = re.search(r'<textarea id="f-event"[^>]*>(.*?)</textarea>', page, re.S)
    assert prefilled
    event = json.loads(html.unescape(prefilled.group(1)))  # the point's sample
    event["user"]["email"] = "edited@example.com"
    resp = await browser.submit(page, path, {"event": json.dumps(event)})
    assert resp.status == 200
    page = await resp.text()
    assert receiver.requests and receiver.requests[0].json()["user"]["email"] == "edited@example.com"
    assert "HTTP 200" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "webhook-signature" in page and "x-receiver" in page.lower()
    assert "never-shown-key" not in page and "_VALUE_NOT_SHOWN_" in page
    resp = await browser.submit(page, path, {"event": "{not json"})
    assert resp.status == 400 and "malformed JSON" in field_error(await resp.text(), "f-event")


# -- deliveries, retry, replay, health ----------------------------------------------------------


async def test_a_failed_delivery_is_shown_with_its_next_attempt_and_succeeds_on_retry(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Any], browsers: Browsers,
    make_receiver: MakeReceiver,
) -> None:
    gateway = await make_gateway(make_settings(delivery={"retry_schedule": ["1h", "2h"]}))
    await gateway.create_tenant("acme")
    browser = await signed_in(browsers, gateway)
    async def flaky(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        if state.get("ok"):
            return web.json_response({"status": "success", "data": {}})
        return web.Response(status=503, text="<i>down</i>")

    receiver = await make_receiver(flaky)
    hook = await gateway.create_hook(name="flaky", url=receiver.url(), enabled=True)
    resp = await gateway.forward("post-user-registration", sample_event("post-user-registration"))
    delivery_id = (await resp.json())["deliveries"][0]["deliveryId"]
    await gateway.wait_delivery(delivery_id, attempts=1)
    status, page = await browser.page(f"/dashboard/deliveries/{delivery_id}")
    assert status == 200
    text = text_of(page)
    assert "HTTP 503" in text and "receiver answered HTTP 503" in text
    assert "&lt;i&gt;down&lt;/i&gt;" in page
    assert "retry schedule: attempt 2 of 3" in text
    receiver.state["ok"] = True
    page_path = f"/dashboard/deliveries/{delivery_id}"
    resp = await browser.act(f"{page_path}/retry", on=page_path)
    assert resp.status == 200 and "queued for another attempt" in await resp.text()
    done = await gateway.wait_delivery(delivery_id, status="succeeded")
    assert done["attempts"][-1]["statusCode"] == 200
    _, listing = await browser.page(f"/dashboard/deliveries?hook={hook['id']}&status=succeeded")
    assert delivery_id in listing
    _, listing = await browser.page(f"/dashboard/deliveries?hook={hook['id']}&status=failed")
    assert delivery_id not in listing
    # health: one failed and one succeeded attempt in the last 24 h
    _, page = await browser.page(f"/dashboard/hooks/{hook['id']}")
    assert re.search(r'<svg[^>]*role="img"', page)
    assert "1 succeeded and 1 failed attempts" in page


async def test_a_replay_of_a_range_queues_the_events_again(
    gateway: Gateway, browser: Browser, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver()
    hook = await gateway.create_hook(name="replayed", url=receiver.url(), enabled=True)
    resp = await gateway.forward("post-user-registration", sample_event("post-user-registration"))
    first = (await resp.json())["deliveries"][0]["deliveryId"]
    await gateway.wait_delivery(first, status="succeeded")
    path = f"/dashboard/hooks/{hook['id']}"
    since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600))
    resp = await browser.act(f"{path}/replay", [("since", since), ("status", "succeeded")], on=path)
    assert resp.status == 200 and resp.url.path == "/dashboard/deliveries"
    assert "Replay queued." in await resp.text()
    await receiver.wait_for(2)
    resp = await browser.act(f"{path}/replay", {"since": "yesterday"}, on=path)
    assert resp.status == 400
    assert "'since' must be an ISO-8601 time" in field_error(await resp.text(), "replay-since")


async def test_a_paused_destination_and_a_disabled_hook_show_banners(
    gateway: Gateway, browser: Browser
) -> None:
    hook = await gateway.create_hook(name="held", url="https://slow.example.com/hook")
    until = time.time() + 600
    await gateway.svc.store.set_pause("acme", destination(hook["url"]), until)
    _, page = await browser.page(f"/dashboard/hooks/{hook['id']}")
    text = text_of(page)
    assert "held is disabled." in text
    assert "Destination paused." in text and "https://slow.example.com:443" in text
    _, page = await browser.page("/dashboard/health")
    assert "Destination paused." in text_of(page) and "<svg" in page


# -- the operator view ---------------------------------------------------------------------------


async def test_the_gateways_own_ops_tenant_is_no_tenant_of_the_operator(
    gateway: Gateway, browsers: Browsers
) -> None:
    """`_ops` holds the tenants' operational-event endpoints: neither the Management API nor the
    operator view lists, counts, shows or changes it."""
    from dashboard_pages import operator_token, sign_in_with_token  # noqa: PLC0415

    put = await gateway.client.put("/api/v2/operational-events", json={"url": "https://ops.example.com/in"},
                                   headers=gateway.auth())
    assert put.status == 201, await put.text()
    assert await gateway.svc.store.get_tenant("_ops") is not None  # made by the PUT
    operator = {"Authorization": f"Bearer {gateway.operator_token()}"}
    listed = await (await gateway.client.get("/api/v2/tenants?include_totals=true", headers=operator)).json()
    assert [t["id"] for t in listed["tenants"]] == ["acme"] and listed["total"] == 1
    for method in ("GET", "PATCH", "DELETE"):
        resp = await gateway.client.request(method, "/api/v2/tenants/_ops", json={"name": "x"},
                                            headers=operator)
        assert resp.status == 404, method
    browser = await browsers(gateway)
    page = await (await sign_in_with_token(browser, operator_token(gateway))).text()
    assert "/dashboard/operator/tenants/acme" in page and "/dashboard/operator/tenants/_ops" not in page
    assert (await browser.get("/dashboard/operator/tenants/_ops")).status == 404
    assert await gateway.svc.store.get_tenant("_ops") is not None


async def test_the_operator_creates_and_edits_tenants(gateway: Gateway, browsers: Browsers) -> None:
    from dashboard_pages import operator_token, sign_in_with_token  # noqa: PLC0415

    browser = await browsers(gateway)
    resp = await sign_in_with_token(browser, operator_token(gateway))
    page = await resp.text()
    resp = await browser.submit(page, "/dashboard/operator/tenants", {
        "id": "globex", "name": "<b>Globex</b>", "allowedCidrs": "10.0.0.0/8\n192.0.2.0/24", "hooks": "7"})
    assert resp.status == 200 and resp.url.path == "/dashboard/operator/tenants/globex"
    page = await resp.text()
    assert "<b>Globex</b>" not in page and "&lt;b&gt;Globex&lt;/b&gt;" in page
    tenant = await gateway.svc.store.get_tenant("globex")
    assert tenant is not None and tenant.allowed_cidrs == ("10.0.0.0/8", "192.0.2.0/24")
    assert tenant.quotas == {"hooks": 7}
    resp = await browser.submit(page, "/dashboard/operator/tenants/globex",
                                {"name": "Globex", "allowedCidrs": "not-a-cidr"})
    assert resp.status == 400 and "'allowedCidrs'" in field_error(await resp.text(), "f-allowedCidrs")
    resp = await browser.submit(page, "/dashboard/operator/tenants", {"id": "acme"})
    assert resp.status == 409 and "already exists" in text_of(await resp.text())
    # tenants' pages are not an operator's: no tenant in this session
    resp = await browser.get("/dashboard/hooks")
    assert resp.status == 403


async def test_the_operator_sees_backlog_and_paused_destinations(
    gateway: Gateway, browsers: Browsers
) -> None:
    from dashboard_pages import operator_token, sign_in_with_token  # noqa: PLC0415

    await gateway.svc.store.set_pause("acme", "https://busy.example.com:443", time.time() + 600)
    browser = await browsers(gateway)
    page = await (await sign_in_with_token(browser, operator_token(gateway))).text()
    text = text_of(page)
    assert "Paused destinations" in text and "https://busy.example.com:443" in text
    assert "pending deliveries across all tenants" in text


async def test_a_tenant_session_cannot_open_the_operator_view(gateway: Gateway, browser: Browser) -> None:
    resp = await browser.get("/dashboard/operator")
    assert resp.status == 403
