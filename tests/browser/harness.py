"""The browser tests' harness: Debian's Chromium driven by Playwright's async API, a real
OpenID Connect provider (tests/oidc/provider.mjs, oidc-provider on Node), axe-core for the
accessibility checks, screenshots for docs/, and a gateway process to point them at.

Everything stays on loopback: Chromium resolves no name but localhost, and every request a
page makes to another host is aborted and recorded (`LoopbackGuard`), so a test fails if a
page would fetch anything from the internet.

`TEST_BROWSER=required` (CI) turns a skip for a missing Chromium, Node or npm package into a
failure; `TEST_CHROMIUM` names another Chromium binary; `TEST_SCREENSHOTS=1` lets
`screenshot()` write docs/screenshots/.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from instances import Deployment, Instance
from playwright.async_api import BrowserContext, Page, Request, Route

TESTS = Path(__file__).resolve().parent.parent
OIDC_DIR = TESTS / "oidc"
AXE_JS = OIDC_DIR / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS_DIR = TESTS.parent / "docs" / "screenshots"
CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("TEST_BROWSER") == "required"  # CI sets it: a skip there would hide a gap
PROVIDER_START_TIMEOUT_S = 30.0

# Chromium resolves no host name but localhost (a page naming another host fails at once).
CHROMIUM_ARGS = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"]
# One size, language and clock zone, so that screenshots and layouts are the same on every run.
CONTEXT_OPTIONS: dict[str, Any] = {
    "viewport": {"width": 1280, "height": 800},
    "locale": "en-US",
    "timezone_id": "UTC",
    "color_scheme": "light",
    "reduced_motion": "reduce",
}


def require(ok: bool, what: str) -> None:
    """Skip the test when `what` is missing, or fail it when `TEST_BROWSER=required`."""
    if ok:
        return
    if REQUIRED:
        pytest.fail(f"{what} (TEST_BROWSER=required)", pytrace=False)
    pytest.skip(f"{what} (set TEST_BROWSER=required to fail instead)")


def require_chromium() -> None:
    require(Path(CHROMIUM).is_file(), f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")


def require_node_harness() -> None:
    require(shutil.which("node") is not None, "node is not installed (apt-get install nodejs)")
    for package in ("oidc-provider", "axe-core"):
        require((OIDC_DIR / "node_modules" / package).is_dir(),
                f"tests/oidc/node_modules/{package} is missing (make node)")


# -- the identity provider ------------------------------------------------------------------

# The ID token's claims the dashboard reads; oidc_dashboard_settings() names them in [dashboard]
# (not its defaults, so a test also shows that those settings are honoured).
TENANT_CLAIM = "https://hooks-gateway/tenant"
PERMISSIONS_CLAIM = "https://hooks-gateway/permissions"  # a list, like Auth0's `permissions`
READ, WRITE, ADMIN = "read:hooks", "write:hooks", "admin:tenants"


@dataclass(frozen=True)
class Account:
    """A user of the test identity provider; `claims` go into the ID token."""

    username: str
    password: str
    claims: dict[str, Any]

    @property
    def tenant(self) -> str | None:
        value = self.claims.get(TENANT_CLAIM)
        return None if value is None else str(value)


def account(username: str, tenant: str | None, *permissions: str) -> Account:
    claims: dict[str, Any] = {PERMISSIONS_CLAIM: list(permissions), "email": f"{username}@example.test",
                              "email_verified": True, "name": username.title()}
    if tenant is not None:
        claims[TENANT_CLAIM] = tenant
    return Account(username, f"{username}-password", claims)


ALICE = account("alice", "acme", READ, WRITE)  # a tenant's developer
RITA = account("rita", "acme", READ)  # may look, not change
BOB = account("bob", "beta", READ, WRITE)  # another tenant: must never see acme's hooks
OLIVE = account("olive", None, ADMIN)  # the operator
NOBODY = account("nora", "acme")  # signs in, but holds no permission
ACCOUNTS = (ALICE, RITA, BOB, OLIVE, NOBODY)


@dataclass(frozen=True)
class OidcClient:
    client_id: str
    client_secret: str
    redirect_uri: str


# The provider's one static client: its redirect URI is never followed (tests read the Location).
STATIC_CLIENT = OidcClient("hooks-dashboard-test", "static-client-secret", "http://127.0.0.1:9/callback")


@dataclass
class OidcProvider:
    """tests/oidc/provider.mjs in a process of its own, on a free loopback port."""

    issuer: str
    proc: subprocess.Popen[bytes]
    log: Path
    accounts: tuple[Account, ...]
    client: OidcClient = STATIC_CLIENT

    @classmethod
    def start(cls, workdir: Path, accounts: tuple[Account, ...] = ACCOUNTS,
              client: OidcClient = STATIC_CLIENT) -> OidcProvider:
        require_node_harness()
        log = workdir / "oidc-provider.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "OIDC_CLIENT_ID": client.client_id,
            "OIDC_CLIENT_SECRET": client.client_secret,
            "OIDC_REDIRECT_URIS": client.redirect_uri,
            "OIDC_ACCOUNTS": json.dumps(
                [{"username": a.username, "password": a.password, "claims": a.claims} for a in accounts]),
        }
        with open(log, "wb") as err:
            proc = subprocess.Popen(  # noqa: S603 - our own script
                ["node", "provider.mjs", "0"], cwd=OIDC_DIR, env=env,  # noqa: S607 - node from PATH
                stdout=subprocess.PIPE, stderr=err,
            )
        assert proc.stdout is not None
        end = time.monotonic() + PROVIDER_START_TIMEOUT_S
        while time.monotonic() < end:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline().decode(errors="replace").strip()
                if line.startswith("READY "):
                    return cls(issuer=line.split(" ", 1)[1], proc=proc, log=log, accounts=accounts,
                               client=client)
            if proc.poll() is not None:
                break
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(f"the OIDC provider did not start: {log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    async def discovery(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            resp = await http.get(f"{self.issuer}/.well-known/openid-configuration")
            resp.raise_for_status()
            return resp.json()  # type: ignore[no-any-return]

    async def register_client(
        self, redirect_uri: str, post_logout_redirect_uris: tuple[str, ...] = ()
    ) -> OidcClient:
        """A new confidential client for exactly this redirect URI (RFC 7591 registration)."""
        body = {
            "redirect_uris": [redirect_uri],
            "post_logout_redirect_uris": list(post_logout_redirect_uris),
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }
        async with httpx.AsyncClient() as http:
            resp = await http.post(f"{self.issuer}/reg", json=body)
            assert resp.status_code == 201, resp.text
            data = resp.json()
        return OidcClient(str(data["client_id"]), str(data["client_secret"]), redirect_uri)


async def sign_in_oidc(page: Page, account: Account) -> None:
    """On the provider's sign-in page (where the dashboard sent `page`), sign in as `account`
    and wait until the provider has redirected back; fails naming the provider's message."""
    provider = _origin(page.url)
    username = page.get_by_label("Username")
    if await username.count() != 1:  # fail at once, not after a locator's 30 s
        text = (await page.locator("body").inner_text())[:500]
        raise AssertionError(f"not on the provider's sign-in page: {page.url}\n{text}")
    await username.fill(account.username)
    await page.get_by_label("Password").fill(account.password)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Sign in").click()
    if _origin(page.url) == provider:
        message = await page.get_by_role("alert").all_inner_texts()
        raise AssertionError(f"sign-in as {account.username} stayed at the provider: {page.url} {message}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# -- the dashboard's settings -----------------------------------------------------------------

# Where the dashboard takes the provider's answer (gateway/dashboard/signin.py) and where it may
# land after signing out; the registered client allows exactly these.
DASHBOARD_CALLBACK_PATH = "/dashboard/auth/callback"
DASHBOARD_SIGNED_OUT_PATHS = ("/dashboard", "/dashboard/", "/dashboard/signin")


def oidc_dashboard_settings(provider: OidcProvider, client: OidcClient) -> dict[str, Any]:
    """The `[dashboard]` keys that point a gateway at the test provider."""
    return {
        "issuer": provider.issuer,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "redirect_url": client.redirect_uri,
        "tenant_claim": TENANT_CLAIM,
        "scope_claim": PERMISSIONS_CLAIM,
        "read_scope": READ,
        "write_scope": WRITE,
        "admin_scope": ADMIN,
    }


@dataclass
class GatewayProcess:
    """A `gateway serve` process on a SQLite file (tests/instances.py), with its OIDC client."""

    deployment: Deployment
    instance: Instance
    oidc_client: OidcClient | None = None

    @property
    def base(self) -> str:
        return self.instance.base

    def url(self, path: str = "/dashboard") -> str:
        return self.base + path

    def auth(self, tenant: str | None = "acme") -> dict[str, str]:
        return self.deployment.auth(tenant)

    def operator(self) -> dict[str, str]:
        return self.deployment.operator()

    def log(self) -> str:
        return self.deployment.log_of(self.instance)

    async def create_tenant(self, tenant_id: str = "acme", **fields: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base) as http:
            resp = await http.post(
                "/api/v2/tenants", json={"id": tenant_id, **fields}, headers=self.operator())
        assert resp.status_code == 201, resp.text
        return resp.json()  # type: ignore[no-any-return]

    async def create_hook(self, tenant: str = "acme", **fields: Any) -> dict[str, Any]:
        body = {"name": "hook", "triggerId": "post-user-registration", "url": "http://127.0.0.1:9/", **fields}
        async with httpx.AsyncClient(base_url=self.base) as http:
            resp = await http.post("/api/v2/hooks", json=body, headers=self.auth(tenant))
        assert resp.status_code == 201, resp.text
        return resp.json()  # type: ignore[no-any-return]


# -- pages ----------------------------------------------------------------------------------


@dataclass
class LoopbackGuard:
    """Aborts and records every request of a browser context to a host other than loopback."""

    blocked: list[str] = field(default_factory=list)

    async def attach(self, context: BrowserContext) -> None:
        await context.route("**/*", self._route)

    async def _route(self, route: Route, request: Request) -> None:
        if _is_loopback(urlsplit(request.url).hostname or ""):
            await route.continue_()
        else:
            self.blocked.append(request.url)
            await route.abort("blockedbyclient")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_axe_source: str | None = None


async def axe_violations(page: Page, options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now. axe is evaluated by the driver, not
    added as a <script>, so the page's Content-Security-Policy need not allow it."""
    global _axe_source
    require(AXE_JS.is_file(), "tests/oidc/node_modules/axe-core is missing (make node)")
    if _axe_source is None:
        _axe_source = AXE_JS.read_text()
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(f"() => {{ {_axe_source}\n }}")
    result = await page.evaluate(
        "async (options) => (await window.axe.run(document, options)).violations",
        {"resultTypes": ["violations"], **(options or {})},
    )
    return list(result)


async def assert_accessible(page: Page, impacts: tuple[str, ...] = ("serious", "critical")) -> None:
    """Fail listing every axe-core violation of these impacts on the page."""
    found = [v for v in await axe_violations(page) if v.get("impact") in impacts]
    if found:
        lines = [
            f"- {v['id']} ({v['impact']}): {v['help']} at "
            + ", ".join(" ".join(map(str, n["target"])) for n in v["nodes"][:5])
            for v in found
        ]
        raise AssertionError(f"axe-core on {page.url}:\n" + "\n".join(lines))


async def screenshot(page: Page, name: str, directory: Path = SCREENSHOTS_DIR) -> Path | None:
    """A full-page PNG at docs/screenshots/<name>.png when `TEST_SCREENSHOTS=1`, else nothing
    (an ordinary test run leaves the tree as it was)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise ValueError(f"screenshot name {name!r}: use lowercase letters, digits and dashes")
    if os.environ.get("TEST_SCREENSHOTS") != "1":
        return None
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a local folder, once
    path = directory / f"{name}.png"
    await page.screenshot(path=path, full_page=True, animations="disabled", caret="hide")
    return path

