"""Whether this gateway runs hosted hooks, and the supervisor that does: built once at start
from `[runtime]` (probing the host), kept on the hook registry, which hands it to each hosted
hook's calls. Where hosted hooks cannot run, `refusal` says why (the API's 400, the attempt's
error)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..egress import IPNetwork
from ..settings import RuntimeSettings
from ..store.base import Store
from .dependencies import DependencyStore, InUse, open_store
from .egress_proxy import ProxyCaps
from .limits import Limits, detect_cgroups
from .npm_install import InstallFailure
from .package_specs import Dependencies
from .probe import probe
from .process import Answer, RuntimeFailure
from .sandbox import Layers, SandboxConfig
from .supervisor import HostedHook, Supervisor
from .users import TenantUids

log = logging.getLogger("gateway.runtime")

RUNTIME_DIR = Path(__file__).resolve().parent / "node"  # runner.js and its node_modules (make node)
COMPILERS_PACKAGE = "auth0-ext-compilers"
PROBE_TENANT = "\0probe"  # the uid the start-up probe runs as: one of the range, no tenant's
INSTALL_TENANT = "\0install"  # the uid dependency installs run as: one of the range, no tenant's
OFF = "hosted hooks are off on this gateway ([runtime] enabled = false)"
SWEEP_EVERY_S = 600.0  # installed sets no hook uses are looked for this often (and at start)
PAGE = 100  # tenants, and hooks of one, read at a time by a sweep


@dataclass
class Hosting:
    supervisor: Supervisor | None = None
    refusal: str | None = OFF  # why hooks with a script cannot run here; None once they can
    dependencies: DependencyStore | None = None  # the installed sets of hooks' dependencies
    dependencies_refusal: str | None = None  # why there is no such store, where script hooks run
    _in_use: InUse | None = field(default=None, repr=False)
    _sweeps: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    async def install(self, deps: Dependencies, *, tenant: str) -> None:
        """`deps` installed for `tenant`, or found installed; `InstallFailure` says why not."""
        if self.dependencies is None:
            raise InstallFailure(self.dependencies_refusal or self.refusal or "no dependency installs here")
        await self.dependencies.modules(deps, tenant=tenant)

    @contextlib.asynccontextmanager
    async def installed(self, deps: Dependencies, *, tenant: str) -> AsyncIterator[None]:
        """`deps` installed for `tenant` (`InstallFailure` says why not), and kept from sweeps
        until the block ends (a save: until its hook is stored, or was not)."""
        if not deps or self.dependencies is None:
            if deps:
                await self.install(deps, tenant=tenant)
            yield
            return
        with self.dependencies.held(deps):
            await self.dependencies.modules(deps, tenant=tenant)
            yield

    def start_sweeps(self, in_use: InUse) -> None:
        """Installed sets no hook `in_use` names are removed now, every SWEEP_EVERY_S (hooks
        deleted through another instance) and after `sweep_soon`."""
        if self.dependencies is None:
            return
        self._in_use = in_use

        async def every() -> None:
            while True:
                await self.sweep()
                await asyncio.sleep(SWEEP_EVERY_S)

        self._spawn(every())

    def sweep_soon(self) -> None:
        """A sweep in the background (a hook was deleted, or its dependencies changed)."""
        if self.dependencies is not None and self._in_use is not None:
            self._spawn(self.sweep())

    async def sweep(self) -> None:
        """Remove the installed sets no hook uses (errors are only logged)."""
        if self.dependencies is None or self._in_use is None:
            return
        bound = self.supervisor.bound_dependencies if self.supervisor is not None else tuple
        try:
            await self.dependencies.sweep(self._in_use, bound)
        except Exception as exc:  # noqa: BLE001 - the next sweep tries again
            log.warning("removing unused dependency sets failed: %s", exc)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._sweeps.add(task)
        task.add_done_callback(self._sweeps.discard)

    async def call(self, hook: HostedHook, body: bytes, *, timeout_s: float, body_cap: int) -> Answer:
        if self.supervisor is None:
            raise RuntimeFailure(f"hosted hooks cannot run on this gateway: {self.refusal}")
        return await self.supervisor.call(hook, body, timeout_s=timeout_s, body_cap=body_cap)

    def prewarm(self, hook: HostedHook) -> None:
        if self.supervisor is not None:
            self.supervisor.prewarm(hook)

    def forget(self, hook_id: str) -> None:
        if self.supervisor is not None:
            self.supervisor.forget(hook_id)

    async def close(self) -> None:
        for task in list(self._sweeps):
            task.cancel()
        await asyncio.gather(*self._sweeps, return_exceptions=True)
        if self.supervisor is not None:
            await self.supervisor.close()
        if self.dependencies is not None:
            await self.dependencies.close()


async def dependencies_in_use(store: Store) -> list[Dependencies]:
    """The `dependencies` of every hook in the database (every tenant's), for sweeps."""
    found: list[Dependencies] = []
    tenants = await store.list_tenants(offset=0, limit=PAGE)
    for offset in range(0, tenants.total, PAGE):
        page = tenants if offset == 0 else await store.list_tenants(offset=offset, limit=PAGE)
        for tenant in page.items:
            hooks = await store.list_hooks(tenant.id, offset=0, limit=PAGE)
            for at in range(0, hooks.total, PAGE):
                batch = hooks if at == 0 else await store.list_hooks(tenant.id, offset=at, limit=PAGE)
                found.extend(hook.dependencies for hook in batch.items if hook.dependencies)
    return found


def sandbox_config(r: RuntimeSettings, layers: Layers = Layers()) -> SandboxConfig:  # noqa: B008 - frozen
    limits = Limits(address_space_mib=r.address_space_mib, cpu_seconds=r.cpu_seconds, open_files=r.open_files,
                    file_size_mib=r.file_size_mib, processes=r.processes, memory_mib=r.memory_mib or None,
                    pids=r.pids or None)
    return SandboxConfig(node=r.node, bwrap=r.bwrap, limits=limits, layers=layers)


def egress_caps(r: RuntimeSettings, connect_timeout_s: float) -> ProxyCaps | None:
    """The caps of each hook process's egress proxy; None: scripts get no proxy, so no network."""
    if r.egress_connections == 0:
        return None
    return ProxyCaps(connections=r.egress_connections, bytes_per_tunnel=r.egress_bytes_mib << 20,
                     connect_timeout_s=connect_timeout_s, lifetime_s=float(r.egress_timeout),
                     idle_timeout_s=min(ProxyCaps.idle_timeout_s, float(r.egress_timeout)))


async def start_hosting(r: RuntimeSettings, *, runtime_dir: Path = RUNTIME_DIR,
                        layers: Layers = Layers(),  # noqa: B008 - frozen
                        allow_cidrs: Sequence[IPNetwork] = (), connect_timeout_s: float = 5.0,
                        dependencies_dir: Path | None = None) -> Hosting:
    """The hosting `r` asks for, once the host is probed (every layer on outside tests).
    `allow_cidrs` and `connect_timeout_s` are [egress]'s: the scripts' egress proxies use them,
    and dependency installs' too. `dependencies_dir`: where installed sets live (None: none)."""
    if not r.enabled:
        return Hosting()
    if not (runtime_dir / "node_modules" / COMPILERS_PACKAGE / "package.json").is_file():
        return _refused(f"runtime: Auth0's compilers are not installed in {runtime_dir} (run `make node`, "
                        "or `npm ci --ignore-scripts` in that folder)")
    config = sandbox_config(r, layers)
    uids = TenantUids(r.uid_first, r.uid_count) if layers.uid else None
    probe_uid = uids.uid_for(PROBE_TENANT) if uids is not None else 0
    support = await asyncio.to_thread(probe, config, probe_uid=probe_uid)
    if not support.ready:
        return _refused("; ".join(support.missing))
    for note in support.notes:
        log.warning("hosted hooks: %s", note)
    cgroups = await asyncio.to_thread(detect_cgroups) if layers.limits and support.cgroups else None
    config = replace(config, cgroups=cgroups)
    store, why_not = None, "no folder for dependencies on this gateway"
    if dependencies_dir is not None:
        try:
            store = await open_store(r, dependencies_dir, config, runtime_dir=runtime_dir,
                                     uid=uids.uid_for(INSTALL_TENANT) if uids is not None else None,
                                     allow_cidrs=allow_cidrs, connect_timeout_s=connect_timeout_s)
        except (InstallFailure, OSError) as exc:
            why_not = f"dependencies cannot be installed here: {exc}"
            log.warning("hosted hooks: %s", why_not)
    base = Path(tempfile.mkdtemp(prefix="gateway-hooks-"))
    os.chmod(base, 0o711)  # noqa: S103 - tenants' uids reach their own folders (0o750), and list none
    supervisor = Supervisor(
        config,
        uids=uids, runtime_dir=runtime_dir, base_dir=base, max_processes=r.max_processes,
        max_processes_per_tenant=r.max_processes_per_tenant,
        recycle_calls=r.recycle_calls, idle_timeout_s=float(r.idle_timeout),
        egress=egress_caps(r, connect_timeout_s), allow_cidrs=allow_cidrs, dependencies=store,
    )
    log.info("hosted hooks: available (%s)", "cgroups" if cgroups else "rlimits only")
    return Hosting(supervisor, None, store, None if store is not None else why_not)


def _refused(reason: str) -> Hosting:
    log.warning("hosted hooks: unavailable: %s", reason)
    return Hosting(None, reason)
