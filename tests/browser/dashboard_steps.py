"""Steps the dashboard's browser tests share: signing in (single sign-on at the test provider,
or a pasted token), checking each page a test visits with axe-core (and photographing the
main ones for docs/screenshots/), and the gateway's API seen from the test (ingest an event,
wait for a delivery), all on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from playwright.async_api import Page, expect

from .harness import Account, GatewayProcess, assert_accessible, screenshot, sign_in_oidc

DELIVERY_WAIT_S = 20.0


async def checked(page: Page, shot: str | None = None) -> None:
    """The page as it is now has no serious or critical axe-core violation; `shot` names its
    screenshot in docs/screenshots/ (written when TEST_SCREENSHOTS=1)."""
    await assert_accessible(page)
    if shot is not None:
        await screenshot(page, shot)


async def sign_in_sso(page: Page, gw: GatewayProcess, account: Account) -> None:
    """Sign in at the gateway through the test identity provider (code flow with PKCE)."""
    await page.goto(gw.url("/dashboard/signin"))
    await page.get_by_role("link", name="Sign in with single sign-on").click()
    await sign_in_oidc(page, account)
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def sign_in_token(page: Page, gw: GatewayProcess, tenant: str = "acme") -> None:
    """Sign in by pasting a management token of `tenant` (development mode only)."""
    await page.goto(gw.url("/dashboard/signin"))
    await page.get_by_role("textbox", name="Management token").fill(gw.deployment.token(tenant))
    await page.get_by_role("button", name="Sign in with the token").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def csrf_of(page: Page) -> str:
    """The CSRF token the page's forms carry."""
    return await page.locator('input[name="csrf"]').first.input_value()


def no_dialogs(page: Page) -> list[str]:
    """Record (and dismiss) every dialog the page opens: a script that ran would open one."""
    opened: list[str] = []

    async def on_dialog(dialog: Any) -> None:
        opened.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    return opened


async def api(gw: GatewayProcess, method: str, path: str, tenant: str | None = "acme",
              **kwargs: Any) -> httpx.Response:
    headers = gw.auth(tenant) if tenant is not None else gw.operator()
    async with httpx.AsyncClient(base_url=gw.base) as http:
        return await http.request(method, path, headers=headers, **kwargs)


async def ingest(gw: GatewayProcess, trigger: str, event: dict[str, Any], tenant: str = "acme") -> list[str]:
    """Send an event through the gateway's `/v1` ingest (a service token); its delivery ids."""
    resp = await api(gw, "POST", f"/v1/tenants/{tenant}/triggers/{trigger}", tenant, json=event)
    assert resp.status_code == 202, resp.text
    return [d["deliveryId"] for d in resp.json()["deliveries"]]


async def poll(gw: GatewayProcess, path: str, done: Callable[[Any], bool], tenant: str = "acme") -> Any:
    """GET `path` of the API until its JSON satisfies `done` (bounded: DELIVERY_WAIT_S)."""
    end = time.monotonic() + DELIVERY_WAIT_S
    while True:
        resp = await api(gw, "GET", path, tenant)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if done(body):
            return body
        if time.monotonic() > end:
            raise AssertionError(f"{path} did not get there: {body}")
        await asyncio.sleep(0.05)


async def hook_of(gw: GatewayProcess, hook_id: str, tenant: str = "acme") -> dict[str, Any]:
    resp = await api(gw, "GET", f"/api/v2/hooks/{hook_id}", tenant)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]

