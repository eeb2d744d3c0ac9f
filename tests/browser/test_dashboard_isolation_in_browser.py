"""The dashboard facing other tenants and forged forms, in Chromium: tenant B's session sees
none of tenant A's hooks or deliveries by URL and changes none of them (a 404 page); a form
posted without its CSRF token is refused and changes nothing; a tenant's session cannot open
the operator view, which the operator uses to create and edit tenants."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from playwright.async_api import Page, expect

from gateway.points import sample_event

from .dashboard_steps import api, checked, csrf_of, hook_of, ingest, poll, sign_in_sso
from .harness import ALICE, BOB, OLIVE, GatewayProcess

StartGateway = Callable[..., Awaitable[GatewayProcess]]
NewPage = Callable[..., Awaitable[Page]]


async def test_tenants_see_only_their_own_hooks_and_forms_need_their_csrf_token(
    start_gateway: StartGateway, new_page: NewPage
) -> None:
    gw = await start_gateway(oidc=True)
    await gw.create_tenant("acme")
    await gw.create_tenant("beta")
    hook = await gw.create_hook("acme", name="acme-private", url="http://127.0.0.1:9/")
    other = await gw.create_hook("acme", name="acme-live", url="http://127.0.0.1:9/", enabled=True)
    (delivery_id,) = await ingest(gw, "post-user-registration", sample_event("post-user-registration"))
    await poll(gw, f"/api/v2/deliveries/{delivery_id}", lambda d: len(d["attempts"]) >= 1)

    # -- tenant beta's session: acme's hooks are not listed, and not found by URL ------------
    bob = await new_page()
    await sign_in_sso(bob, gw, BOB)
    await expect(bob.locator("header .who")).to_contain_text("tenant beta")
    await expect(bob.get_by_role("link", name="acme-private")).to_have_count(0)
    for path in (f"/dashboard/hooks/{hook['id']}", f"/dashboard/hooks/{hook['id']}/secrets",
                 f"/dashboard/hooks/{hook['id']}/test", f"/dashboard/hooks/{hook['id']}/delete",
                 f"/dashboard/deliveries/{delivery_id}"):
        answer = await bob.goto(gw.url(path))
        assert answer is not None and answer.status == 404, path
        await expect(bob.get_by_role("heading", name="Not Found")).to_be_visible()
        await expect(bob.get_by_text("acme-private")).to_have_count(0)
    await checked(bob)  # the error page
    await bob.goto(gw.url(f"/dashboard/deliveries?hook={other['id']}"))
    await expect(bob.get_by_text("0 deliveries.")).to_be_visible()

    # Posting to acme's hook with bob's own (valid) CSRF token changes nothing either.
    await bob.goto(gw.url("/dashboard/hooks"))
    bob_csrf = await csrf_of(bob)
    base = gw.url(f"/dashboard/hooks/{hook['id']}")
    for action, fields in (("/enable", {"back": "list"}), ("", {"name": "taken-over", "url": "http://127.0.0.1:9/"}),
                           ("/secrets", {"name": "X-Evil", "value": "v"}), ("/delete", {})):
        resp = await bob.request.post(base + action, form={"csrf": bob_csrf, **fields}, max_redirects=0)
        assert resp.status == 404, (action, resp.status)
    after = await hook_of(gw, hook["id"])
    assert (after["name"], after["enabled"]) == ("acme-private", False)
    assert (await api(gw, "GET", f"/api/v2/hooks/{hook['id']}/secrets")).json() == {}

    # -- alice (acme): a form posted without its CSRF token is refused ----------------------
    alice = await new_page()
    await sign_in_sso(alice, gw, ALICE)
    enable = gw.url(f"/dashboard/hooks/{hook['id']}/enable")
    for csrf in (None, "", bob_csrf):  # none, empty, another session's
        form: dict[str, str | float | bool] = {"back": "list"}
        if csrf is not None:
            form["csrf"] = csrf
        resp = await alice.request.post(enable, form=form, max_redirects=0)
        assert resp.status == 403, (csrf, resp.status)
        assert "CSRF token is missing or wrong" in await resp.text()
    assert (await hook_of(gw, hook["id"]))["enabled"] is False
    resp = await alice.request.post(enable, form={"back": "list", "csrf": await csrf_of(alice)},
                                    max_redirects=0)
    assert resp.status == 303  # the same post with the token: done
    assert (await hook_of(gw, hook["id"]))["enabled"] is True

    # A tenant's session does not open the operator view.
    answer = await alice.goto(gw.url("/dashboard/operator"))
    assert answer is not None and answer.status == 403
    await expect(alice.get_by_role("heading", name="Forbidden")).to_be_visible()
    await checked(alice)

    # -- the operator: tenants, backlog and pauses across tenants ---------------------------
    olive = await new_page()
    await sign_in_sso(olive, gw, OLIVE)
    await expect(olive).to_have_url(gw.url("/dashboard/operator"))
    await expect(olive.get_by_role("heading", name="Operator")).to_be_visible()
    tenants = olive.get_by_role("region", name="Tenants")
    await expect(tenants.get_by_role("link", name="acme")).to_be_visible()
    await expect(tenants.get_by_role("link", name="beta")).to_be_visible()
    await checked(olive, "operator")
    await olive.get_by_label("Id (required)").fill("gamma")
    await olive.get_by_label("Name", exact=True).fill("Gamma Inc")
    await olive.get_by_role("button", name="Create tenant").click()
    await expect(olive).to_have_url(gw.url("/dashboard/operator/tenants/gamma?done=tenant-created"))
    await expect(olive.get_by_role("heading", name="Tenant gamma")).to_be_visible()
    await checked(olive)
    await olive.get_by_label("Allowed addresses (CIDR)").fill("127.0.0.0/8\n10.0.0.0/8")
    await olive.get_by_label("Hooks in all").fill("5")
    await olive.get_by_role("button", name="Save tenant").click()
    await expect(olive.get_by_role("status").first).to_have_text("Tenant saved.")
    await expect(olive.get_by_label("Allowed addresses (CIDR)")).to_have_value("127.0.0.0/8\n10.0.0.0/8")
    tenant = (await api(gw, "GET", "/api/v2/tenants/gamma", None)).json()
    assert (tenant["name"], tenant["allowedCidrs"]) == ("Gamma Inc", ["127.0.0.0/8", "10.0.0.0/8"])
    assert tenant["quotas"] == {"hooks": 5}
    await olive.get_by_label("Hooks in all").fill("many")
    await olive.get_by_role("button", name="Save tenant").click()
    hooks_field = olive.locator(".field", has=olive.get_by_label("Hooks in all"))
    await expect(hooks_field.locator(".error")).to_be_visible()
    await checked(olive)  # the tenant form with an error
