"""The dashboard's pages for hooks with a `script` (issue 16): the hook's page shows the script as
read-only text and the list says "hosted script" where a URL hook shows its URL; a tenant creates
and edits a script hook in the same form as a URL hook, a textarea beside the URL field (exactly
one of the two), with the Management API's errors beside the field, such as why this gateway
cannot run scripts. The hooks created here really run (tests/test_hosted_hooks.py's sandbox)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from conftest import Gateway
from dashboard_pages import Browser, Browsers, browser_factory, signed_in, text_of
from npm_registry import NpmRegistry
from test_dashboard_hooks import api_hook, field_error, hook_id_of
from test_hosted_dependencies import (
    GREETING,
    MakeGateway,
    dependencies_dir,
    greeting_package,
    make_hosted,
    npm_host,
    registry,
    requiring,
)
from test_hosted_hooks import EXTENSION_SECRET, event_of, runtime_settings, sandbox_host

from gateway.auth import SCOPE_READ
from gateway.settings import Settings

# The fixtures, imported for this module's tests.
__all__ = ["dependencies_dir", "make_hosted", "npm_host", "registry", "sandbox_host"]

UID_FIRST = 1_800_000  # a range of this file's own (every hosted-hooks test file has one: 1.5 to 2.6 million)
DEPENDENCIES_UID_FIRST = 2_600_000  # for the gateway that installs npm modules
# A script as a browser sends a textarea: lines end in CRLF. Its comment would be markup if the
# pages did not escape it.
SCRIPT = (
    "// <img src=x onerror=alert(1)> </textarea></pre>\r\n"
    "module.exports = function (client, scope, audience, context, cb) {\r\n"
    "  cb(null, { 'https://example.com/from': 'the dashboard' });\r\n"
    "};\r\n"
)
EDITED = ("module.exports = function (client, scope, audience, context, cb) {\n"
          "  cb(null, { 'https://example.com/from': 'edited' });\n};\n")


@pytest.fixture
async def browsers() -> AsyncIterator[Browsers]:
    async with browser_factory() as make:
        yield make


@pytest.fixture
async def hosting(sandbox_host: None, make_gateway: Callable[..., Awaitable[Gateway]],
                  make_settings: Callable[..., Settings]) -> Gateway:
    """A gateway that runs hooks' scripts, with tenant `acme`."""
    gw = await make_gateway(make_settings(runtime=runtime_settings(uid_first=UID_FIRST)))
    assert gw.svc.registry.hosting.refusal is None, gw.svc.registry.hosting.refusal
    await gw.create_tenant("acme")
    return gw


async def create(browser: Browser, **fields: Any) -> Any:
    data = {"name": "hosted", "triggerId": "credentials-exchange", "url": "", "script": SCRIPT,
            "enabled": "on", **fields}
    return await browser.act("/dashboard/hooks", data)


def script_shown(page: str) -> str:
    """The read-only script block of a hook's page, as text."""
    found = re.search(r'<pre class="code"[^>]*><code>(.*?)</code></pre>', page, re.S)
    assert found, "the page shows no script"
    return text_of(found.group(1))


async def answer_of(gw: Gateway) -> dict[str, Any]:
    resp = await gw.forward("credentials-exchange", event_of("credentials-exchange"))
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


@pytest.mark.sqlite_only
async def test_a_script_hook_is_created_shown_and_run(hosting: Gateway, browsers: Browsers) -> None:
    browser = await signed_in(browsers, hosting)
    status, form = await browser.page("/dashboard/hooks/new?point=credentials-exchange")
    assert status == 200 and re.search(r'<textarea id="f-script" name="script"', form)
    resp = await create(browser)
    page = await resp.text()
    assert resp.status == 200 and "Hook created." in page, page
    hook_id = hook_id_of(resp)
    _, hook = await api_hook(hosting, hook_id)
    assert hook["script"] == SCRIPT.replace("\r\n", "\n") and hook["url"] is None  # lines end in LF
    # its page: the script as text (escaped), no URL
    assert script_shown(page) == text_of(SCRIPT.replace("<", "&lt;"))
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt; &lt;/textarea&gt;" in page
    assert "a hosted script" in text_of(page) and not re.search(r"<dt>URL</dt>", page)
    # the list: "hosted script" where a URL hook has its URL
    by_url = await hosting.create_hook(name="by-url", triggerId="credentials-exchange",
                                       url="https://hooks.example.com/x")
    _, listed = await browser.page("/dashboard/hooks")
    rows = listed.split("<tr>")
    (hosted_row,) = [text_of(r) for r in rows if f'href="/dashboard/hooks/{hook_id}"' in r]
    (url_row,) = [text_of(r) for r in rows if f'href="/dashboard/hooks/{by_url["id"]}"' in r]
    assert "hosted script" in hosted_row and "hosted script" not in url_row
    assert "https://hooks.example.com/x" in url_row
    # and it runs
    await hosting.add_secrets(hook_id, {"auth0-extension-secret": EXTENSION_SECRET})
    answer = await answer_of(hosting)
    assert answer["status"] == "success" and answer["data"]["https://example.com/from"] == "the dashboard"


@pytest.mark.sqlite_only
async def test_a_script_hook_is_edited_and_switched_to_a_url_and_back(
    hosting: Gateway, browsers: Browsers
) -> None:
    browser = await signed_in(browsers, hosting)
    hook_id = hook_id_of(await create(browser, enabled=""))
    path = f"/dashboard/hooks/{hook_id}"
    _, page = await browser.page(path)
    textarea = re.search(r'<textarea id="f-script"[^>]*>(.*?)</textarea>', page, re.S)
    assert textarea and text_of(textarea.group(1)) == text_of(SCRIPT.replace("<", "&lt;"))
    assert re.search(r'<input id="f-url" name="url" type="url" value=""', page)
    fields = {"name": "hosted", "url": "", "script": EDITED, "format": "auth0", "timeoutMs": "3000"}
    resp = await browser.submit(page, path, fields)
    assert resp.status == 200 and "Changes saved." in await resp.text()
    _, hook = await api_hook(hosting, hook_id)
    assert hook["script"] == EDITED and hook["timeoutMs"] == 3000
    # both: refused beside the script, what was typed kept
    resp = await browser.submit(page, path, {**fields, "url": "https://hooks.example.com/x"})
    assert resp.status == 400
    refused = await resp.text()
    assert "either a 'url' or a 'script', not both" in field_error(refused, "f-script")
    assert 'value="https://hooks.example.com/x"' in refused and "&#39;edited&#39;" in refused
    # to a URL: the script goes
    resp = await browser.submit(page, path, {**fields, "url": "https://hooks.example.com/x", "script": ""})
    assert resp.status == 200
    switched = await resp.text()
    _, hook = await api_hook(hosting, hook_id)
    assert hook["url"] == "https://hooks.example.com/x" and hook["script"] is None
    assert "<pre class=\"code\"" not in switched and "<dt>URL</dt>" in switched
    # and back to a script: the URL goes
    resp = await browser.submit(switched, path, {**fields, "url": ""})
    assert resp.status == 200
    _, hook = await api_hook(hosting, hook_id)
    assert hook["script"] == EDITED and hook["url"] is None
    # a script hook takes the point's body unchanged: the format's rule, beside the format
    resp = await browser.submit(switched, path, {**fields, "format": "standard"})
    assert resp.status == 400
    assert "'format' must be 'auth0'" in field_error(await resp.text(), "f-format")


@pytest.mark.sqlite_only
async def test_a_read_only_user_sees_the_script_but_no_form(hosting: Gateway, browsers: Browsers) -> None:
    editor = await signed_in(browsers, hosting)
    hook_id = hook_id_of(await create(editor))
    viewer = await signed_in(browsers, hosting, scopes=(SCOPE_READ,))
    status, page = await viewer.page(f"/dashboard/hooks/{hook_id}")
    assert status == 200
    assert "module.exports = function (client, scope, audience, context, cb)" in script_shown(page)
    assert "<textarea" not in page and "<form method=\"post\" action=\"/dashboard/hooks/" not in page


async def test_with_the_runtime_off_the_form_says_why_beside_the_script(
    gateway: Gateway, browsers: Browsers
) -> None:
    browser = await signed_in(browsers, gateway)
    _, form = await browser.page("/dashboard/hooks/new")
    assert "This gateway cannot run scripts now: hosted hooks are off on this gateway" in text_of(form)
    resp = await create(browser)
    assert resp.status == 400
    page = await resp.text()
    error = field_error(page, "f-script")
    assert "cannot run on this gateway" in error and "[runtime] enabled = false" in error
    assert re.search(r'id="f-script"[^>]*aria-invalid="true"', page)
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page  # kept, as text
    # neither a URL nor a script: the URL's rule, beside the URL
    resp = await create(browser, script="  \r\n")
    assert resp.status == 400 and field_error(await resp.text(), "f-url")
    listed = await gateway.client.get("/api/v2/hooks", headers=gateway.auth())
    assert await listed.json() == []


@pytest.mark.sqlite_only
async def test_a_script_hooks_npm_modules_are_given_shown_and_used(
    make_hosted: MakeGateway, registry: NpmRegistry, browsers: Browsers,
) -> None:
    """The form's npm modules box (`name@version` a line) becomes the hook's `dependencies`: the
    set is installed on save, listed on the hook's page, prefilled when editing, and the script
    requires it; a spec the API refuses is shown beside the box, and nothing is saved."""
    registry.publish("greet", "1.2.0", greeting_package(GREETING))
    gw = await make_hosted(uid_first=DEPENDENCIES_UID_FIRST)
    browser = await signed_in(browsers, gw)
    resp = await create(browser, script=requiring("greet"), dependencies="greet@1.2.0\r\n")
    page = await resp.text()
    assert resp.status == 200 and "Hook created." in page, page
    hook_id = hook_id_of(resp)
    assert "greet@1.2.0" in text_of(page)
    _, form = await browser.page(f"/dashboard/hooks/{hook_id}")  # the page has the edit form
    prefilled = re.search(r'<textarea id="f-dependencies" [^>]*>(.*?)</textarea>', form, re.S)
    assert prefilled and prefilled.group(1) == "greet@1.2.0", form
    answer = await answer_of(gw)
    assert answer["status"] == "success" and answer["data"]["https://example.com/got"] == GREETING, answer

    refused = await create(browser, name="refused", script=requiring("greet"),
                           dependencies="greet@git+https://github.com/x/greet.git")
    assert refused.status == 400
    assert "dependencies" in field_error(await refused.text(), "f-dependencies").lower()
    hooks = await (await gw.client.get("/api/v2/hooks", headers=gw.auth())).json()
    assert [h["name"] for h in hooks] == ["hosted"]
