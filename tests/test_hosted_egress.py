"""Outbound HTTP of hosted hooks' scripts (issue 16): fetch, axios and request reach the network only
through the gateway's egress proxy (gateway/runtime/egress_proxy.py, runner's egress.js), under
the same SSRF policy as hook URLs ([egress] allow_cidrs) and its caps; a raw socket fails closed.

Real hooks with a `script`, called on the blocking path, with every sandbox layer on; the script
answers what it got (or the error it saw) as claims. Receivers are real servers on 127.0.0.1;
no name but localhost is resolved. Needs what tests/test_hosted_hooks.py needs.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trustme
from aiohttp import web
from conftest import Gateway, Received, Receiver
from sockets import RawServers, endless_body, never_answering
from test_hosted_hooks import event_of, invoke, runtime_settings, sandbox_host, script_hook

from gateway.settings import Settings

pytestmark = pytest.mark.sqlite_only  # what is tested never reaches the store
__all__ = ["sandbox_host"]  # the fixture, imported for this module's tests

UID_FIRST = 2_000_000  # a range of this file's own (every hosted-hooks test file has one: 1.5 to 2.4 million)
POINT = "credentials-exchange"
CLAIM = "https://example.com/"

# A credentials-exchange hook running `body` (an async function's body that returns an object);
# each key of the object becomes a claim https://example.com/<key>; a throw becomes the claim
# `error` with what the script saw.
HOOK = """module.exports = function (client, scope, audience, context, cb) {
  const claims = (got) => Object.fromEntries(
    Object.entries(got).map(([k, v]) => ['https://example.com/' + k, v]));
  const reason = (e) => String((e && e.cause && e.cause.message) || (e && e.message) || e);
  (async () => { BODY })().then(
    (got) => cb(null, claims(got)),
    (e) => cb(null, claims({ error: reason(e) })));
};
"""


def hook_script(body: str, **values: Any) -> str:
    """HOOK around `body`; each NAME in `values` replaced by the value as a JavaScript literal."""
    for name, value in values.items():
        body = body.replace(name, json.dumps(value))
    return HOOK.replace("BODY", body)


MakeHosted = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_hosted(sandbox_host: None, make_gateway: Callable[..., Awaitable[Gateway]],
                      make_settings: Callable[..., Settings]) -> MakeHosted:
    """A gateway running hosted hooks with tenant acme; `runtime`/`egress`: settings overrides."""

    async def make(*, runtime: dict[str, Any] | None = None, egress: dict[str, Any] | None = None) -> Gateway:
        sections: dict[str, Any] = {"runtime": runtime_settings(uid_first=UID_FIRST, **(runtime or {}))}
        if egress is not None:
            sections["egress"] = egress
        gw = await make_gateway(make_settings(**sections))
        assert gw.svc.registry.hosting.refusal is None, gw.svc.registry.hosting.refusal
        await gw.create_tenant("acme")
        return gw

    return make


@pytest.fixture
async def raw() -> AsyncIterator[RawServers]:
    servers = RawServers()
    yield servers
    await servers.close()


async def api_receiver(make_receiver: Callable[..., Awaitable[Receiver]]) -> Receiver:
    async def answer(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"value": f"{request.method} {request.path} from the API"})

    return await make_receiver(answer)


async def claims_of(gw: Gateway, body: str, **values: Any) -> dict[str, Any]:
    """Create a hook running `body`, call it, and return its claims (without the prefix)."""
    await script_hook(gw, POINT, hook_script(body, **values), name="egress")
    answer = await invoke(gw, POINT, event_of(POINT))
    assert answer["status"] == "success", answer
    return {k.removeprefix(CLAIM): v for k, v in answer["data"].items() if k.startswith(CLAIM)}


FETCH = "const r = await fetch(URL + '/fetch'); return { fetch: (await r.json()).value };"
AXIOS = "const r = await require('axios').get(URL + '/axios'); return { axios: r.data.value };"
REQUEST = """return await new Promise((resolve, reject) => require('request')(
  { url: URL + '/request', json: true },
  (e, res, body) => e ? reject(e) : resolve({ request: body.value })));"""


async def test_fetch_axios_and_request_reach_an_allowed_loopback_receiver(
    make_hosted: MakeHosted, make_receiver: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await api_receiver(make_receiver)
    gw = await make_hosted()  # [egress] allow_cidrs: 127.0.0.0/8 and ::1 (tests' settings)
    url = receiver.url("")
    for order, body in enumerate((FETCH, AXIOS, REQUEST), start=1):
        await script_hook(gw, POINT, hook_script(body, URL=url), name=f"client-{order}", order=order)
    answer = await invoke(gw, POINT, event_of(POINT))
    assert answer["status"] == "success", answer
    data = answer["data"]
    assert data[CLAIM + "fetch"] == "GET /fetch from the API", data
    assert data[CLAIM + "axios"] == "GET /axios from the API", data
    assert data[CLAIM + "request"] == "GET /request from the API", data
    assert sorted(r.path for r in receiver.requests) == ["/axios", "/fetch", "/request"]


async def test_https_runs_tls_through_the_tunnel_and_checks_the_certificate(
    make_hosted: MakeHosted, aiohttp_server: Callable[..., Awaitable[Any]]
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)  # a certificate for the address itself

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"value": "over TLS"})

    app = web.Application()
    app.router.add_get("/", hello)
    server = await aiohttp_server(app, host="127.0.0.1", ssl=server_context)
    gw = await make_hosted()
    body = """
    const get = (ca) => new Promise((resolve, reject) => require('https').get(
      { host: '127.0.0.1', port: PORT, path: '/', ca }, (res) => {
        let text = '';
        res.on('data', (c) => { text += c; });
        res.on('end', () => resolve(JSON.parse(text).value));
      }).on('error', reject));
    const trusted = await get(CA);
    const untrusted = await get(undefined).catch((e) => 'refused: ' + e.code);
    return { trusted, untrusted };"""
    got = await claims_of(gw, body, PORT=server.port, CA=ca.cert_pem.bytes().decode())
    assert got == {"trusted": "over TLS", "untrusted": "refused: UNABLE_TO_VERIFY_LEAF_SIGNATURE"}, got


async def test_loopback_is_refused_without_allow_cidrs(
    make_hosted: MakeHosted, make_receiver: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await api_receiver(make_receiver)
    gw = await make_hosted(egress={"allow_http": True, "allow_cidrs": []})
    got = await claims_of(gw, FETCH, URL=receiver.url(""))
    assert "403" in got["error"] and "refused destination" in got["error"] and "loopback" in got["error"], got
    assert receiver.requests == []


async def test_private_and_metadata_addresses_are_refused(make_hosted: MakeHosted) -> None:
    gw = await make_hosted()  # loopback allowed, nothing else: the proxy refuses before connecting
    body = """
    const error = (url) => fetch(url).then(() => 'reached', (e) => String(e.cause && e.cause.message));
    const axiosError = (url) => require('axios').get(url).then(() => 'reached', (e) => e.message);
    return { metadata: await error('http://169.254.169.254/latest/meta-data/'),
             private: await error('http://10.0.0.1/'),
             axios: await axiosError('http://169.254.169.254/latest/meta-data/') };"""
    got = await claims_of(gw, body)
    assert "link-local (cloud metadata)" in got["metadata"] and "403" in got["metadata"], got
    assert "10.0.0.0/8, private" in got["private"], got
    assert "link-local (cloud metadata)" in got["axios"], got


async def test_a_raw_socket_fails_closed(make_hosted: MakeHosted, raw: RawServers) -> None:
    peer = await raw.start(never_answering)
    gw = await make_hosted()
    body = """
    return await new Promise((resolve) => {
      const s = require('net').connect(PORT, '127.0.0.1');
      s.on('connect', () => { s.destroy(); resolve({ raw: 'connected' }); });
      s.on('error', (e) => resolve({ raw: e.code }));
    });"""
    got = await claims_of(gw, body, PORT=peer.port)
    assert got == {"raw": "EAFNOSUPPORT"}, got  # the seccomp filter: Unix sockets only
    assert peer.accepted == 0


async def test_tunnels_over_egress_connections_are_refused(make_hosted: MakeHosted, raw: RawServers) -> None:
    peer = await raw.start(never_answering)  # holds every request: each keeps its tunnel open
    gw = await make_hosted(runtime={"egress_connections": 2})
    body = """
    const aborts = new AbortController();
    const calls = [1, 2, 3].map(() => fetch(URL, { signal: aborts.signal }));
    const first = await Promise.race(calls.map((c) => c.then(() => 'answered', (e) => e)));
    aborts.abort();
    return { first: String(first.cause && first.cause.message) };"""
    got = await claims_of(gw, body, URL=f"http://127.0.0.1:{peer.port}/")
    assert "429" in got["first"] and "too many tunnels: at most 2 at once" in got["first"], got
    assert peer.accepted == 2


async def test_a_download_over_the_byte_cap_is_cut(make_hosted: MakeHosted, raw: RawServers) -> None:
    small = await raw.start(endless_body(512 << 10))
    large = await raw.start(endless_body(2 << 20))
    gw = await make_hosted(runtime={"egress_bytes_mib": 1})
    body = """
    const size = (url) => fetch(url).then((r) => r.arrayBuffer())
      .then((b) => b.byteLength, (e) => 'cut: ' + e.message);
    return { small: await size(SMALL), large: await size(LARGE) };"""
    got = await claims_of(gw, body, SMALL=f"http://127.0.0.1:{small.port}/",
                          LARGE=f"http://127.0.0.1:{large.port}/")
    assert got["small"] == 512 << 10, got
    assert str(got["large"]).startswith("cut: "), got


async def test_with_egress_connections_0_scripts_have_no_network(
    make_hosted: MakeHosted, make_receiver: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await api_receiver(make_receiver)
    gw = await make_hosted(runtime={"egress_connections": 0})
    got = await claims_of(gw, FETCH, URL=receiver.url(""))
    assert got == {"error": "egress: outbound connections are off for hooks on this gateway"}, got
    assert receiver.requests == []
