"""The dashboard against hostile input and hostile peers: odd form encodings and query values
are a 4xx page, never a 500; a tenant's user never reaches the operator view, whatever its
permissions say; an ID token the provider issued to another client is refused; and an
identity provider's discovery document cannot send the gateway to an internal address."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestServer
from conftest import Gateway, Receiver
from cryptography.hazmat.primitives.asymmetric import rsa
from dashboard_pages import (
    Browser,
    Browsers,
    browser_factory,
    csrf_in,
    operator_token,
    sign_in_with_token,
    signed_in,
    text_of,
)
from jwt.algorithms import RSAAlgorithm
from oidc_fake_provider import CLIENT_ID, CLIENT_SECRET, Provider, start_provider

from gateway.dashboard.sessions import token_hash
from gateway.dashboard.signin import MAX_NAME_CHARS
from gateway.points import sample_event
from gateway.settings import Settings

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeServer = Callable[..., Awaitable[TestServer]]
TENANT_CLAIM = "https://hooks.example.com/tenant"


@pytest.fixture
async def browsers() -> AsyncIterator[Browsers]:
    async with browser_factory() as make:
        yield make


# -- malformed input: a 4xx page, never a 500 ------------------------------------------------------


@pytest.mark.parametrize("number", ["²", "1²"])
async def test_a_page_number_in_other_digits_is_not_a_500(
    gateway: Gateway, browsers: Browsers, number: str
) -> None:
    """`str.isdigit()` is true for "²", which `int()` refuses."""
    tenant = await signed_in(browsers, gateway)
    operator = await browsers(gateway)
    await sign_in_with_token(operator, operator_token(gateway))
    for browser, path in ((tenant, "/dashboard/deliveries"), (operator, "/dashboard/operator")):
        resp = await browser.session.get(browser.url(path), params={"page": number}, allow_redirects=False)
        assert resp.status < 500, (path, number, resp.status)
        assert resp.url.path == path


@pytest.mark.parametrize(
    ("content_type", "part_type"),
    [
        ("application/x-www-form-urlencoded; charset=no-such-charset", None),
        ("application/x-www-form-urlencoded; charset=rot13", None),  # a codec, but not of text
        ("multipart/form-data; boundary=b0undary", "text/plain; charset=no-such-charset"),
        ("multipart/form-data; boundary=b0undary", "text/plain; charset=rot13"),
    ],
)
async def test_a_form_in_an_unknown_charset_is_a_400_not_a_500(
    gateway: Gateway, browsers: Browsers, content_type: str, part_type: str | None
) -> None:
    browser = await signed_in(browsers, gateway)
    hook = await gateway.create_hook(name="kept")
    _, page = await browser.page("/dashboard/hooks")
    token = csrf_in(page)
    if part_type is None:
        body = f"csrf={token}&name=renamed&url=https%3A%2F%2Fx.example%2F".encode()
    else:
        body = (
            f'--b0undary\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{token}\r\n'
            f'--b0undary\r\nContent-Disposition: form-data; name="name"\r\nContent-Type: {part_type}\r\n\r\n'
            "renamed\r\n--b0undary--\r\n"
        ).encode()
    resp = await browser.session.post(browser.url(f"/dashboard/hooks/{hook['id']}"), data=body,
                                      headers={"Content-Type": content_type}, allow_redirects=False)
    assert resp.status == 400
    assert "could not be read" in text_of(await resp.text())
    after = await gateway.svc.store.get_hook("acme", hook["id"])
    assert after is not None and after.name == "kept"


@pytest.mark.parametrize(("suffix", "disposition"), [
    ("", 'form-data; name="name"'),
    ("/test", 'form-data; name="event"'),
    ("/secrets", 'form-data; name="name"'),
    ("/replay", 'form-data; name="since"'),
    ("", "form-data; name*=utf-7''%2B2AA-"),  # RFC 2231: the field's name itself
])
async def test_a_form_field_that_decodes_to_a_lone_surrogate_is_a_400_not_a_500(
    gateway: Gateway, browsers: Browsers, suffix: str, disposition: str
) -> None:
    """UTF-7 (a charset a multipart part may name) decodes "+2AA-" to a lone surrogate, which no
    page, log or database can encode: the form is refused as unreadable, and nothing changes."""
    browser = await signed_in(browsers, gateway)
    hook = await gateway.create_hook(name="kept")
    _, page = await browser.page("/dashboard/hooks")
    token = csrf_in(page)
    body = (
        f'--b0undary\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{token}\r\n'
        f"--b0undary\r\nContent-Disposition: {disposition}\r\nContent-Type: text/plain; charset=utf-7\r\n\r\n"
        "+2AA-\r\n--b0undary--\r\n"
    ).encode()
    resp = await browser.session.post(browser.url(f"/dashboard/hooks/{hook['id']}{suffix}"), data=body,
                                      headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
                                      allow_redirects=False)
    assert resp.status == 400
    assert "could not be read" in text_of(await resp.text())
    after = await gateway.svc.store.get_hook("acme", hook["id"])
    assert after is not None and after.name == "kept"
    assert await gateway.svc.store.secret_names("acme", hook["id"]) == []


async def _raw_get(port: int, target: bytes, cookie: bytes,
                   host: bytes = b"gw") -> tuple[int, dict[str, list[str]]]:
    """GET over a plain socket, to send headers no HTTP client would (bytes not UTF-8)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\nCookie: "
                     + cookie + b"\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(head[0].split()[1]), headers


@pytest.mark.parametrize(
    ("target", "cookie", "status", "location"),
    [
        (b"/dashboard/hooks", b"gw_session=\xff\xfe", 303, "/dashboard/signin?done=expired"),
        (b"/dashboard/signin", b"gw_session=\xff\xfe", 200, None),
        (b"/dashboard/signin", b"gw_presession=\xff\xfe", 200, None),
    ],
)
async def test_a_cookie_that_is_not_utf8_is_no_cookie_not_a_500(
    gateway: Gateway, target: bytes, cookie: bytes, status: int, location: str | None
) -> None:
    """A cookie a sibling site could set (or any client send) must not break the dashboard for
    the browser that holds it: it is treated as absent and replaced."""
    assert gateway.client.server.port is not None
    got, headers = await _raw_get(gateway.client.server.port, target, cookie)
    assert got == status
    assert headers.get("location", [None])[0] == location
    if b"presession" in cookie:  # a fresh, well-formed one replaces it
        assert any(c.startswith("gw_presession=") and not c.startswith("gw_presession=;")
                   for c in headers["set-cookie"])


async def test_changes_in_the_dashboard_spend_the_tenants_management_api_tokens(
    make_gateway: MakeGateway, make_settings: Callable[..., Settings], browsers: Browsers,
    make_receiver: Callable[..., Awaitable[Receiver]],
) -> None:
    """Each change is the Management API call it wraps, so it is under the same per-tenant rate
    limit: a session cannot send test events (or make any change) faster than a token could."""
    gateway = await make_gateway(make_settings(ratelimit={"management_rate": 0.001, "management_burst": 4}))
    await gateway.create_tenant("acme")
    receiver = await make_receiver()
    hook = await gateway.create_hook(name="tested", url=receiver.url(), enabled=True)  # one token
    browser = await signed_in(browsers, gateway)
    _, page = await browser.page(f"/dashboard/hooks/{hook['id']}/test")
    event = json.dumps(sample_event("post-user-registration"))
    statuses = []
    for _ in range(6):
        resp = await browser.submit(page, f"/dashboard/hooks/{hook['id']}/test", {"event": event},
                                    follow=False)
        statuses.append(resp.status)
        if resp.status == 429:
            assert int(resp.headers["Retry-After"]) >= 1
            assert "Too Many Requests" in text_of(await resp.text())
    assert statuses == [200, 200, 200, 429, 429, 429]
    assert len(receiver.requests) == 3
    resp = await browser.submit(page, "/dashboard/signout")  # signing out is never held back
    assert resp.status == 200 and resp.url.path == "/dashboard/signin"
    assert browser.cookie("gw_session") is None


# -- OpenID Connect: who gets what ---------------------------------------------------------------


@pytest.fixture
async def provider(aiohttp_server: MakeServer) -> Provider:
    return await start_provider(aiohttp_server)


@pytest.fixture
async def oidc_gateway(make_gateway: MakeGateway, make_settings: Callable[..., Settings],
                       provider: Provider) -> Gateway:
    gw = await make_gateway(make_settings(dashboard={
        "issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "tenant_claim": TENANT_CLAIM, "scope_claim": "permissions",
    }))
    await gw.create_tenant("acme")
    await gw.create_tenant("globex")
    return gw


async def _oidc_sign_in(browser: Browser) -> ClientResponse:
    start = await browser.get("/dashboard/signin/oidc")
    assert start.status == 303, await start.text()
    at_provider = await browser.session.get(start.headers["Location"], allow_redirects=False)
    assert at_provider.status == 302, await at_provider.text()
    return await browser.session.get(at_provider.headers["Location"])


@pytest.mark.parametrize(("host", "status"), [
    (b"\xff\xfe", 400), (b"evil.example/x?", 400), (b'a"b', 400),
    (b"gw.example:8443", 303), (b"[::1]:80", 303),
])
async def test_the_callback_address_is_built_only_from_a_host_name(
    oidc_gateway: Gateway, host: bytes, status: int
) -> None:
    """Without `[dashboard] redirect_url` the callback's address comes from the Host header: one
    that is not a host (and port) is refused, never a 500 and never a path or query smuggled
    into the `redirect_uri` the provider is asked to send the code to."""
    assert oidc_gateway.client.server.port is not None
    got, headers = await _raw_get(oidc_gateway.client.server.port, b"/dashboard/signin/oidc", b"a=b", host)
    assert got == status
    if status == 303:
        redirect_uri = parse_qs(urlsplit(headers["location"][0]).query)["redirect_uri"][0]
        assert redirect_uri == f"http://{host.decode()}/dashboard/auth/callback"


async def test_a_tenant_user_with_the_admin_permission_gets_no_operator_view(
    oidc_gateway: Gateway, provider: Provider, browsers: Browsers
) -> None:
    """The Management API refuses tenant management to a token that names a tenant, whatever its
    scopes; a dashboard session of a tenant is held to the same rule."""
    provider.user = {"sub": "u-1", TENANT_CLAIM: "acme", "permissions": ["write:hooks", "admin:tenants"]}
    browser = await browsers(oidc_gateway)
    resp = await _oidc_sign_in(browser)
    assert resp.status == 200 and resp.url.path == "/dashboard/hooks"
    assert 'href="/dashboard/operator"' not in await resp.text()
    for path in ("/dashboard/operator", "/dashboard/operator/tenants/globex"):
        resp = await browser.get(path)
        assert resp.status == 403, path
        assert "globex" not in await resp.text()
    resp = await browser.act("/dashboard/operator/tenants/globex",
                             {"name": "pwned", "allowedCidrs": "192.0.2.1/32"})
    assert resp.status == 403
    resp = await browser.act("/dashboard/operator/tenants", {"id": "made-by-a-tenant"})
    assert resp.status == 403
    globex = await oidc_gateway.svc.store.get_tenant("globex")
    assert globex is not None and globex.name != "pwned" and globex.allowed_cidrs == ()
    assert await oidc_gateway.svc.store.get_tenant("made-by-a-tenant") is None


async def test_a_tenant_user_with_only_the_admin_permission_is_refused(
    oidc_gateway: Gateway, provider: Provider, browsers: Browsers
) -> None:
    provider.user = {"sub": "u-1", TENANT_CLAIM: "acme", "permissions": ["admin:tenants"]}
    browser = await browsers(oidc_gateway)
    resp = await _oidc_sign_in(browser)
    assert resp.status == 403
    assert browser.cookie("gw_session") is None
    assert (await browser.get("/dashboard/operator")).status == 303  # to the sign-in page


async def test_an_id_token_issued_to_another_client_is_refused(
    oidc_gateway: Gateway, provider: Provider, browsers: Browsers
) -> None:
    """OIDC Core 3.1.3.7: an `azp` that is not this client's id means the token was issued to
    another client, even when `aud` names this one."""
    provider.user = {"sub": "u-1", TENANT_CLAIM: "acme", "permissions": ["write:hooks"],
                     "azp": "another-client"}
    browser = await browsers(oidc_gateway)
    resp = await _oidc_sign_in(browser)
    assert resp.status == 403
    assert "azp" in text_of(await resp.text())
    assert browser.cookie("gw_session") is None


@pytest.mark.parametrize(
    ("email", "shown"),
    [
        ("ada\ud800@acme.example", "ada@acme.example"),  # a lone surrogate (JSON allows "\ud800")
        ("ada\x00@acme.example", "ada@acme.example"),
        ("\u202eelpmaxe.emca@ada", "elpmaxe.emca@ada"),  # a bidi override, to disguise a name
        ("a" * 100_000, "a" * MAX_NAME_CHARS),
    ],
)
async def test_a_hostile_display_name_is_stored_and_shown_tamed(
    oidc_gateway: Gateway, provider: Provider, browsers: Browsers, email: str, shown: str
) -> None:
    """The user's name comes from the identity provider, where users often edit it themselves."""
    provider.user = {"sub": "u-1\x00\ud800", "email": email, TENANT_CLAIM: "acme",
                     "permissions": ["write:hooks"]}
    browser = await browsers(oidc_gateway)
    resp = await _oidc_sign_in(browser)
    assert resp.status == 200 and resp.url.path == "/dashboard/hooks"
    page = await resp.text()
    assert f"{shown} · tenant" in text_of(page)
    cookie = browser.cookie("gw_session")
    assert cookie is not None
    record = await oidc_gateway.svc.store.get_session(token_hash(cookie))
    assert record is not None and record.display_name == shown and record.subject == "u-1"


# -- OpenID Connect: a discovery document that names internal addresses ---------------------------


@dataclass
class HostileIdp:
    """An identity provider whose discovery document names, for one endpoint, another server
    (`internal`: a service on the gateway's own network that must not be reached)."""

    issuer_server: TestServer
    internal: TestServer
    key: rsa.RSAPrivateKey
    nonce: str = ""
    internal_requests: list[str] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return str(self.issuer_server.make_url("")).rstrip("/")


async def _hostile_idp(aiohttp_server: MakeServer, internal_endpoint: str, internal_host: str) -> HostileIdp:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    holder: dict[str, HostileIdp] = {}

    async def jwks(request: web.Request) -> web.Response:
        public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        public.update({"kid": "k1", "alg": "RS256", "use": "sig"})
        return web.json_response({"keys": [public]})

    async def token(request: web.Request) -> web.Response:
        idp = holder["idp"]
        now = int(time.time())
        claims = {"iss": idp.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": idp.nonce,
                  "sub": "u-1", TENANT_CLAIM: "acme", "permissions": ["write:hooks"]}
        id_token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        return web.json_response({"access_token": "a", "token_type": "Bearer", "id_token": id_token})

    async def discovery(request: web.Request) -> web.Response:
        idp = holder["idp"]
        port = idp.internal.port
        doc = {
            "issuer": idp.issuer,
            "authorization_endpoint": f"{idp.issuer}/authorize",
            "token_endpoint": f"{idp.issuer}/token",
            "jwks_uri": f"{idp.issuer}/jwks",
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }
        doc[internal_endpoint] = f"http://{internal_host}:{port}/{internal_endpoint}"
        return web.json_response(doc)

    issuer_app = web.Application()
    issuer_app.router.add_get("/.well-known/openid-configuration", discovery)
    issuer_app.router.add_get("/jwks", jwks)
    issuer_app.router.add_post("/token", token)

    async def internal_handler(request: web.Request) -> web.StreamResponse:
        holder["idp"].internal_requests.append(request.path)
        return await (jwks(request) if request.method == "GET" else token(request))

    internal_app = web.Application()
    internal_app.router.add_route("*", "/{tail:.*}", internal_handler)
    issuer_server = await aiohttp_server(issuer_app, host="127.0.0.1")
    internal = await aiohttp_server(internal_app, host="127.0.0.1")
    idp = HostileIdp(issuer_server, internal, key)
    holder["idp"] = idp
    return idp


@pytest.mark.parametrize("internal_host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("internal_endpoint", ["token_endpoint", "jwks_uri"])
async def test_discovery_cannot_send_the_gateway_to_an_internal_address(
    make_gateway: MakeGateway, make_settings: Callable[..., Settings], browsers: Browsers,
    aiohttp_server: MakeServer, internal_endpoint: str, internal_host: str,
) -> None:
    """The operator configured the issuer; the endpoints its discovery document names on any
    other host and port are reached only through the egress guard (here: loopback is not in
    `[egress] allow_cidrs`), so a compromised provider cannot make the gateway call services on
    its own network (or send the client secret there)."""
    idp = await _hostile_idp(aiohttp_server, internal_endpoint, internal_host)
    gw = await make_gateway(make_settings(
        dashboard={"issuer": idp.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                   "tenant_claim": TENANT_CLAIM, "scope_claim": "permissions"},
        egress={"allow_cidrs": []},
    ))
    await gw.create_tenant("acme")
    browser = await browsers(gw)
    start = await browser.get("/dashboard/signin/oidc")
    if start.status == 303:  # discovery accepted: go on to the callback, as the provider would send
        query = parse_qs(urlsplit(start.headers["Location"]).query)
        idp.nonce = query["nonce"][0]
        resp = await browser.session.get(browser.url("/dashboard/auth/callback"),
                                         params={"code": "c", "state": query["state"][0]},
                                         allow_redirects=False)
    else:
        resp = start
    assert resp.status == 502, await resp.text()
    assert "Sign-in is not available" in text_of(await resp.text())
    assert idp.internal_requests == []
    assert browser.cookie("gw_session") is None


async def test_discovery_may_name_endpoints_on_the_issuers_own_host_and_port(
    make_gateway: MakeGateway, make_settings: Callable[..., Settings], browsers: Browsers, provider: Provider
) -> None:
    """The issuer the operator configured is trusted as it is, even on an address the egress
    guard refuses (an identity provider on the operator's own network)."""
    gw = await make_gateway(make_settings(
        dashboard={"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                   "tenant_claim": TENANT_CLAIM, "scope_claim": "permissions"},
        egress={"allow_cidrs": []},
    ))
    await gw.create_tenant("acme")
    provider.user = {"sub": "u-1", TENANT_CLAIM: "acme", "permissions": ["write:hooks"]}
    resp = await _oidc_sign_in(await browsers(gw))
    assert resp.status == 200 and resp.url.path == "/dashboard/hooks"
