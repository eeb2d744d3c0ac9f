"""Signing in to the dashboard in Chromium: through a real OpenID Connect provider (code flow
with PKCE), and by pasting a token in development mode; signing out ends the session on the
server (its old cookie opens nothing); an idle session is sent back to sign-in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from playwright.async_api import Page, expect

from .dashboard_steps import checked, sign_in_sso, sign_in_token
from .harness import ALICE, GatewayProcess

StartGateway = Callable[..., Awaitable[GatewayProcess]]
IDLE_TIMEOUT_S = 3.0


async def test_sign_in_with_sso_and_with_a_token_sign_out_and_expire(
    start_gateway: StartGateway, page: Page
) -> None:
    gw = await start_gateway(oidc=True, dashboard={"session_idle_timeout": f"{IDLE_TIMEOUT_S:g}s"})
    await gw.create_tenant("acme")

    # Not signed in: any dashboard page leads to sign-in, which offers both ways in development.
    await page.goto(gw.url("/dashboard/hooks"))
    await expect(page).to_have_url(gw.url("/dashboard/signin"))
    await expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    await expect(page.get_by_role("textbox", name="Management token")).to_be_visible()
    await checked(page, "signin")

    # Single sign-on at the provider: back on the hooks page of the tenant the ID token names.
    await sign_in_sso(page, gw, ALICE)
    await expect(page).to_have_url(gw.url("/dashboard/hooks"))
    await expect(page.locator("header .who")).to_contain_text("alice · tenant acme")
    await expect(page.get_by_role("heading", name="Hooks", exact=True)).to_be_visible()

    # Sign out: the session ends on the server, so its old cookie no longer opens a page.
    (session,) = [c for c in await page.context.cookies() if c.get("name") == "gw_session"]
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(gw.url("/dashboard/signin?done=signed-out"))
    await expect(page.get_by_role("status")).to_have_text("You are signed out.")
    assert not [c for c in await page.context.cookies() if c.get("name") == "gw_session"]
    await page.context.add_cookies([session])  # type: ignore[list-item]
    await page.goto(gw.url("/dashboard/hooks"))
    await expect(page).to_have_url(gw.url("/dashboard/signin?done=expired"))

    # A management token, pasted (development mode).
    await sign_in_token(page, gw, "acme")
    await expect(page).to_have_url(gw.url("/dashboard/hooks"))
    await expect(page.locator("header .who")).to_contain_text("tenant acme")

    # Idle past the timeout: the next page is the sign-in page, saying why.
    await page.wait_for_timeout(IDLE_TIMEOUT_S * 1000 + 500)  # the one wait: the idle timeout itself
    await page.goto(gw.url("/dashboard/deliveries"))
    await expect(page).to_have_url(gw.url("/dashboard/signin?done=expired"))
    await expect(page.get_by_role("status")).to_have_text("Your session has ended. Sign in again.")
    await checked(page)
