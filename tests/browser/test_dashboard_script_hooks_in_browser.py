"""A tenant's developer writes a hook's script in the dashboard (issue 16), in Chromium: creates a
script hook in the same form as a URL hook, gives it a secret, runs it from the test runner,
reads it back as text on its page and as "hosted script" in the list, edits it, and is refused
beside the field when it is given a URL too, or when the gateway cannot run scripts. The gateway
runs the script in its sandbox (tests/test_hosted_hooks.py says what the host needs).

Every page visited passes axe-core; the script hook's page is photographed for docs/screenshots/."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page, expect
from test_hosted_hooks import runtime_settings, sandbox_host

from .dashboard_steps import checked, hook_of, no_dialogs, sign_in_sso
from .harness import ALICE
from .test_dashboard_hooks_in_browser import StartGateway, notice

__all__ = ["sandbox_host"]  # the fixture, imported for this module's tests

UID_FIRST = 2_300_000  # a range of this file's own (every hosted-hooks test file has one: 1.5 to 2.4 million)
SCRIPT = """// answers with a claim from the hook's secrets <img src=x onerror=alert(1)>
module.exports = function (client, scope, audience, context, cb) {
  cb(null, { 'https://example.com/greeting': context.webtask.secrets.GREETING });
};"""
EDITED = SCRIPT.replace("GREETING });", "GREETING + '!' });")


async def fill_script_hook(page: Page, name: str, script: str, url: str = "") -> None:
    await page.get_by_role("link", name="Create a credentials-exchange hook").click()
    await page.get_by_label("Name (required)", exact=True).fill(name)
    await page.get_by_label("URL", exact=True).fill(url)
    await script_box(page).fill(script)
    await page.get_by_label("Enabled", exact=True).check()
    await page.get_by_role("button", name="Create hook").click()


def script_box(page: Page) -> Any:
    """The form's script field (a textarea labelled "Script"; the page's script block is a region
    of the same name)."""
    return page.get_by_role("textbox", name="Script", exact=True)


def script_field_error(page: Page) -> Any:
    return page.locator(".field", has=script_box(page)).locator(".error")


async def test_a_tenant_writes_runs_and_edits_a_script_hook_in_the_browser(
    sandbox_host: None, start_gateway: StartGateway, page: Page
) -> None:
    gw = await start_gateway(oidc=True, sections={"runtime": runtime_settings(uid_first=UID_FIRST)})
    await gw.create_tenant("acme")
    dialogs = no_dialogs(page)
    await sign_in_sso(page, gw, ALICE)

    # -- created in the form: a script instead of a URL ---------------------------------------
    await fill_script_hook(page, "greeter", SCRIPT)
    await expect(notice(page)).to_have_text("Hook created.")
    await expect(page.get_by_role("heading", name="greeter", exact=True)).to_be_visible()
    hook_id = page.url.split("?")[0].rsplit("/", 1)[-1]
    hook = await hook_of(gw, hook_id)
    assert (hook["script"], hook["url"], hook["enabled"]) == (SCRIPT, None, True)
    shown = page.get_by_role("region", name="Script").locator("pre")
    await expect(shown).to_have_text(SCRIPT)  # as text: the comment's markup is not a tag
    await expect(script_box(page)).to_have_value(SCRIPT)
    await checked(page, "hook-script")

    # -- the list says "hosted script" where a URL hook has its URL ----------------------------
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Hooks").click()
    await expect(page.get_by_role("row", name="greeter")).to_contain_text("hosted script")
    await checked(page)

    # -- a secret, then the test runner runs the script -------------------------------------------
    await page.get_by_role("link", name="greeter").click()
    await page.get_by_role("link", name="Secrets").click()
    await page.get_by_label("Name (required)", exact=True).fill("GREETING")
    await page.get_by_label("Value (required)", exact=True).fill("hello from a secret")
    await page.get_by_role("button", name="Add secret").click()
    await expect(notice(page)).to_have_text("Secret added. Its value is not shown again.")
    await page.goto(gw.url(f"/dashboard/hooks/{hook_id}/test"))
    await expect(page.get_by_text("through the hook's script")).to_be_visible()
    await page.get_by_role("button", name="Send the test event").click()
    result = page.get_by_role("region", name="Result")
    await expect(result).to_contain_text("HTTP 200")
    await expect(result).to_contain_text("hello from a secret")
    await checked(page)

    # -- edited in its page; a URL beside the script is refused beside the script ---------------
    await page.goto(gw.url(f"/dashboard/hooks/{hook_id}"))
    await script_box(page).fill(EDITED)
    await page.get_by_role("button", name="Save changes").click()
    await expect(notice(page)).to_have_text("Changes saved.")
    await expect(page.get_by_role("region", name="Script").locator("pre")).to_have_text(EDITED)
    assert (await hook_of(gw, hook_id))["script"] == EDITED
    await page.get_by_label("URL", exact=True).fill("https://hooks.example.com/x")
    await page.get_by_role("button", name="Save changes").click()
    await expect(script_box(page)).to_have_attribute("aria-invalid", "true")
    await expect(script_field_error(page)).to_contain_text("either a 'url' or a 'script', not both")
    await expect(page.get_by_label("URL", exact=True)).to_have_value("https://hooks.example.com/x")
    await checked(page)
    assert (await hook_of(gw, hook_id))["script"] == EDITED
    assert dialogs == []  # nothing of the script ran in the page


async def test_where_scripts_cannot_run_the_form_says_why_beside_the_script(
    start_gateway: StartGateway, page: Page
) -> None:
    gw = await start_gateway(oidc=True)  # [runtime] enabled = false, the default
    await gw.create_tenant("acme")
    await sign_in_sso(page, gw, ALICE)
    await fill_script_hook(page, "greeter", SCRIPT)
    await expect(script_box(page)).to_have_attribute("aria-invalid", "true")
    await expect(script_field_error(page)).to_contain_text("[runtime] enabled = false")
    await expect(script_box(page)).to_have_value(SCRIPT)  # as typed
    await checked(page)
