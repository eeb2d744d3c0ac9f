"""A tenant's developer manages hooks in Chromium, signed in through the identity provider.

First the hooks themselves: a hook on each of the five points, the one-enabled rule of
send-phone-message refused beside its field, edit, enable and disable, the order of a chain,
a secret masked, the signing secret revealed and rotated with its grace, delete after a
confirmation. Then what they send: the test runner against a real receiver on loopback, a
delivery that fails and succeeds on retry, a replayed range, health at a glance; a receiver's
answer holding a script is shown as text and never runs.

Every page visited passes axe-core; the main ones are photographed for docs/screenshots/."""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from conftest import Received, Receiver
from playwright.async_api import Page, expect

from gateway.points import sample_event

from .dashboard_steps import api, checked, hook_of, ingest, no_dialogs, poll, sign_in_sso
from .harness import ALICE, GatewayProcess

StartGateway = Callable[..., Awaitable[GatewayProcess]]
MakeReceiver = Callable[..., Awaitable[Receiver]]

# A name per point, in the order the hooks page lists the points.
POINT_HOOKS = {
    "credentials-exchange": "claims-enricher",
    "pre-user-registration": "signup-screen",
    "send-phone-message": "sms-primary",
    "post-user-registration": "welcome-mail",
    "post-change-password": "password-audit",
}
ONE_ENABLED = "only one send-phone-message hook can be enabled"
HOSTILE_NOTE = "<script>alert(1)</script>"
HOSTILE_ERROR_BODY = '<script>alert("x")</script>'


async def _hostile(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
    """Answers 200 with a script in its JSON and in a header: the pages must show it as text."""
    return web.json_response({"status": "success", "data": {"note": HOSTILE_NOTE}},
                             headers={"X-Receiver": "<b>bold</b>"})


async def _flaky(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
    """Fails its first request (a 503 whose body is a script), then takes every one."""
    state["calls"] = state.get("calls", 0) + 1
    if state["calls"] == 1:
        return web.Response(status=503, text=HOSTILE_ERROR_BODY, content_type="text/html")
    return web.json_response({"status": "success", "data": {}})


UTC_FORMAT = "%Y-%m-%d %H:%M:%S UTC"  # how the pages show a time


async def create_hook_in_form(page: Page, gw: GatewayProcess, point: str, name: str, url: str, *,
                              enabled: bool = True, check: bool = False) -> None:
    """From the hooks page: the point's "Create" button, the form filled and sent."""
    await page.goto(gw.url("/dashboard/hooks"))
    await page.get_by_role("link", name=f"Create a {point} hook").click()
    await expect(page.get_by_role("heading", name="New hook")).to_be_visible()
    await expect(page.get_by_label("Extensibility point")).to_have_value(point)
    if check:
        await checked(page)
    await page.get_by_label("Name (required)", exact=True).fill(name)
    await page.get_by_label("URL", exact=True).fill(url)
    await page.get_by_label("Enabled", exact=True).set_checked(enabled)
    await page.get_by_role("button", name="Create hook").click()


def notice(page: Page) -> Any:
    """The notice a page shows after a change (the first status of its main part)."""
    return page.get_by_role("status").first


def chain(page: Page, point: str = "credentials-exchange") -> Any:
    """The names of a point's hooks, in the order the hooks page lists them."""
    return page.get_by_role("region", name=point).locator("tbody tr td:nth-child(2)")


async def test_a_tenant_manages_its_hooks_in_the_browser(
    start_gateway: StartGateway, page: Page, make_receiver: MakeReceiver
) -> None:
    gw = await start_gateway(oidc=True)
    await gw.create_tenant("acme")
    receiver = await make_receiver()  # never called here: the URLs only need to be allowed
    await sign_in_sso(page, gw, ALICE)

    # -- a hook on each point, through the form ---------------------------------------------
    ids: dict[str, str] = {}
    for n, (point, name) in enumerate(POINT_HOOKS.items()):
        await create_hook_in_form(page, gw, point, name, receiver.url(), check=n == 0)
        await expect(notice(page)).to_have_text("Hook created.")
        await expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
        ids[name] = page.url.split("?")[0].rsplit("/", 1)[-1]
        hook = await hook_of(gw, ids[name])
        assert (hook["name"], hook["triggerId"], hook["enabled"]) == (name, point, True)

    # -- one enabled send-phone-message hook: the second is refused beside "Enabled" --------
    await create_hook_in_form(page, gw, "send-phone-message", "sms-backup", receiver.url())
    enabled_box = page.get_by_label("Enabled", exact=True)
    await expect(enabled_box).to_have_attribute("aria-invalid", "true")
    await expect(page.locator(".field", has=enabled_box).locator(".error")).to_contain_text(ONE_ENABLED)
    await expect(page.get_by_label("Name (required)", exact=True)).to_have_value("sms-backup")  # as typed
    await checked(page)  # the form with an error
    await enabled_box.uncheck()
    await page.get_by_role("button", name="Create hook").click()
    await expect(notice(page)).to_have_text("Hook created.")
    backup = page.url.split("?")[0].rsplit("/", 1)[-1]
    await page.get_by_role("link", name="Hooks", exact=True).first.click()
    await page.get_by_role("button", name="Enable sms-backup").click()
    await expect(page.locator(f"#row-error-{backup}")).to_contain_text(ONE_ENABLED)
    await checked(page)  # the list with an error beside a hook
    assert (await hook_of(gw, backup))["enabled"] is False

    # -- edit (the point is read-only), disable and enable ----------------------------------
    await page.goto(gw.url("/dashboard/hooks"))
    await page.get_by_role("link", name="claims-enricher").click()
    await expect(page.get_by_label("Extensibility point")).to_have_attribute("readonly", "")
    await expect(page.get_by_label("Extensibility point")).to_have_value("credentials-exchange")
    await page.get_by_label("Name (required)", exact=True).fill("claims-enricher-v2")
    await page.get_by_label("Timeout (ms)").fill("2500")
    await page.get_by_label("When the hook fails").select_option("skip")
    await page.get_by_role("button", name="Save changes").click()
    await expect(notice(page)).to_have_text("Changes saved.")
    await expect(page.get_by_role("heading", name="claims-enricher-v2", exact=True)).to_be_visible()
    await expect(page.get_by_label("Timeout (ms)")).to_have_value("2500")
    hook = await hook_of(gw, ids["claims-enricher"])
    assert (hook["name"], hook["timeoutMs"], hook["failurePolicy"]) == ("claims-enricher-v2", 2500, "skip")
    await checked(page, "hook-edit")

    await page.get_by_role("button", name="Disable").click()
    await expect(notice(page)).to_have_text("Hook disabled.")
    await expect(page.get_by_text("claims-enricher-v2 is disabled.")).to_be_visible()  # the banner
    assert (await hook_of(gw, ids["claims-enricher"]))["enabled"] is False
    await page.get_by_role("button", name="Enable").click()
    await expect(notice(page)).to_have_text("Hook enabled.")
    assert (await hook_of(gw, ids["claims-enricher"]))["enabled"] is True

    # -- the order of a blocking chain ------------------------------------------------------
    for name in ("cx-second", "cx-third"):
        await gw.create_hook("acme", name=name, triggerId="credentials-exchange", url=receiver.url(),
                             enabled=True)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Hooks").click()
    await expect(chain(page)).to_have_text(["claims-enricher-v2", "cx-second", "cx-third"])
    await page.get_by_role("button", name="Move up cx-third").click()
    await expect(notice(page)).to_have_text("Order of the chain changed.")
    await expect(chain(page)).to_have_text(["claims-enricher-v2", "cx-third", "cx-second"])
    await page.get_by_role("button", name="Move down claims-enricher-v2").click()
    await expect(chain(page)).to_have_text(["cx-third", "claims-enricher-v2", "cx-second"])
    listed = [h for h in (await api(gw, "GET", "/api/v2/hooks")).json()
              if h["triggerId"] == "credentials-exchange"]
    assert [h["name"] for h in sorted(listed, key=lambda h: h["order"])] == [  # the order it runs in
        "cx-third", "claims-enricher-v2", "cx-second"]
    await checked(page, "hooks")

    # -- secrets: masked once saved; the signing secret revealed, then rotated --------------
    hook_id = ids["claims-enricher"]
    await page.get_by_role("link", name="claims-enricher-v2").click()
    await page.get_by_role("link", name="Secrets").click()
    await expect(page.get_by_role("heading", name="Secrets of claims-enricher-v2")).to_be_visible()
    await page.get_by_label("Name (required)", exact=True).fill("X-Api-Key")
    await page.get_by_label("Value (required)", exact=True).fill("s3cret-value-one")
    await page.get_by_role("button", name="Add secret").click()
    await expect(notice(page)).to_have_text("Secret added. Its value is not shown again.")
    row = page.get_by_role("row", name="X-Api-Key")
    await expect(row.get_by_role("cell").first).to_have_text("•••••••• (hidden)")
    assert "s3cret-value-one" not in await page.content()

    secret = (await api(gw, "GET", f"/api/v2/hooks/{hook_id}/signing-secret")).json()["secret"]
    assert secret.startswith("whsec_") and secret not in await page.content()
    await page.get_by_role("button", name="Reveal the signing secret").click()
    await expect(page.get_by_label("Current signing secret")).to_have_value(secret)
    await checked(page)
    await page.get_by_label("Grace period (hours)").fill("2")
    rotated_at = time.time()
    await page.get_by_role("button", name="Rotate the signing secret").click()
    await expect(notice(page)).to_contain_text("Signing secret rotated.")
    assert secret not in await page.content()  # shown on the reveal's own answer only
    grace = page.get_by_role("listitem").filter(has_text="keeps signing until")
    until = calendar.timegm(time.strptime(await grace.locator("strong").inner_text(), UTC_FORMAT))
    assert abs(until - (rotated_at + 7200)) < 120
    assert (await api(gw, "GET", f"/api/v2/hooks/{hook_id}/signing-secret")).json()["secret"] != secret
    await checked(page, "secrets")

    # -- delete, after a confirmation -------------------------------------------------------
    audit = ids["password-audit"]
    await page.goto(gw.url(f"/dashboard/hooks/{audit}"))
    await page.get_by_role("link", name="Delete").click()
    await expect(page.get_by_role("heading", name="Delete password-audit?")).to_be_visible()
    await checked(page)
    assert (await api(gw, "GET", f"/api/v2/hooks/{audit}")).status_code == 200  # nothing deleted yet
    await page.get_by_role("button", name="Delete the hook").click()
    await expect(page).to_have_url(gw.url("/dashboard/hooks?done=deleted"))
    await expect(notice(page)).to_have_text("Hook deleted.")
    await expect(page.get_by_role("link", name="password-audit")).to_have_count(0)
    assert (await api(gw, "GET", f"/api/v2/hooks/{audit}")).status_code == 404


async def test_the_runner_deliveries_retry_replay_and_health_in_the_browser(
    start_gateway: StartGateway, page: Page, make_receiver: MakeReceiver
) -> None:
    gw = await start_gateway(oidc=True, sections={"delivery": {"retry_schedule": ["1h", "2h"]}})
    await gw.create_tenant("acme")
    hostile, flaky = await make_receiver(_hostile), await make_receiver(_flaky)
    enricher = await gw.create_hook("acme", name="claims-enricher", triggerId="credentials-exchange",
                                    url=hostile.url(), enabled=True)
    resp = await api(gw, "POST", f"/api/v2/hooks/{enricher['id']}/secrets", json={"X-Api-Key": "k3y-unseen"})
    assert resp.status_code == 201, resp.text
    welcome = (await gw.create_hook("acme", name="welcome-mail", url=flaky.url(), enabled=True))["id"]
    await gw.create_hook("acme", name="password-audit", triggerId="post-change-password", url=flaky.url())
    dialogs = no_dialogs(page)
    await sign_in_sso(page, gw, ALICE)

    # -- the test runner, against a real receiver on loopback -------------------------------
    await page.get_by_role("link", name="claims-enricher").click()
    await page.get_by_role("link", name="Test", exact=True).click()
    event_box = page.get_by_label("Event body (JSON)")
    event = json.loads(await event_box.input_value())
    assert event == sample_event("credentials-exchange")
    event["audience"] = "https://edited.example.test/"
    await event_box.fill(json.dumps(event, indent=2))
    await checked(page)
    await page.get_by_role("button", name="Send the test event").click()
    result = page.get_by_role("region", name="Result")
    await expect(result.get_by_text("HTTP 200")).to_be_visible()
    assert hostile.requests[-1].json()["audience"] == "https://edited.example.test/"
    await expect(result.locator("pre").first).to_contain_text(HOSTILE_NOTE)  # the answer, as text
    await expect(page.locator("script")).to_have_count(0)  # and not as an element
    await expect(result.get_by_role("row", name="x-receiver")).to_contain_text("<b>bold</b>")
    await expect(result.get_by_role("row", name="webhook-signature")).to_be_visible()
    await expect(result.get_by_role("row", name="x-api-key")).to_contain_text("_VALUE_NOT_SHOWN_")
    assert "k3y-unseen" not in await page.content()
    await checked(page, "test-runner")

    # -- a delivery fails, is retried from its page, and succeeds ---------------------------
    (delivery_id,) = await ingest(gw, "post-user-registration", sample_event("post-user-registration"))
    await poll(gw, f"/api/v2/deliveries/{delivery_id}", lambda d: len(d["attempts"]) >= 1)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Deliveries").click()
    await page.get_by_label("Hook", exact=True).select_option(label="welcome-mail")
    await page.get_by_label("Status", exact=True).select_option("pending")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_text("1 delivery, newest first.")).to_be_visible()
    await checked(page)
    await page.get_by_role("link", name=delivery_id).click()
    await expect(page.get_by_role("heading", name=f"Delivery {delivery_id}")).to_be_visible()
    first = page.locator("li.attempt").nth(0)
    await expect(first).to_contain_text("HTTP 503")
    await expect(page.locator("dl.facts").first).to_contain_text("retry schedule: attempt 2 of 3")
    await first.get_by_text("Answer (first 4 KiB)").click()
    await expect(first.locator("pre")).to_have_text(HOSTILE_ERROR_BODY)  # shown as text, not run
    await expect(page.locator("script")).to_have_count(0)
    await checked(page)
    await page.get_by_role("button", name="Retry now").click()
    await expect(notice(page)).to_have_text("Delivery queued for another attempt.")
    await poll(gw, f"/api/v2/deliveries/{delivery_id}", lambda d: d["status"] == "succeeded")
    await page.goto(gw.url(f"/dashboard/deliveries/{delivery_id}"))
    await expect(page.locator("dl.facts").first.locator(".badge")).to_have_text("succeeded")
    await expect(page.locator("li.attempt")).to_have_count(2)
    await expect(page.locator("li.attempt").nth(1)).to_contain_text("HTTP 200")
    await page.locator("li.attempt").nth(0).get_by_text("Answer (first 4 KiB)").click()
    await checked(page, "delivery-timeline")

    # -- replay a range: the hook's succeeded events of the last hour, delivered again ------
    await page.goto(gw.url(f"/dashboard/hooks/{welcome}"))
    an_hour_ago = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600))
    await page.get_by_label("From (UTC)").fill(an_hour_ago)
    await page.get_by_label("failed", exact=True).uncheck()
    await page.get_by_label("succeeded", exact=True).check()
    await page.get_by_role("button", name="Replay", exact=True).click()
    await expect(notice(page)).to_have_text("Replay queued.")
    await expect(page.get_by_text("2 deliveries, newest first.")).to_be_visible()
    await poll(gw, f"/api/v2/deliveries?hookId={welcome}&status=succeeded", lambda items: len(items) == 2)
    assert len(flaky.requests) == 3  # failed, retried, replayed
    assert flaky.requests[2].json() == flaky.requests[1].json()  # the same event again
    await page.goto(gw.url(f"/dashboard/deliveries?hook={welcome}"))
    await expect(page.locator("tbody .badge")).to_have_text(["succeeded", "succeeded"])
    await checked(page, "deliveries")

    # -- health at a glance ----------------------------------------------------------------
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Health").click()
    welcome_health = page.get_by_role("region", name="welcome-mail")
    await expect(welcome_health.get_by_role("img")).to_be_visible()  # the SVG chart
    await expect(welcome_health.locator("figcaption")).to_contain_text("2 succeeded and 1 failed attempts")
    await expect(page.get_by_role("region", name="password-audit").get_by_role("status")).to_contain_text(
        "password-audit is disabled.")  # the banner of a disabled hook
    await checked(page, "health")

    assert dialogs == []  # no answer of a receiver ran as script on any page
