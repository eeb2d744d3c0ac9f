"""Hosted hooks end to end: a hook's `script` (Auth0's Management API field) runs in a sandboxed
node process the gateway supervises, through Auth0's own compilers, on the blocking and the
asynchronous paths, with everything downstream (chains, failure policy, records) unchanged.

Auth0-style sample scripts (tests/node/hooks/) run unchanged; hostile ones end as recorded
failed attempts while other hooks keep answering (tests/test_hosted_hostile.py). Needs what
tests/test_sandbox.py needs (root, bubblewrap, user namespaces, node 20+, libseccomp) and the
runtime's npm packages (`make node`): skipped without them, failed with `TEST_SANDBOX=required` (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from auth0.management import Auth0
from conftest import Gateway
from test_auth0_sdk import OMIT

from gateway.app import create_app
from gateway.auth import SCOPE_ADMIN, SCOPE_FORWARD, mint
from gateway.runtime.hosting import COMPILERS_PACKAGE, PROBE_TENANT, RUNTIME_DIR
from gateway.runtime.probe import probe
from gateway.runtime.sandbox import SandboxConfig
from gateway.runtime.supervisor import HostedHook
from gateway.runtime.users import TenantUids
from gateway.settings import Settings

REQUIRED = os.environ.get("TEST_SANDBOX") == "required"  # CI sets it
NODE = shutil.which("node") or "/usr/bin/node"
BWRAP = shutil.which("bwrap") or "/usr/bin/bwrap"
SAMPLES = Path(__file__).parent / "node" / "hooks"
BODIES = Path(__file__).parent / "node" / "bodies"
UID_FIRST = 1_600_000  # a range of this file's own (tests/test_sandbox.py uses 1_500_000)
EXTENSION_SECRET = "s3cr3t-of-the-compilers"  # noqa: S105 - a test value


def sample(name: str) -> str:
    return (SAMPLES / f"{name}.js").read_text()


def event_of(point: str) -> dict[str, Any]:
    return json.loads((BODIES / f"{point}.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def sandbox_host() -> None:
    """This host runs the sandbox and the runtime's compilers are installed (else skip/fail)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("the tests must run as root (they start scripts as other uids)")
    else:
        uids = TenantUids(UID_FIRST, 100)
        missing += probe(SandboxConfig(node=NODE, bwrap=BWRAP), probe_uid=uids.uid_for(PROBE_TENANT)).missing
    if not (RUNTIME_DIR / "node_modules" / COMPILERS_PACKAGE).is_dir():
        missing.append("the runtime's compilers are not installed: run `make node`")
    if missing:
        message = "; ".join(missing)
        if REQUIRED:
            pytest.fail(f"{message} (TEST_SANDBOX=required)", pytrace=False)
        pytest.skip(f"{message} (set TEST_SANDBOX=required to fail instead)")


def runtime_settings(**more: Any) -> dict[str, Any]:
    # npm_registry: a port that refuses, so that no test installs from the real registry by mistake
    return {"enabled": True, "node": NODE, "bwrap": BWRAP, "uid_first": UID_FIRST, "uid_count": 1000,
            "memory_mib": 128, "npm_registry": "http://127.0.0.1:9/", **more}


@pytest.fixture
async def hosted(sandbox_host: None, make_gateway: Callable[..., Awaitable[Gateway]],
                 make_settings: Callable[..., Settings]) -> Gateway:
    gw = await make_gateway(make_settings(runtime=runtime_settings()))
    assert gw.svc.registry.hosting.refusal is None, gw.svc.registry.hosting.refusal
    await gw.create_tenant("acme")
    return gw


async def script_hook(gw: Gateway, point: str, script: str, *, tenant: str = "acme",
                      secrets: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    body = {"name": fields.pop("name", "hosted"), "triggerId": point, "script": script, "enabled": True,
            **fields}
    resp = await gw.client.post("/api/v2/hooks", json=body, headers=gw.auth(tenant))
    assert resp.status == 201, await resp.text()
    hook: dict[str, Any] = await resp.json()
    await gw.add_secrets(hook["id"], {"auth0-extension-secret": EXTENSION_SECRET, **(secrets or {})}, tenant)
    return hook


async def invoke(gw: Gateway, point: str, event: dict[str, Any], tenant: str = "acme") -> dict[str, Any]:
    resp = await gw.forward(point, event, tenant=tenant)
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def sync_attempts(gw: Gateway, hook_id: str, tenant: str = "acme") -> list[dict[str, Any]]:
    """The attempts of the hook's last blocking call, as recorded."""
    await gw.invoker.drain()
    resp = await gw.client.get("/api/v2/deliveries", params={"hookId": hook_id}, headers=gw.auth(tenant))
    assert resp.status == 200
    (record, *_) = [d for d in await resp.json() if d["kind"] == "sync"]
    full = await gw.delivery(record["id"], tenant)
    return full["attempts"]  # type: ignore[no-any-return]


# --- Auth0's samples, unchanged, with secrets --------------------------------------------------

SECRET_CLAIM = """
module.exports = function (client, scope, audience, context, cb) {
  cb(null, { 'https://example.com/api-key': context.webtask.secrets.API_KEY, scope: scope });
};
"""


async def test_credentials_exchange_samples_add_claims_with_secrets(hosted: Gateway) -> None:
    await script_hook(hosted, "credentials-exchange", sample("ce-add-claim"), name="add-claim", order=1)
    await script_hook(hosted, "credentials-exchange", SECRET_CLAIM, name="secret-claim", order=2,
                      secrets={"API_KEY": "key-from-the-secrets"})
    event = event_of("credentials-exchange")
    assert await invoke(hosted, "credentials-exchange", event) == {
        "status": "success",
        "data": {
            "scope": [*event["scope"], "extra"],  # the second hook saw what the first left
            "https://example.com/claim": "x",
            "https://example.com/client": event["client"]["id"],
            "https://example.com/audience": event["audience"],
            "https://example.com/api-key": "key-from-the-secrets",
        },
    }


async def test_pre_user_registration_sample_denies_a_signup(hosted: Gateway) -> None:
    hook = await script_hook(hosted, "pre-user-registration", sample("pur-deny"))
    event = event_of("pre-user-registration")
    assert await invoke(hosted, "pre-user-registration", event) == {
        "status": "error",
        "data": {
            "name": "PreUserRegistrationError",
            "message": "Denied user registration in Pre User Registration Hook: " + event["user"]["email"],
            "friendlyMessage": "You are not allowed to sign up.",
        },
    }
    (attempt,) = await sync_attempts(hosted, hook["id"])
    assert attempt["statusCode"] == 200 and "PreUserRegistrationError" in attempt["error"]


@pytest.mark.sqlite_only
async def test_send_phone_message_sample_answers(hosted: Gateway) -> None:
    await script_hook(hosted, "send-phone-message", sample("spm-send"))
    event = event_of("send-phone-message")
    assert await invoke(hosted, "send-phone-message", event) == {
        "status": "success",
        "data": {"message_id": "msg_" + event["context"]["code"], "recipient": event["recipient"]},
    }


@pytest.mark.parametrize(("point", "script"), [("post-user-registration", "post-reg-noop"),
                                               ("post-change-password", "pcp-noop"),
                                               ("post-user-registration", "post-reg-fail")])
@pytest.mark.sqlite_only
async def test_asynchronous_samples_are_delivered_and_recorded(
    hosted: Gateway, point: str, script: str
) -> None:
    hook = await script_hook(hosted, point, sample(script))
    resp = await hosted.forward(point, event_of(point))
    assert resp.status == 202, await resp.text()
    (created,) = (await resp.json())["deliveries"]
    assert created["hookId"] == hook["id"]
    delivery = await hosted.wait_delivery(created["deliveryId"], status="succeeded", attempts=1)
    (attempt,) = delivery["attempts"]
    assert attempt["statusCode"] == 200
    if script == "post-reg-fail":  # an answered error is delivered, its error kept, as for a URL hook
        assert "CRM unavailable" in attempt["error"]
    else:
        assert attempt["error"] is None
        assert json.loads(attempt["responseBody"])["status"] == "success"


# --- a looping script (tests/test_hosted_hostile.py has every hostile script) ------------------

LOOP_ON_ASK = """
module.exports = function (client, scope, audience, context, cb) {
  if (client.id === 'loop') for (;;) {}
  cb(null, { 'https://example.com/claim': 'answered' });
};
"""


async def assert_other_tenant_answers(gw: Gateway) -> None:
    answer = await invoke(gw, "credentials-exchange", event_of("credentials-exchange"), tenant="bystander")
    assert answer["status"] == "success" and answer["data"]["https://example.com/claim"] == "x"


@pytest.mark.sqlite_only
async def test_a_looping_script_is_killed_at_its_timeout_and_replaced(hosted: Gateway) -> None:
    await hosted.create_tenant("bystander")
    await script_hook(hosted, "credentials-exchange", sample("ce-add-claim"), tenant="bystander")
    hook = await script_hook(hosted, "credentials-exchange", LOOP_ON_ASK, timeoutMs=1000)
    event = event_of("credentials-exchange")
    supervisor = hosted.svc.registry.hosting.supervisor
    assert supervisor is not None
    assert (await invoke(hosted, "credentials-exchange", event))["status"] == "success"
    before = supervisor.live()[hook["id"]]
    looping = await invoke(hosted, "credentials-exchange", {**event, "client": {"id": "loop"}})
    assert looping["status"] == "error" and looping["data"]["name"] == "ServerError"
    (attempt,) = await sync_attempts(hosted, hook["id"])
    assert attempt["statusCode"] is None and attempt["error"].startswith("timed out after 1000 ms")
    assert hook["id"] not in supervisor.live()  # killed, not left looping
    await assert_other_tenant_answers(hosted)
    assert (await invoke(hosted, "credentials-exchange", event))["status"] == "success"
    assert supervisor.live()[hook["id"]] != before  # a new process answered


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True  # ended
    return stat[stat.rindex(b")") + 2:].split()[0] in (b"T", b"t", b"Z")


async def ended(pidfd: int, timeout_s: float) -> bool:
    """Whether the process of `pidfd` ends within `timeout_s` (a pidfd reads ready once it has)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
    try:
        await asyncio.wait([done], timeout=timeout_s)
    finally:
        loop.remove_reader(pidfd)
    return done.done()


@pytest.mark.sqlite_only
async def test_closing_while_a_sandbox_is_being_set_up_leaves_nothing_running(hosted: Gateway) -> None:
    """bubblewrap's --die-with-parent takes hold inside the sandbox only once it is set up: the
    gateway closing while a hook's process starts must still end the sandbox, and not wait for it
    forever. The sandbox's pid 1 is held (SIGSTOP) in its set-up while the gateway closes."""
    supervisor = hosted.svc.registry.hosting.supervisor
    assert supervisor is not None
    # Loops as it loads: it never reads the socket, so only a kill ends it (or, after
    # [runtime] cpu_seconds = 30 of CPU time, its rlimit).
    hook = HostedHook("acme", "set-up", "credentials-exchange", "for (;;) {}\nmodule.exports = () => {};")
    init = None
    for _attempt in range(20):  # until the sandbox's pid 1 is caught before it started node
        supervisor.prewarm(hook)
        for _ in range(1000):
            if hook.hook_id in supervisor.live():
                break
            await asyncio.sleep(0.001)
        bwrap = supervisor.live()[hook.hook_id]
        for _ in range(100_000):
            if found := children(bwrap):
                init = found[0]
                os.kill(init, signal.SIGSTOP)
                break
        assert init is not None, "bubblewrap made no sandbox"
        for _ in range(100_000):
            if stopped(init):
                break
        if not children(init):  # still setting up: no node yet, nor --die-with-parent inside
            break
        os.kill(init, signal.SIGCONT)
        supervisor.forget(hook.hook_id)
        init = None
    assert init is not None, "the sandbox's set-up was never caught"
    pidfd = os.pidfd_open(init)
    try:
        close = asyncio.ensure_future(supervisor.close())
        for _ in range(2000):  # until the gateway has killed bubblewrap
            if stopped(bwrap):
                break
            await asyncio.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):  # it may be gone already, as it should
            signal.pidfd_send_signal(pidfd, signal.SIGCONT)
        assert await ended(pidfd, 20.0), "the sandbox outlived the gateway"
        await asyncio.wait_for(close, 20.0)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever happened, nothing stays
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)


# --- the Management API ------------------------------------------------------------------------


@pytest.mark.sqlite_only
async def test_a_script_hook_reads_back_and_refuses_what_it_cannot_have(hosted: Gateway) -> None:
    hook = await script_hook(hosted, "post-user-registration", sample("post-reg-noop"))
    got = await (await hosted.client.get(f"/api/v2/hooks/{hook['id']}", headers=hosted.auth())).json()
    assert got["script"] == sample("post-reg-noop") and got["url"] is None and got["dependencies"] == {}
    bad = {
        "both": {"url": "http://127.0.0.1:9/", "script": "module.exports = function () {}"},
        "dependencies": {"script": "module.exports = function () {}",
                         "dependencies": {"lodash": "git+https://github.com/lodash/lodash.git"}},
        "standard": {"script": "module.exports = function () {}", "format": "standard"},
        "too long": {"script": "x" * 40_001},
        "too many bytes": {"script": "\u4e2d" * 35_000},  # 35,000 characters, 105,000 bytes
    }
    for case, fields in bad.items():
        resp = await hosted.client.post("/api/v2/hooks", headers=hosted.auth(), json={
            "name": "bad", "triggerId": "post-user-registration", **fields})
        assert resp.status == 400, (case, await resp.text())
    resp = await hosted.client.post("/api/v2/hooks", headers=hosted.auth(), json={
        "name": "bad", "triggerId": "post-user-registration",
        "script": "module.exports = function () {}", "dependencies": {"lodash": "github:lodash/lodash"}})
    assert "the version of 'lodash' must be" in (await resp.json())["message"]


async def test_creating_a_script_hook_with_the_runtime_off_is_a_400_naming_why(gateway: Gateway) -> None:
    resp = await gateway.client.post("/api/v2/hooks", headers=gateway.auth(), json={
        "name": "hosted", "triggerId": "credentials-exchange", "script": sample("ce-add-claim")})
    assert resp.status == 400
    body = await resp.json()
    assert body["statusCode"] == 400 and "[runtime] enabled = false" in body["message"]


@pytest.mark.sqlite_only
async def test_auth0_python_creates_a_script_hook_unchanged(
    sandbox_host: None, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(runtime=runtime_settings())
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            operator = mint(settings, tenant=None, scopes=(SCOPE_ADMIN,), ttl_s=600)
            resp = await http.post(f"{base}/api/v2/tenants", json={"id": "acme"},
                                   headers={"Authorization": f"Bearer {operator}"})
            assert resp.status_code == 201, resp.text
        token = mint(settings, tenant="acme", scopes=("read:hooks", "create:hooks", "update:hooks",
                                                      "delete:hooks"), ttl_s=600)

        def run() -> Any:
            with httpx.Client(timeout=10) as http:
                client = Auth0(base_url=f"{base}/api/v2", token=token, httpx_client=http, max_retries=0)
                created = client.hooks.create(name="sdk-hosted", script=sample("ce-add-claim"),
                                              trigger_id="credentials-exchange", enabled=True,
                                              dependencies=OMIT)
                return created, client.hooks.get(created.id)

        created, got = await asyncio.to_thread(run)
        assert created.script == sample("ce-add-claim") and got.enabled is True
        forward = mint(settings, tenant="acme", scopes=(SCOPE_FORWARD,), ttl_s=600)
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(f"{base}/v1/tenants/acme/triggers/credentials-exchange",
                                   json=event_of("credentials-exchange"),
                                   headers={"Authorization": f"Bearer {forward}"})
        assert resp.status_code == 200 and resp.json()["data"]["https://example.com/claim"] == "x", resp.text
    finally:
        await runner.cleanup()
