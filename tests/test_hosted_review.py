"""An adversarial review of hosted hooks (issue 16): what a tenant's script, its `dependencies`, or a
compromised npm could do to the gateway or to other tenants, each as the tenant would do it.

- A hook whose script changes while a call is in flight keeps its old process until the call
  ends: such processes still count towards `[runtime] max_processes`, so a tenant cannot grow
  the gateway's processes (and memory) past it by editing a script under load.
- One tenant cannot take every process of the pool: `[runtime] max_processes_per_tenant`.
- The installed set npm leaves behind is taken only as folders and files: a `node_modules` or
  lockfile that is a link (something a compromised npm could leave) is refused, and the gateway,
  which seals the set as root, never changes what such a link points to.
- One tenant's installs run one at a time, at most INSTALLS_QUEUED_PER_TENANT running or waiting:
  its stuck installs neither hold up another tenant's nor pile up.
- A script's connections to its egress proxy far past the cap are closed at once (no slowloris
  on the gateway's sockets).

Needs what tests/test_hosted_hooks.py needs (root, bubblewrap, node, `make node`), and npm.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway
from npm_registry import NpmRegistry
from test_hosted_hooks import REQUIRED, runtime_settings, sandbox_host

from gateway.runtime.dependencies import INSTALLS_QUEUED_PER_TENANT
from gateway.runtime.egress_proxy import EgressProxy, ProxyCaps
from gateway.runtime.supervisor import Supervisor
from gateway.settings import Settings

pytestmark = pytest.mark.sqlite_only
__all__ = ["sandbox_host"]  # the fixture, imported for this module's tests

UID_FIRST = 2_100_000  # a range of this file's own (every hosted-hooks test file has one: 1.5 to 2.4 million)
UID_COUNT = 100
POINT = "credentials-exchange"
MAX_POLLS = 1000  # looks, 10 ms apart, for a call to be in flight or a start to be done
NPM = shutil.which("npm") or "/usr/bin/npm"


def never_answering(variant: int) -> str:
    """A script that never calls back: each call holds its process until the call's timeout."""
    return f"// version {variant}\nmodule.exports = function (client, scope, audience, context, cb) {{}};\n"


def answering(claim: str) -> str:
    return ("module.exports = function (client, scope, audience, context, cb) {\n"
            f"  cb(null, {{ 'https://example.com/{claim}': true, scope: scope }});\n}};\n")


def sandboxed_nodes() -> list[int]:
    """Pids of node processes running as a tenant uid of this file's range: the scripts' processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields.get("Uid", "-1").split()[0])
        if fields.get("Name", "").strip() == "node" and UID_FIRST <= uid < UID_FIRST + UID_COUNT:
            found.append(int(entry.name))
    return found


def supervisor_of(gw: Gateway) -> Supervisor:
    supervisor = gw.svc.registry.hosting.supervisor
    assert supervisor is not None
    return supervisor


async def settled(supervisor: Supervisor) -> None:
    """Every pre-warm under way has started its process, or failed to."""
    for _ in range(MAX_POLLS):
        tasks = [t for t in supervisor._background if not t.done()]
        if not tasks and not supervisor._starting:
            return
        await asyncio.wait(tasks or [asyncio.ensure_future(asyncio.sleep(0.01))], timeout=0.5)
    raise AssertionError("the pre-warms never settled")


async def in_flight(supervisor: Supervisor, hook_id: str, call: asyncio.Task[Any]) -> None:
    """Until the hook's live process has a call in flight, or `call` is over (it was refused)."""
    for _ in range(MAX_POLLS):
        proc = supervisor._live.get(hook_id)
        if call.done() or (proc is not None and proc.in_flight > 0):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the call never reached the hook's process")


async def hook_of(gw: Gateway, script: str, *, tenant: str = "acme", name: str = "hosted",
                  **fields: Any) -> str:
    resp = await gw.client.post("/api/v2/hooks", headers=gw.auth(tenant), json={
        "name": name, "triggerId": POINT, "script": script, "enabled": True, **fields})
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["id"])


async def try_hook(gw: Gateway, hook_id: str, tenant: str = "acme") -> dict[str, Any]:
    """One call of the hook now (the Management API's test of a hook): the attempt."""
    resp = await gw.client.post(f"/api/v2/hooks/{hook_id}/test", headers=gw.auth(tenant))
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def calls_in_background() -> AsyncIterator[list[asyncio.Task[Any]]]:
    tasks: list[asyncio.Task[Any]] = []
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def make_pool(sandbox_host: None, make_gateway: Callable[..., Awaitable[Gateway]],
                    make_settings: Callable[..., Settings]) -> Callable[..., Awaitable[Gateway]]:
    async def make(**runtime: Any) -> Gateway:
        gw = await make_gateway(make_settings(runtime=runtime_settings(
            uid_first=UID_FIRST, uid_count=UID_COUNT, **runtime)))
        assert gw.svc.registry.hosting.refusal is None, gw.svc.registry.hosting.refusal
        await gw.create_tenant("acme")
        return gw

    return make


# --- the pool's bound holds while scripts change under load -------------------------------------


async def test_editing_a_busy_hooks_script_never_runs_more_than_max_processes(
    make_pool: Callable[..., Awaitable[Gateway]]
) -> None:
    gw = await make_pool(max_processes=2)
    supervisor = supervisor_of(gw)
    hook_id = await hook_of(gw, never_answering(0), timeoutMs=60_000)
    async with calls_in_background() as calls:
        for variant in range(1, 6):
            await settled(supervisor)  # the pre-warmed process of the current script
            calls.append(asyncio.ensure_future(try_hook(gw, hook_id)))
            await in_flight(supervisor, hook_id, calls[-1])
            resp = await gw.client.patch(f"/api/v2/hooks/{hook_id}", headers=gw.auth(),
                                         json={"script": never_answering(variant)})
            assert resp.status == 200, await resp.text()
        await settled(supervisor)
        running = sandboxed_nodes()
        assert len(running) <= 2, f"{len(running)} script processes run with [runtime] max_processes = 2"
        # A call past the bound is a failed attempt naming it, at once.
        refused = [c.result() for c in calls if c.done()]
        assert refused and all("max_processes" in (r["error"] or "") for r in refused), refused


async def test_a_tenant_whose_hooks_hold_their_processes_leaves_room_for_another_tenant(
    make_pool: Callable[..., Awaitable[Gateway]]
) -> None:
    gw = await make_pool(max_processes=3, max_processes_per_tenant=2)
    await gw.create_tenant("other")
    supervisor = supervisor_of(gw)
    hogs = [await hook_of(gw, never_answering(i), name=f"hog-{i}", timeoutMs=60_000) for i in range(3)]
    other = await hook_of(gw, answering("other"), tenant="other", name="other")
    async with calls_in_background() as calls:
        for hog in hogs:
            await settled(supervisor)
            calls.append(asyncio.ensure_future(try_hook(gw, hog)))
            await in_flight(supervisor, hog, calls[-1])
        # The third hog's call found its tenant's share of the pool busy: refused, naming the bound.
        assert calls[2].done() and "max_processes_per_tenant" in (calls[2].result()["error"] or "")
        answer = await try_hook(gw, other, tenant="other")
        assert answer["error"] is None and answer["statusCode"] == 200, answer
        assert answer["answer"]["data"]["https://example.com/other"] is True


# --- what npm leaves behind is taken as folders and files only ----------------------------------

# Stands in for an npm a registry's answers have subverted (no install script runs, but npm's own
# code writes what it is led to): it leaves a lockfile and, instead of node_modules, a link.
LINKING_NPM = """const fs = require('fs');
fs.writeFileSync('/install/package-lock.json', JSON.stringify({ name: 'hook-dependencies', lockfileVersion: 3,
  packages: { '': {}, 'node_modules/greet': { version: '1.0.0' } } }));
fs.symlinkSync(TARGET, '/install/node_modules');
"""


@pytest.fixture
def host_folder() -> Iterator[Path]:
    """A folder of the host's that no tenant may read."""
    folder = Path(tempfile.mkdtemp(prefix="gateway-review-private-"))
    (folder / "secret.txt").write_text("host secret\n")
    folder.chmod(0o700)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def world_traversable() -> Iterator[Path]:
    """A folder the installs' and tenants' uids can reach (pytest's tmp_path is not)."""
    folder = Path(tempfile.mkdtemp(prefix="gateway-review-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


async def test_an_install_leaving_node_modules_as_a_link_is_refused_and_its_target_untouched(
    sandbox_host: None, make_gateway: Callable[..., Awaitable[Gateway]],
    make_settings: Callable[..., Settings], host_folder: Path, world_traversable: Path
) -> None:
    """Before: root chmod'ed the link's target 0o555 and bubblewrap bound it at /hook/node_modules,
    so the hook's script listed a host folder of mode 0o700."""
    npm = world_traversable / "npm" / "bin" / "npm-cli.js"
    npm.parent.mkdir(parents=True)
    npm.write_text(LINKING_NPM.replace("TARGET", json.dumps(str(host_folder))))
    for path in (npm, npm.parent, npm.parent.parent):
        path.chmod(0o755)
    deps = world_traversable / "deps"
    gw = await make_gateway(make_settings(runtime=runtime_settings(
        uid_first=UID_FIRST, uid_count=UID_COUNT, npm=str(npm), dependencies_dir=str(deps))))
    assert gw.svc.registry.hosting.dependencies is not None, gw.svc.registry.hosting.dependencies_refusal
    await gw.create_tenant("acme")
    before = [(p, p.lstat()) for p in (host_folder, host_folder / "secret.txt")]
    resp = await gw.client.post("/api/v2/hooks", headers=gw.auth(), json={
        "name": "linked", "triggerId": POINT, "enabled": True, "dependencies": {"greet": "1.0.0"},
        "script": answering("linked")})
    body = await resp.json()
    for path, st in before:  # the gateway (root) changed nothing through the link
        now = path.lstat()
        assert (stat.S_IMODE(now.st_mode), now.st_uid, now.st_gid) == (
            stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid), path
    assert resp.status == 400, body
    assert "dependencies" in body["message"] and str(host_folder) not in body["message"]
    assert [p for p in deps.iterdir() if not p.name.startswith(".install-")] == [], "a set was kept"


# --- one tenant's installs do not hold up another's -----------------------------------------------


@dataclass
class SlowRegistry(NpmRegistry):
    """Packages named in `hanging` are never answered (until the registry closes)."""

    hanging: set[str] = field(default_factory=set)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        if urllib.parse.unquote(request.path).strip("/").split("/-/")[0] in self.hanging:
            self.requests.append(urllib.parse.unquote(request.path))
            await self._closing.wait()
            raise web.HTTPServiceUnavailable
        return await super()._serve(request)


@pytest.fixture
async def slow_registry() -> AsyncIterator[SlowRegistry]:
    registry = await SlowRegistry().start()
    yield registry
    await registry.close()


async def test_a_tenants_stuck_installs_neither_hold_up_another_tenants_nor_pile_up(
    sandbox_host: None, make_gateway: Callable[..., Awaitable[Gateway]],
    make_settings: Callable[..., Settings], slow_registry: SlowRegistry, world_traversable: Path
) -> None:
    if not os.access(NPM, os.X_OK):
        if REQUIRED:
            pytest.fail("npm is not installed (TEST_SANDBOX=required)", pytrace=False)
        pytest.skip("npm is not installed")
    slow_registry.publish("greet", "1.0.0", {"index.js": "module.exports = () => 'hi';\n"})
    stuck = [f"stuck-{i}" for i in range(INSTALLS_QUEUED_PER_TENANT + 2)]
    slow_registry.hanging.update(stuck)
    gw = await make_gateway(make_settings(runtime=runtime_settings(
        uid_first=UID_FIRST, uid_count=UID_COUNT, npm=NPM, npm_registry=slow_registry.url,
        dependencies_dir=str(world_traversable / "deps"), install_timeout="30s")))
    store = gw.svc.registry.hosting.dependencies
    assert store is not None, gw.svc.registry.hosting.dependencies_refusal
    await gw.create_tenant("hog")
    await gw.create_tenant("other")

    async def save(tenant: str, name: str, package: str) -> tuple[int, dict[str, Any]]:
        resp = await gw.client.post("/api/v2/hooks", headers=gw.auth(tenant), json={
            "name": name, "triggerId": POINT, "script": answering(name), "dependencies": {package: "1.0.0"}})
        return resp.status, await resp.json()

    async with calls_in_background() as saves:
        for i, package in enumerate(stuck):
            saves.append(asyncio.ensure_future(save("hog", f"hog-{i}", package)))
        for _ in range(MAX_POLLS):  # every save of the hog has reached the installs, or was refused
            reached = sum(1 for s in saves if s.done()) + len(store._installing)
            if reached >= len(stuck) and slow_registry.requests:
                break
            await asyncio.sleep(0.01)
        # Saves past the tenant's bound on installs waiting are refused at once, naming it.
        refused = [s.result() for s in saves if s.done()]
        waiting = [s for s in saves if not s.done()]  # which ones depends on the order they arrived in
        assert len(refused) == len(stuck) - INSTALLS_QUEUED_PER_TENANT, refused
        assert all(status == 400 and "at once" in body["message"] for status, body in refused), refused
        # Another tenant's set installs while the hog's are all still stuck.
        status, body = await save("other", "other", "greet")
        assert status == 201, body
        assert not any(s.done() for s in waiting), "another tenant waited for the hog's installs"


# --- a script's connections to its egress proxy hold a bounded number of the gateway's sockets -----


def peer_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def test_connections_far_over_the_egress_cap_are_closed_at_once(tmp_path: Path) -> None:
    """Before: each connection over the cap was held until its head came or HEAD_TIMEOUT_S ran
    out, so a script opening [runtime] open_files of them (and again, as they closed) held that
    many of the gateway's sockets per process."""
    caps = ProxyCaps(connections=2)
    proxy = await EgressProxy.start(tmp_path / "egress.sock", allow_cidrs=(), caps=caps)
    socks: list[socket.socket] = []
    try:
        for _ in range(50):  # none sends a head: a slowloris
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(sock)
            sock.connect(str(proxy.path))
        held = len(socks)
        for _ in range(MAX_POLLS):  # until the proxy has taken every connection
            held = len(proxy._handlers)
            if held + sum(peer_closed(s) for s in socks) >= len(socks):
                break
            await asyncio.sleep(0.01)
        assert held <= 2 * caps.connections, f"{held} connections held, with a cap of {caps.connections}"
    finally:
        for sock in socks:
            sock.close()
        await proxy.close()
