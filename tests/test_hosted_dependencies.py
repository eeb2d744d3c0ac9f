"""Hosted hooks' `dependencies` (issue 16): a save installs the set once (`npm install
--ignore-scripts`, sandboxed, the registry its only way out) into a read-only folder that every
hook with the same set shares, bound at /hook/node_modules; install scripts never run; a set
that cannot be installed is the save's 400.

npm installs for real from a loopback registry (tests/npm_registry.py) whose packages are built
here; it records every request. Needs what tests/test_hosted_hooks.py needs, and npm.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import Gateway
from npm_registry import RAN_PATH, NpmRegistry, folder_files
from test_hosted_hooks import REQUIRED, event_of, invoke, runtime_settings, sandbox_host, script_hook

from gateway.runtime import npm_install
from gateway.runtime.dependencies import (
    DEFAULT_FOLDER,
    LOCKFILE,
    REMOVING_PREFIX,
    TEMPORARY_PREFIX,
    settled_dir,
)
from gateway.settings import Settings

__all__ = ["sandbox_host"]  # the fixture, imported for this module's tests

UID_FIRST = 2_400_000  # a range of this file's own (every hosted-hooks test file has one: 1.5 to 2.4 million)
NPM = shutil.which("npm") or "/usr/bin/npm"
# The real lodash, installed by `make node` (tests/npm_packages/), published again on the loopback registry.
LODASH = Path(__file__).parent / "npm_packages" / "node_modules" / "lodash"
POINT = "credentials-exchange"
GREETING = "hello from a dependency"

# A credentials-exchange hook answering the claim https://example.com/<claim> with what
# `require(<package>)()` returns.
REQUIRING = """module.exports = function (client, scope, audience, context, cb) {
  const got = require(PACKAGE)();
  cb(null, { ['https://example.com/' + CLAIM]: got, scope: scope });
};
"""


def requiring(package: str, claim: str = "got") -> str:
    return REQUIRING.replace("PACKAGE", json.dumps(package)).replace("CLAIM", json.dumps(claim))


def greeting_package(text: str = GREETING) -> dict[str, str | bytes]:
    return {"index.js": f"module.exports = () => {json.dumps(text)};\n"}


@pytest.fixture
def npm_host(sandbox_host: None) -> None:
    if not os.access(NPM, os.X_OK):
        if REQUIRED:
            pytest.fail("npm is not installed (TEST_SANDBOX=required)", pytrace=False)
        pytest.skip("npm is not installed")


@pytest.fixture
async def registry() -> AsyncIterator[NpmRegistry]:
    reg = await NpmRegistry().start()
    yield reg
    await reg.close()


@pytest.fixture
def dependencies_dir() -> Iterator[Path]:
    """Where installed sets go: reachable by the tenants' uids (pytest's tmp_path is not)."""
    folder = Path(tempfile.mkdtemp(prefix="gateway-test-deps-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder)


MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_hosted(npm_host: None, registry: NpmRegistry, dependencies_dir: Path,
                      make_gateway: Callable[..., Awaitable[Gateway]],
                      make_settings: Callable[..., Settings]) -> MakeGateway:
    """A gateway running hosted hooks, installing from `registry` into `dependencies_dir`, with
    tenant acme (unless `tenant=False`); keywords: more [runtime] settings."""

    async def make(*, tenant: bool = True, **runtime: Any) -> Gateway:
        settings = make_settings(runtime=runtime_settings(**{
            "uid_first": UID_FIRST, "npm": NPM, "npm_registry": registry.url,
            "dependencies_dir": str(dependencies_dir), **runtime}))
        gw = await make_gateway(settings)
        assert gw.svc.registry.hosting.refusal is None, gw.svc.registry.hosting.refusal
        assert gw.svc.registry.hosting.dependencies is not None, gw.svc.registry.hosting.dependencies_refusal
        if tenant:  # else it is there already (another gateway on the same database)
            await gw.create_tenant("acme")
        return gw

    return make


async def create(gw: Gateway, deps: Any, *, script: str = "module.exports = function () {};",
                 name: str = "hosted") -> tuple[int, dict[str, Any]]:
    resp = await gw.client.post("/api/v2/hooks", headers=gw.auth(), json={
        "name": name, "triggerId": POINT, "script": script, "dependencies": deps})
    return resp.status, await resp.json()


def installed_sets(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith((TEMPORARY_PREFIX, REMOVING_PREFIX)))


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(TEMPORARY_PREFIX)]


# --- installed once, shared, used ---------------------------------------------------------------


async def test_a_hook_uses_its_dependency_installed_once_and_shared_by_the_same_set(
    make_hosted: MakeGateway, registry: NpmRegistry, dependencies_dir: Path
) -> None:
    registry.publish("greet", "1.0.0", greeting_package("one"))
    registry.publish("greet", "1.2.0", greeting_package(GREETING))
    gw = await make_hosted()
    first = await script_hook(gw, POINT, requiring("greet", "first"), name="first", order=1,
                              dependencies={"greet": "^1.0.0"})
    assert first["dependencies"] == {"greet": "^1.0.0"}
    assert registry.downloads() == ["/greet/-/greet-1.2.0.tgz"]  # the newest match, once
    asked = len(registry.requests)
    second = await script_hook(gw, POINT, requiring("greet", "second"), name="second", order=2,
                               dependencies={"greet": "^1.0.0"})
    assert len(registry.requests) == asked, "the second hook's save asked the registry again"
    (folder,) = installed_sets(dependencies_dir)  # one folder for the set, which both use
    lock = json.loads((folder / LOCKFILE).read_text())
    assert lock["packages"]["node_modules/greet"]["version"] == "1.2.0"
    data = (await invoke(gw, POINT, event_of(POINT)))["data"]
    assert data["https://example.com/first"] == GREETING and data["https://example.com/second"] == GREETING
    got = await (await gw.client.get(f"/api/v2/hooks/{second['id']}", headers=gw.auth())).json()
    assert got["dependencies"] == {"greet": "^1.0.0"} and got["id"] == second["id"] != first["id"]
    assert len(registry.requests) == asked  # the processes bound the folder: nothing fetched


@pytest.mark.sqlite_only
async def test_a_hook_requires_the_real_lodash(make_hosted: MakeGateway, registry: NpmRegistry) -> None:
    if not (LODASH / "package.json").is_file():
        message = "the real lodash is not installed: run `make node`"
        if REQUIRED:
            pytest.fail(f"{message} (TEST_SANDBOX=required)", pytrace=False)
        pytest.skip(message)
    registry.publish("lodash", "4.17.21", folder_files(LODASH))
    gw = await make_hosted()
    script = """const _ = require('lodash');
module.exports = function (client, scope, audience, context, cb) {
  cb(null, { 'https://example.com/kebab': _.kebabCase('Hosted Hooks'),
             'https://example.com/version': _.VERSION, scope: _.uniq(scope.concat(scope)) });
};
"""
    await script_hook(gw, POINT, script, dependencies={"lodash": "4.17.21"})
    event = event_of(POINT)
    data = (await invoke(gw, POINT, event))["data"]
    assert data["https://example.com/kebab"] == "hosted-hooks"
    assert data["https://example.com/version"] == "4.17.21" and data["scope"] == event["scope"]


@pytest.mark.sqlite_only
async def test_an_installed_set_is_roots_and_read_only(make_hosted: MakeGateway, registry: NpmRegistry,
                                                      dependencies_dir: Path) -> None:
    registry.publish("greet", "1.0.0", greeting_package())
    gw = await make_hosted()
    status, body = await create(gw, {"greet": "1.0.0"})
    assert status == 201, body
    (folder,) = installed_sets(dependencies_dir)
    entries = [folder, *folder.rglob("*")]
    assert {"package.json", LOCKFILE, "node_modules"} <= {p.name for p in folder.iterdir()}
    assert (folder / "node_modules" / "greet" / "index.js") in entries
    for path in entries:
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (0, 0), path
        if stat.S_ISDIR(st.st_mode):
            assert stat.S_IMODE(st.st_mode) == 0o555, path
        elif stat.S_ISREG(st.st_mode):
            assert stat.S_IMODE(st.st_mode) == 0o444, path


@pytest.mark.sqlite_only
async def test_a_script_cannot_write_into_its_dependencies(make_hosted: MakeGateway, registry: NpmRegistry,
                                                          dependencies_dir: Path) -> None:
    registry.publish("greet", "1.0.0", greeting_package())
    gw = await make_hosted()
    script = """module.exports = function (client, scope, audience, context, cb) {
  let outcome;
  try { require('fs').writeFileSync('/hook/node_modules/greet/index.js', 'x'); outcome = 'written'; }
  catch (e) { outcome = e.code || String(e); }
  cb(null, { 'https://example.com/write': outcome, 'https://example.com/got': require('greet')() });
};
"""
    await script_hook(gw, POINT, script, dependencies={"greet": "1.0.0"})
    data = (await invoke(gw, POINT, event_of(POINT)))["data"]
    assert data["https://example.com/got"] == GREETING
    assert data["https://example.com/write"] != "written"
    (folder,) = installed_sets(dependencies_dir)
    assert (folder / "node_modules" / "greet" / "index.js").read_text().startswith("module.exports")


@pytest.mark.sqlite_only
async def test_saves_of_one_set_at_once_share_one_install(make_hosted: MakeGateway, registry: NpmRegistry,
                                                         dependencies_dir: Path) -> None:
    registry.publish("greet", "1.0.0", greeting_package())
    gw = await make_hosted()
    results = await asyncio.gather(*(create(gw, {"greet": "1.0.0"}, name=f"hook-{i}") for i in range(3)))
    assert [status for status, _ in results] == [201, 201, 201], results
    assert registry.downloads() == ["/greet/-/greet-1.0.0.tgz"]
    assert len(installed_sets(dependencies_dir)) == 1 and not leftovers(dependencies_dir)


@pytest.mark.sqlite_only
async def test_a_set_whose_folder_is_gone_is_installed_again_when_its_process_starts(
    make_hosted: MakeGateway, registry: NpmRegistry, dependencies_dir: Path
) -> None:
    """As on another instance (PostgreSQL) that has not installed the set yet."""
    registry.publish("greet", "1.0.0", greeting_package())
    gw = await make_hosted()
    hook = await script_hook(gw, POINT, requiring("greet"), dependencies={"greet": "1.0.0"})
    assert (await invoke(gw, POINT, event_of(POINT)))["data"]["https://example.com/got"] == GREETING
    (folder,) = installed_sets(dependencies_dir)
    shutil.rmtree(folder)
    gw.svc.registry.hosting.forget(hook["id"])  # its process goes; the next call starts another
    assert (await invoke(gw, POINT, event_of(POINT)))["data"]["https://example.com/got"] == GREETING
    assert registry.downloads() == ["/greet/-/greet-1.0.0.tgz"] * 2
    assert installed_sets(dependencies_dir) == [folder]


@pytest.mark.sqlite_only
async def test_an_https_registry_is_reached_through_a_tunnel_trusting_the_operators_ca(
    make_hosted: MakeGateway, dependencies_dir: Path
) -> None:
    """The registry's usual case: npm CONNECTs through the bridge and the egress proxy, and checks
    the registry's certificate against `[runtime] npm_cafile` (here a CA of the test's own)."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    cafile = dependencies_dir / "ca.pem"  # where the installs' uid can reach it, as /etc/ssl is
    ca.cert_pem.write_to_path(str(cafile))
    cafile.chmod(0o644)
    secure = await NpmRegistry(tls=context, name="localhost").start()  # the proxy resolves the name
    try:
        secure.publish("greet", "1.0.0", greeting_package())
        gw = await make_hosted(npm_registry=secure.url)
        status, body = await create(gw, {"greet": "1.0.0"})
        assert status == 400 and "TLS certificate is not trusted" in body["message"], body
        gw = await make_hosted(npm_registry=secure.url, npm_cafile=str(cafile), tenant=False)
        await script_hook(gw, POINT, requiring("greet"), dependencies={"greet": "1.0.0"})
        assert (await invoke(gw, POINT, event_of(POINT)))["data"]["https://example.com/got"] == GREETING
    finally:
        await secure.close()
    assert secure.downloads() == ["/greet/-/greet-1.0.0.tgz"]


# --- install scripts never run ------------------------------------------------------------------


@pytest.mark.sqlite_only
async def test_install_scripts_of_a_dependency_never_run(make_hosted: MakeGateway, registry: NpmRegistry,
                                                        dependencies_dir: Path) -> None:
    # Each script would leave a marker in the package's folder and ask the registry for /ran.
    ran = {phase: (f"node -e \"require('fs').writeFileSync('{phase}-ran', 'x'); "
                   f"require('http').get('{registry.url.rstrip('/')}{RAN_PATH}?{phase}')\"")
           for phase in ("preinstall", "install", "postinstall", "prepare")}
    registry.publish("greet", "1.0.0", greeting_package(), scripts=ran)
    registry.publish("scripted", "1.0.0", {"index.js": "module.exports = require('greet');"},
                     dependencies={"greet": "1.0.0"}, scripts=ran)
    gw = await make_hosted()
    await script_hook(gw, POINT, requiring("scripted"), dependencies={"scripted": "1.0.0"})
    assert (await invoke(gw, POINT, event_of(POINT)))["data"]["https://example.com/got"] == GREETING
    (folder,) = installed_sets(dependencies_dir)
    lock = json.loads((folder / LOCKFILE).read_text())
    assert lock["packages"]["node_modules/scripted"]["hasInstallScript"] is True  # npm saw them
    assert not [p for p in folder.rglob("*-ran")]
    assert not [r for r in registry.requests if r.startswith(RAN_PATH)]


# --- refused before any install -----------------------------------------------------------------

REFUSED_VERSIONS = {
    "git": "git+https://github.com/lodash/lodash.git",
    "git over ssh": "git@github.com:lodash/lodash.git",
    "github shorthand": "lodash/lodash",
    "github prefix": "github:lodash/lodash",
    "file": "file:../../etc",
    "link": "link:../x",
    "path": "../x",
    "absolute path": "/etc",
    "home path": "~/x",
    "http tarball": "http://127.0.0.1:9/lodash-4.17.21.tgz",
    "tarball name": "4.17.21-x.tgz",
    "alias": "npm:lodash@4.17.21",
    "workspace": "workspace:*",
    "empty": "",
    "not a string": 4,
    "a newline": "4.17.21\n",
}


@pytest.mark.sqlite_only
async def test_dependencies_that_are_no_registry_versions_are_refused_without_an_install(
    make_hosted: MakeGateway, registry: NpmRegistry, dependencies_dir: Path
) -> None:
    gw = await make_hosted()
    for case, version in REFUSED_VERSIONS.items():
        status, body = await create(gw, {"greet": version})
        assert status == 400, (case, body)
        assert body["statusCode"] == 400 and "'greet'" in body["message"], (case, body)
        assert "127.0.0.1" not in body["message"] and "github" not in body["message"], (case, body)
    for case, deps in {
        "too many": {f"pkg-{i}": "1.0.0" for i in range(33)},
        "upper case name": {"Greet": "1.0.0"},
        "a path as the name": {"../greet": "1.0.0"},
        "a deep scope": {"@a/b/c": "1.0.0"},
        "not an object": ["greet"],
        "a long name": {"g" * 215: "1.0.0"},
    }.items():
        status, body = await create(gw, deps)
        assert status == 400 and "'dependencies'" in body["message"], (case, body)
    url_hook = {"name": "url-hook", "triggerId": POINT, "url": "http://127.0.0.1:9/",
                "dependencies": {"greet": "1"}}
    resp = await gw.client.post("/api/v2/hooks", headers=gw.auth(), json=url_hook)
    assert resp.status == 400 and "'script'" in (await resp.json())["message"]
    assert registry.requests == [] and installed_sets(dependencies_dir) == leftovers(dependencies_dir) == []
    listed = await (await gw.client.get("/api/v2/hooks", headers=gw.auth())).json()
    assert listed == []


@pytest.mark.sqlite_only
async def test_a_scoped_package_and_every_kind_of_version_are_accepted(
    make_hosted: MakeGateway, registry: NpmRegistry
) -> None:
    registry.publish("@acme/greet", "2.0.0", greeting_package("scoped"))
    for name in ("exact", "range", "tag", "or"):
        registry.publish(name, "1.5.0", greeting_package(name))
    gw = await make_hosted()
    deps = {"@acme/greet": "2.0.0", "exact": "1.5.0", "range": ">=1.2 <2", "tag": "latest",
            "or": "0.x || ^1.4"}
    status, body = await create(gw, deps)
    assert status == 201, body
    assert body["dependencies"] == deps
    unscoped = [f"/{n}/-/{n}-1.5.0.tgz" for n in ("exact", "range", "tag", "or")]
    assert sorted(registry.downloads()) == sorted(["/@acme/greet/-/greet-2.0.0.tgz", *unscoped])


# --- installs that fail ---------------------------------------------------------------------------


@pytest.mark.sqlite_only
async def test_an_unknown_package_or_version_is_a_400_naming_it(
    make_hosted: MakeGateway, registry: NpmRegistry, dependencies_dir: Path
) -> None:
    registry.publish("greet", "1.0.0", greeting_package())
    gw = await make_hosted()
    status, body = await create(gw, {"greet": "1.0.0", "no-such-package": "1.0.0"})
    assert status == 400, body
    assert "'no-such-package'" in body["message"] and "not in the registry" in body["message"], body
    status, body = await create(gw, {"greet": "^9.0.0"})
    assert status == 400, body
    assert "no version of 'greet'" in body["message"], body
    assert installed_sets(dependencies_dir) == [] and not leftovers(dependencies_dir)
    assert "/install" not in body["message"] and "npm error" not in body["message"]
    assert await (await gw.client.get("/api/v2/hooks", headers=gw.auth())).json() == []


@pytest.mark.sqlite_only
async def test_a_set_of_too_many_packages_is_refused(make_hosted: MakeGateway, registry: NpmRegistry,
                                                     dependencies_dir: Path) -> None:
    for name in ("a", "b", "c"):
        registry.publish(name, "1.0.0", greeting_package(name))
    registry.publish("many", "1.0.0", {"index.js": ""}, dependencies=dict.fromkeys(("a", "b", "c"), "1.0.0"))
    gw = await make_hosted(max_packages=3)
    status, body = await create(gw, {"many": "1.0.0"})
    assert status == 400, body
    assert "4 packages, more than 3 ([runtime] max_packages)" in body["message"], body
    assert installed_sets(dependencies_dir) == [] and not leftovers(dependencies_dir)


@pytest.mark.sqlite_only
async def test_a_set_over_the_size_bound_is_refused(make_hosted: MakeGateway, registry: NpmRegistry,
                                                    dependencies_dir: Path) -> None:
    part = b"x" * 700 * 1024  # each file under the 1 MiB bound (and its small tarball), together over it
    registry.publish("heavy", "1.0.0", {"index.js": "", "a.txt": part, "b.txt": part})
    registry.publish("huge", "1.0.0", {"index.js": "", "big.bin": os.urandom(1536 * 1024)})  # a file over it
    gw = await make_hosted(max_install_mib=1)
    status, body = await create(gw, {"heavy": "1.0.0"})
    assert status == 400, body
    assert "take 1.4 MiB, more than 1 MiB ([runtime] max_install_mib)" in body["message"], body
    status, body = await create(gw, {"huge": "1.0.0"})
    assert status == 400, body
    assert "wrote a file (a package's or its download) larger than 1 MiB" in body["message"], body
    assert installed_sets(dependencies_dir) == [] and not leftovers(dependencies_dir)


@pytest.mark.sqlite_only
async def test_a_registry_that_hangs_is_a_400_after_the_install_timeout(
    make_hosted: MakeGateway, registry: NpmRegistry, dependencies_dir: Path
) -> None:
    registry.hang = True
    gw = await make_hosted(install_timeout="3s")
    status, body = await create(gw, {"greet": "1.0.0"})
    assert status == 400, body
    assert "did not finish within 3 s ([runtime] install_timeout)" in body["message"], body
    assert registry.requests == ["/greet"]
    assert installed_sets(dependencies_dir) == [] and not leftovers(dependencies_dir)


@pytest.mark.sqlite_only
@pytest.mark.parametrize("npm_refuses", [True, False], ids=["as-configured", "npm-allows-remote"])
async def test_the_install_reaches_nothing_but_the_registry(
    make_hosted: MakeGateway, registry: NpmRegistry, dependencies_dir: Path, npm_refuses: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A packument whose tarball is on another loopback port: the install fails, and that port
    sees not even a connection. npm is told to fetch nothing but registry packages; with that
    flag taken away, the sandbox's network (the egress proxy reaching the registry only) stops
    it alone."""
    if not npm_refuses:
        monkeypatch.setattr(npm_install, "NPM_FLAGS", tuple(f for f in npm_install.NPM_FLAGS
                                                           if not f.startswith("--allow-remote")))
    connections: list[str] = []

    async def elsewhere(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append("connected")
        writer.close()

    other = await asyncio.start_server(elsewhere, "127.0.0.1", 0)
    try:
        port = other.sockets[0].getsockname()[1]
        registry.publish("sneaky", "1.0.0", greeting_package(), tarball_base=f"http://127.0.0.1:{port}/")
        gw = await make_hosted()
        status, body = await create(gw, {"sneaky": "1.0.0"})
        assert status == 400, body
        expected = ("outside the registry" if npm_refuses
                    else "only the registry's host and port are reachable")
        assert expected in body["message"], body
    finally:
        other.close()
        await other.wait_closed()
    assert connections == []
    assert registry.requests == ["/sneaky"] and installed_sets(dependencies_dir) == []


# --- where installed sets live ------------------------------------------------------------------


def test_installed_sets_live_beside_the_sqlite_file_or_under_data(
    make_settings: Callable[..., Settings], database_backend: str, tmp_path: Path
) -> None:
    settings = make_settings()
    if database_backend == "sqlite":
        assert settled_dir(settings) == tmp_path / DEFAULT_FOLDER  # the test's database is there
    else:
        assert settled_dir(settings) == Path("data", DEFAULT_FOLDER).resolve()
    chosen = make_settings(runtime={"dependencies_dir": str(tmp_path / "elsewhere")})
    assert settled_dir(chosen) == tmp_path / "elsewhere"


# --- bounds that hold while npm runs, and over every installed set ---------------------------------

MAX_WATCHES = 20_000  # looks at the folder's size, 5 ms apart at most, while an install runs


def disk_use(folder: Path) -> int:
    """Bytes the files under `folder` take (their size or their blocks, the larger)."""
    total = 0
    for top, _, names in os.walk(folder):
        for name in names:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:  # removed meanwhile
                continue
            total += max(st.st_size, st.st_blocks * 512)
    return total


async def largest_use_while(folder: Path, work: Awaitable[Any]) -> tuple[Any, int]:
    """What `work` returned, and the most `folder` held on the disk while it ran."""
    task = asyncio.ensure_future(work)
    largest = 0
    for _ in range(MAX_WATCHES):
        largest = max(largest, disk_use(folder))
        if task.done():
            break
        await asyncio.wait({task}, timeout=0.005)
    return await task, largest


@pytest.mark.sqlite_only
async def test_a_small_package_that_expands_past_the_bound_never_reaches_the_disk(
    make_hosted: MakeGateway, registry: NpmRegistry, dependencies_dir: Path
) -> None:
    """Before: npm extracted into the host folder, and the size was measured once it was done:
    a tarball of a few hundred KiB wrote tens of MiB (each file under the per-file cap, their
    number unbounded) before the 400."""
    block = os.urandom(4096)
    part = block * 224  # 896 KiB, under the 1 MiB a file may have: only their sum is too much
    files: dict[str, str | bytes] = {f"part-{i}.bin": part for i in range(48)}  # 42 MiB unpacked
    tarball = registry.publish("bomb", "1.0.0", {"index.js": "", **files})
    assert len(tarball) < 1024 * 1024
    gw = await make_hosted(max_install_mib=1)
    (status, body), largest = await largest_use_while(dependencies_dir, create(gw, {"bomb": "1.0.0"}))
    assert status == 400, body
    assert "more than 1 MiB ([runtime] max_install_mib)" in body["message"], body
    assert largest <= 2 * 1024 * 1024, f"the dependencies folder held {largest / 2**20:.1f} MiB"
    assert installed_sets(dependencies_dir) == [] and not leftovers(dependencies_dir)


def padded_package(kib: int, text: str = GREETING) -> dict[str, str | bytes]:
    """A package whose files take about `kib` KiB once installed (its tarball far less)."""
    return {**greeting_package(text), "pad.bin": b"p" * kib * 1024}


def is_there(path: Path) -> bool:
    return path.exists()


async def until_gone(folder: Path) -> None:
    """Until `folder` is removed (a sweep runs in the background after the API's answer)."""
    for _ in range(MAX_WATCHES):
        if not is_there(folder):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{folder.name} was never removed")


@pytest.mark.sqlite_only
async def test_a_save_the_store_would_refuse_installs_nothing(
    make_hosted: MakeGateway, registry: NpmRegistry, dependencies_dir: Path
) -> None:
    """Before: the set was installed first, then the quota and the name were checked: a tenant at
    its hook quota still had the gateway install (and keep) whatever it named."""
    registry.publish("greet", "1.0.0", greeting_package())
    gw = await make_hosted()
    await gw.create_tenant("small", quotas={"hooks": 1})
    resp = await gw.client.post("/api/v2/hooks", headers=gw.auth("small"), json={
        "name": "first", "triggerId": POINT, "script": requiring("greet")})
    assert resp.status == 201, await resp.text()
    refusals = {
        "over the quota": ("small", {"name": "second"}, 403, "quota 'hooks' is 1"),
        "a name taken": ("acme", {"name": "taken"}, 409, "a hook named 'taken' already exists"),
    }
    await create(gw, {}, name="taken")
    for case, (tenant, fields, status, message) in refusals.items():
        resp = await gw.client.post("/api/v2/hooks", headers=gw.auth(tenant), json={
            "triggerId": POINT, "script": requiring("greet"), "dependencies": {"greet": "1.0.0"}, **fields})
        body = await resp.json()
        assert resp.status == status and message in body["message"], (case, body)
    other = await create(gw, {}, name="other")
    resp = await gw.client.patch(f"/api/v2/hooks/{other[1]['id']}", headers=gw.auth(),
                                 json={"name": "taken", "dependencies": {"greet": "1.0.0"}})
    assert resp.status == 409, await resp.text()
    assert registry.requests == [] and installed_sets(dependencies_dir) == []


@pytest.mark.sqlite_only
async def test_installed_sets_no_hook_uses_are_removed(
    make_hosted: MakeGateway, registry: NpmRegistry, dependencies_dir: Path
) -> None:
    """Before: every set ever installed stayed, whatever happened to its hooks."""
    registry.publish("greet", "1.0.0", greeting_package("one"))
    registry.publish("greet", "1.2.0", greeting_package("two"))
    gw = await make_hosted()
    first = await script_hook(gw, POINT, requiring("greet", "first"), name="first", order=1,
                              dependencies={"greet": "1.0.0"})
    second = await script_hook(gw, POINT, requiring("greet", "second"), name="second", order=2,
                               dependencies={"greet": "1.0.0"})
    (shared,) = installed_sets(dependencies_dir)
    resp = await gw.client.delete(f"/api/v2/hooks/{first['id']}", headers=gw.auth())
    assert resp.status == 204
    await gw.svc.registry.hosting.sweep()  # after the one the delete started: the set is still used
    assert installed_sets(dependencies_dir) == [shared]
    resp = await gw.client.patch(f"/api/v2/hooks/{second['id']}", headers=gw.auth(),
                                 json={"dependencies": {"greet": "1.2.0"}})
    assert resp.status == 200, await resp.text()
    await until_gone(shared)  # no hook names it now
    (newer,) = installed_sets(dependencies_dir)
    assert (await invoke(gw, POINT, event_of(POINT)))["data"]["https://example.com/second"] == "two"
    resp = await gw.client.delete(f"/api/v2/hooks/{second['id']}", headers=gw.auth())
    assert resp.status == 204
    await until_gone(newer)
    assert installed_sets(dependencies_dir) == [] and not leftovers(dependencies_dir)


@pytest.mark.sqlite_only
async def test_a_set_a_running_process_has_bound_is_kept_until_the_process_ends(
    make_hosted: MakeGateway, registry: NpmRegistry, dependencies_dir: Path
) -> None:
    """A hook whose dependencies change while a call is in flight keeps its old process until
    the call ends, and that process its set: no sweep pulls the files from under it."""
    registry.publish("greet", "1.0.0", greeting_package("one"))
    registry.publish("greet", "1.2.0", greeting_package("two"))
    gw = await make_hosted()
    waiting = "module.exports = function (client, scope, audience, context, cb) { require('greet'); };\n"
    hook = await script_hook(gw, POINT, waiting, dependencies={"greet": "1.0.0"}, timeoutMs=60_000)
    (old,) = installed_sets(dependencies_dir)
    supervisor = gw.svc.registry.hosting.supervisor
    assert supervisor is not None
    call = asyncio.ensure_future(gw.client.post(f"/api/v2/hooks/{hook['id']}/test", headers=gw.auth()))
    try:
        for _ in range(MAX_WATCHES):  # until the call is in the hook's process
            proc = supervisor._live.get(hook["id"])
            if proc is not None and proc.in_flight:
                break
            assert not call.done(), await call.result().text()
            await asyncio.sleep(0.005)
        else:
            raise AssertionError("the call never reached the hook's process")
        resp = await gw.client.patch(f"/api/v2/hooks/{hook['id']}", headers=gw.auth(),
                                     json={"dependencies": {"greet": "1.2.0"}})
        assert resp.status == 200, await resp.text()
        await gw.svc.registry.hosting.sweep()
        assert old in installed_sets(dependencies_dir), "a set a live process binds was removed"
        assert proc.alive and (old / "node_modules" / "greet" / "index.js").is_file()
        proc.kill("the test is done with it")
        await proc.ended
    finally:
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
    await gw.svc.registry.hosting.sweep()
    assert old not in installed_sets(dependencies_dir)


@pytest.mark.sqlite_only
async def test_a_gateway_removes_at_start_the_sets_whose_hooks_went_elsewhere(
    make_hosted: MakeGateway, registry: NpmRegistry, dependencies_dir: Path
) -> None:
    """As with PostgreSQL, where another instance deleted the hook: each sweeps its own folder
    against the database's hooks."""
    registry.publish("greet", "1.0.0", greeting_package())
    gw = await make_hosted()
    hook = await script_hook(gw, POINT, requiring("greet"), dependencies={"greet": "1.0.0"})
    (folder,) = installed_sets(dependencies_dir)
    await gw.svc.store.delete_hook("acme", hook["id"], gw.svc.clock())  # not through this gateway
    await make_hosted(tenant=False)
    await until_gone(folder)


@pytest.mark.sqlite_only
async def test_installs_past_the_total_bound_are_refused_until_sets_are_removed(
    make_hosted: MakeGateway, registry: NpmRegistry, dependencies_dir: Path
) -> None:
    registry.publish("big-a", "1.0.0", padded_package(600))
    registry.publish("big-b", "1.0.0", padded_package(600))
    gw = await make_hosted(max_install_mib=1, max_dependencies_mib=1)
    status, first = await create(gw, {"big-a": "1.0.0"}, name="a")
    assert status == 201, first
    (held,) = installed_sets(dependencies_dir)
    status, body = await create(gw, {"big-b": "1.0.0"}, name="b")
    assert status == 400, body
    assert "more than 1 MiB ([runtime] max_dependencies_mib)" in body["message"], body
    assert installed_sets(dependencies_dir) == [held] and not leftovers(dependencies_dir)
    resp = await gw.client.delete(f"/api/v2/hooks/{first['id']}", headers=gw.auth())
    assert resp.status == 204
    await until_gone(held)
    status, body = await create(gw, {"big-b": "1.0.0"}, name="b")
    assert status == 201, body
