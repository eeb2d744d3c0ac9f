"""The warm pool of hosted hooks' runtime processes: one per hook, never shared.

A hook's process is started when the hook is created or enabled (pre-warmed) or on its first
call; it serves the hook's calls until it has served `recycle_calls` of them, sat idle for
`idle_timeout_s`, or its script changed (then it is retired: killed once its calls in flight
are done, and the next call starts a new one); a call that runs out of time, a crash or an OOM
kill ends it at once (gateway/runtime/process.py). A process recycled after `recycle_calls`
hands over instead: its successor starts in the background and it keeps answering until the
successor is ready (or failed to start), so no call waits for a start; so does a process that has
used half of its lifetime's CPU time (RLIMIT_CPU, [runtime] cpu_seconds), read from /proc after its
calls (every CPU_CHECK_SHARE of that time at most) and by the reaper, so that a busy script is not
killed by the limit in the middle of a call. At most `max_processes`
live at a time (a recycled one still answering counts): the least recently used idle one makes
room; when every one is busy, the call fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..egress import IPNetwork
from .dependencies import DependencyStore
from .egress_proxy import EgressProxy, ProxyCaps
from .npm_install import InstallFailure
from .process import Answer, HookProcess, RuntimeFailure
from .sandbox import SandboxConfig
from .users import TenantUids

log = logging.getLogger("gateway.runtime")

# The gateway's extensibility points -> the auth0-ext-compilers compiler of each.
COMPILERS = {
    "credentials-exchange": "client-credentials-exchange",
    "pre-user-registration": "pre-user-registration",
    "post-user-registration": "post-user-registration",
    "post-change-password": "post-change-password",
    "send-phone-message": "send-phone-message",
}
SCRIPT_FILE = "script.js"  # in the hook's folder, /hook inside the sandbox
MODULES = "node_modules"  # in the hook's folder: where its dependencies are bound
EGRESS_SOCKET = "egress.sock"  # the process's egress proxy, in the hook's folder (runner.js)
CPU_RETIRE_SHARE = 0.5  # of [runtime] cpu_seconds: a process that has used this much hands over
CPU_CHECK_SHARE = 1 / 8  # of cpu_seconds: how often (in time) a process's CPU is read after its calls
CPU_CHECK_EVERY_S = (0.05, 5.0)  # bounds of that interval
READY_TIMEOUT_S = 10.0  # a pre-warmed process that has not compiled its script by then is stopped
REAP_EVERY_S = 5.0  # how often idle processes are looked for (at most)


@dataclass(frozen=True)
class HostedHook:
    """What a hosted hook's call needs: its script, point and (decrypted) secrets."""

    tenant_id: str
    hook_id: str
    trigger_id: str
    script: str
    secrets: Mapping[str, str] = field(default_factory=dict)
    dependencies: tuple[tuple[str, str], ...] = ()  # (name, version), sorted: bound at /hook/node_modules

    @functools.cached_property
    def digest(self) -> str:
        deps = "\0".join(f"{name}@{version}" for name, version in self.dependencies)
        return hashlib.sha256(f"{self.trigger_id}\0{self.script}\0{deps}".encode()).hexdigest()


class Supervisor:
    def __init__(
        self,
        config: SandboxConfig,
        *,
        uids: TenantUids | None,
        runtime_dir: Path,
        base_dir: Path,
        max_processes: int = 64,
        max_processes_per_tenant: int | None = None,
        recycle_calls: int = 1000,
        idle_timeout_s: float = 300.0,
        egress: ProxyCaps | None = None,
        allow_cidrs: Sequence[IPNetwork] = (),
        dependencies: DependencyStore | None = None,
    ) -> None:
        self.config = config
        self.uids = uids  # None: the uid layer is off
        self.runtime_dir = runtime_dir
        self.base_dir = base_dir
        self.max_processes = max_processes
        # Of them, one tenant's at most (None: all of them): one tenant's busy hooks leave the rest
        # of the pool to the others' calls.
        self.max_processes_per_tenant = min(max_processes_per_tenant or max_processes, max_processes)
        self._tenants: dict[str, str] = {}  # hook id -> its tenant, while the hook has a process
        self.recycle_calls = recycle_calls
        self.idle_timeout_s = idle_timeout_s
        # Each process's CPU time over its life is capped (RLIMIT_CPU) where the limits layer is on.
        cpu_s = config.limits.cpu_seconds
        self._cpu_retire_s = cpu_s * CPU_RETIRE_SHARE if config.layers.limits else None
        self._cpu_check_s = min(max(cpu_s * CPU_CHECK_SHARE, CPU_CHECK_EVERY_S[0]), CPU_CHECK_EVERY_S[1])
        self._versions: dict[HookProcess, HostedHook] = {}  # what each process runs (secrets left out)
        self.egress = egress  # each process's egress proxy's caps; None: scripts have no network
        self.allow_cidrs = tuple(allow_cidrs)  # [egress] allow_cidrs, for the egress proxies
        self._proxies: dict[HookProcess, EgressProxy] = {}
        self.dependencies = dependencies  # installed sets; None: hooks with dependencies cannot start
        self._live: OrderedDict[str, HookProcess] = OrderedDict()  # hook id -> process, LRU first
        self._starting: dict[str, asyncio.Future[HookProcess]] = {}
        self._retired: set[HookProcess] = set()
        # hook id -> its recycled process, still serving until its successor (in _live) is ready
        self._standins: dict[str, HookProcess] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._folders = itertools.count(1)
        self._bound: dict[Path, Path] = {}  # a process's folder -> the dependencies it binds, until it goes
        self._closed = False

    # -- calls ------------------------------------------------------------------------------

    async def call(self, hook: HostedHook, body: bytes, *, timeout_s: float, body_cap: int) -> Answer:
        """One call of `hook` with `body`; `RuntimeFailure` when it got no answer in time."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        proc = self._warm(hook)
        if proc is None:  # started, or waited for, within the call's time
            try:
                async with asyncio.timeout(timeout_s):
                    proc = await self._process(hook)
            except TimeoutError:
                raise RuntimeFailure(f"timed out after {round(timeout_s * 1000)} ms while starting the "
                                     "hook's process") from None
        try:
            return await proc.call(body, hook.secrets, max(end - loop.time(), 0.001), body_cap,
                                   timeout_ms=round(timeout_s * 1000))
        finally:
            if proc.calls >= self.recycle_calls or self._worn(proc, proc.last_used):
                self._recycle(proc, hook)
            elif proc.retiring and proc.in_flight == 0:
                proc.kill("the hook's process was recycled")

    def prewarm(self, hook: HostedHook) -> None:
        """Start the hook's process in the background (errors are only logged)."""
        if self._closed:
            return

        async def warm() -> None:
            try:
                proc = await self._process(hook)
                if not await proc.wait_ready(READY_TIMEOUT_S) and proc.alive:
                    proc.kill(f"the script was not compiled within {READY_TIMEOUT_S:g} s")
            except Exception as exc:  # noqa: BLE001 - a pre-warm that fails leaves the first call to start it
                log.warning("pre-warming hook %s failed: %s", hook.hook_id, exc)
            finally:
                self._relieve(hook.hook_id)

        self._spawn(warm())

    def forget(self, hook_id: str) -> None:
        """The hook was deleted, disabled or changed: its process goes once idle."""
        for proc in (self._live.get(hook_id), self._standins.pop(hook_id, None)):
            if proc is not None:
                self._retire(proc)

    def live(self) -> dict[str, int]:
        """hook id -> pid of each live process (for tests and the operator)."""
        return {hook_id: proc.pid for hook_id, proc in self._live.items() if proc.alive}

    def bound_dependencies(self) -> set[Path]:
        """The installed sets (node_modules folders) some process has bound, or is binding: no
        sweep removes them (gateway/runtime/dependencies.py)."""
        return set(self._bound.values())

    async def close(self) -> None:
        """Stop every process and the background tasks; remove the hooks' folders."""
        self._closed = True
        tasks = list(self._background) + ([self._reaper] if self._reaper else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for starting in list(self._starting.values()):
            with contextlib.suppress(Exception):
                await starting
        procs = list(self._live.values()) + list(self._retired) + list(self._standins.values())
        self._live.clear()
        self._retired.clear()
        self._standins.clear()
        await asyncio.gather(*(p.close() for p in procs), return_exceptions=True)
        proxies = list(self._proxies.values())
        self._proxies.clear()
        await asyncio.gather(*(p.close() for p in proxies), return_exceptions=True)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- the pool -----------------------------------------------------------------------------

    def _warm(self, hook: HostedHook, *, standin: bool = True) -> HookProcess | None:
        """The hook's live process, when it serves this version of the hook (the usual case); while
        a recycled process's successor starts, the recycled one (`standin`)."""
        proc = self._live.get(hook.hook_id)
        if proc is not None and not self._serves(proc, hook):
            proc = None
        if standin and (proc is None or not proc.ready):
            recycled = self._standins.get(hook.hook_id)
            if recycled is not None and self._serves(recycled, hook):
                return recycled
        if proc is not None:
            self._live.move_to_end(hook.hook_id)
        return proc

    def _serves(self, proc: HookProcess, hook: HostedHook) -> bool:
        return not self._closed and proc.alive and proc.digest == hook.digest and not proc.retiring

    def _recycle(self, proc: HookProcess, hook: HostedHook) -> None:
        """`proc` has served `recycle_calls`: its successor starts in the background while it keeps
        serving (a start costs as much CPU as a hundred calls, and calls waiting for it would wait
        ~0.1 s); it retires once the successor is ready, or failed to be."""
        if self._standins.get(proc.hook_id) is proc:
            return  # its successor is on its way
        if self._live.get(proc.hook_id) is not proc or proc.retiring or self._closed:
            self._retire(proc)
            return
        del self._live[proc.hook_id]
        self._standins[proc.hook_id] = proc
        self.prewarm(hook)

    def _worn(self, proc: HookProcess, now: float) -> bool:
        """Whether `proc` has used CPU_RETIRE_SHARE of its CPU time; read at most every
        `_cpu_check_s` (a process uses at most about that much CPU in between)."""
        if self._cpu_retire_s is None or now - proc.cpu_checked < self._cpu_check_s:
            return False
        proc.cpu_checked = now
        used = proc.cpu_time()
        return used is not None and used >= self._cpu_retire_s

    def _relieve(self, hook_id: str) -> None:
        """The successor of a recycled process is ready, or failed: the recycled one retires."""
        standin = self._standins.pop(hook_id, None)
        if standin is not None:
            self._retire(standin)

    async def _process(self, hook: HostedHook) -> HookProcess:
        if self._closed:
            raise RuntimeFailure("the gateway is shutting down")
        if (warm := self._warm(hook, standin=False)) is not None:  # a successor starts here
            return warm
        proc = self._live.get(hook.hook_id)
        if proc is not None:
            self._retire(proc)
        starting = self._starting.get(hook.hook_id)
        if starting is None:
            starting = asyncio.ensure_future(self._start(hook))
            self._starting[hook.hook_id] = starting
            starting.add_done_callback(lambda _: self._started(hook.hook_id))
        proc = await asyncio.shield(starting)
        if proc.digest != hook.digest:  # started for another version of the script just now
            return await self._process(hook)
        return proc

    def _started(self, hook_id: str) -> None:
        self._starting.pop(hook_id, None)
        self._forget_tenant(hook_id)  # a start that failed leaves nothing of the hook

    async def _start(self, hook: HostedHook) -> HookProcess:
        compiler = COMPILERS.get(hook.trigger_id)
        if compiler is None:
            raise RuntimeFailure(f"no compiler for the point {hook.trigger_id!r}")
        modules = await self._modules(hook)
        self._tenants[hook.hook_id] = hook.tenant_id
        self._make_room(hook.tenant_id)
        self._ensure_reaper()
        uid = self.uids.uid_for(hook.tenant_id) if self.uids is not None else None
        folder = self._hook_folder(hook, uid, modules)
        if modules is not None:  # from `_modules` on without yielding: a sweep sees it bound
            self._bound[folder] = modules
        proxy: EgressProxy | None = None
        try:
            if self.egress is not None:  # before node starts: its socket is there from the first call
                proxy = await EgressProxy.start(folder / EGRESS_SOCKET, allow_cidrs=self.allow_cidrs,
                                                caps=self.egress, owner=None if uid is None else (uid, uid))
            proc = await HookProcess.start(
                self.config, hook_id=hook.hook_id, digest=hook.digest, uid=uid,
                runtime_dir=self.runtime_dir, hook_dir=folder, compiler=compiler,
                cleanup=lambda: self._remove_folder(folder), node_modules=modules,
            )
        except BaseException as exc:
            if proxy is not None:
                await proxy.close()
            self._remove_folder(folder)
            if isinstance(exc, OSError):
                raise RuntimeFailure(f"the hook's process could not start: {exc.strerror or exc}") from None
            raise
        if proxy is not None:
            self._proxies[proc] = proxy  # closed when the process ends (`_ended`) or with the pool
        if self._closed:
            await proc.close()
            raise RuntimeFailure("the gateway is shutting down")
        self._live[hook.hook_id] = proc
        self._versions[proc] = replace(hook, secrets={})  # to start its successor with (`_reap`)
        proc.ended.add_done_callback(lambda _: self._ended(proc))
        return proc

    async def _modules(self, hook: HostedHook) -> Path | None:
        """The hook's installed dependencies: installed now when this gateway has not yet (a set
        saved through another instance, or a folder wiped)."""
        if not hook.dependencies:
            return None
        if self.dependencies is None:
            raise RuntimeFailure("the hook has dependencies, which this gateway cannot install")
        try:
            return await self.dependencies.modules(hook.dependencies, tenant=hook.tenant_id)
        except InstallFailure as exc:
            raise RuntimeFailure(f"the hook's dependencies could not be installed: {exc.reason}") from None

    def _hook_folder(self, hook: HostedHook, uid: int | None, modules: Path | None = None) -> Path:
        """A folder of the process's own holding the script: readable by the tenant's uid only
        (root owns it, the tenant's gid may read it); with dependencies, their mount point (or,
        without bubblewrap, a link to them)."""
        folder = self.base_dir / f"{hook.hook_id}-{next(self._folders)}"
        folder.mkdir(mode=0o700)
        if modules is not None:
            if self.config.layers.namespaces:
                (folder / MODULES).mkdir(mode=0o555)
            else:
                (folder / MODULES).symlink_to(modules, target_is_directory=True)
        script = folder / SCRIPT_FILE
        script.write_text(hook.script, encoding="utf-8")
        if uid is not None:
            os.chown(folder, 0, uid)
            os.chown(script, 0, uid)
            folder.chmod(0o750)
            script.chmod(0o640)
        else:
            folder.chmod(0o755)
            script.chmod(0o644)
        return folder

    def _remove_folder(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        modules = self._bound.pop(folder, None)
        if modules is not None and self.dependencies is not None:
            self.dependencies.unbound(modules)  # a set no hook uses any more may go now

    def _make_room(self, tenant: str) -> None:
        """Evict the least recently used idle process while the pool is full, or the least recently
        used idle one of `tenant`'s while `tenant` holds its share. Retired processes still
        finishing their calls count: else editing a busy hook's script would start process after
        process past the bound."""
        while True:
            if len(self._holding(tenant)) > self.max_processes_per_tenant:
                candidates, whose = self._holding(tenant), "of this tenant"
                bound = f"max_processes_per_tenant = {self.max_processes_per_tenant}"
            elif len(self._holding(None)) > self.max_processes:
                candidates, whose = list(self._live), "of the gateway"
                bound = f"max_processes = {self.max_processes}"
            else:
                return
            idle = next((p for h, p in self._live.items() if h in candidates and p.in_flight == 0), None)
            if idle is None:
                raise RuntimeFailure(f"every hosted hook process {whose} is busy ([runtime] {bound})")
            self._retire(idle)

    def _forget_tenant(self, hook_id: str) -> None:
        """The hook's tenant is no longer needed once no process of the hook takes room."""
        if hook_id not in self._holding(None):
            self._tenants.pop(hook_id, None)

    def _holding(self, tenant: str | None) -> list[str]:
        """The hook ids of the processes that take room in the pool (`tenant`'s, or everyone's):
        live, starting, standing in for a recycled one, or retired but still finishing calls."""
        ids = [*self._live, *self._starting, *self._standins, *(p.hook_id for p in self._retired)]
        return ids if tenant is None else [h for h in ids if self._tenants.get(h) == tenant]

    def _retire(self, proc: HookProcess) -> None:
        if self._live.get(proc.hook_id) is proc:
            del self._live[proc.hook_id]
        proc.retiring = True
        if proc.in_flight == 0:
            proc.kill("the hook's process was recycled")
        if proc.alive:
            self._retired.add(proc)

    def _ended(self, proc: HookProcess) -> None:
        if self._live.get(proc.hook_id) is proc:
            del self._live[proc.hook_id]
        if self._standins.get(proc.hook_id) is proc:
            del self._standins[proc.hook_id]
        self._retired.discard(proc)
        self._versions.pop(proc, None)
        self._forget_tenant(proc.hook_id)
        if proc in self._proxies and not self._closed:  # once closed, `close` ends the proxies
            self._spawn(self._close_proxy(proc))

    async def _close_proxy(self, proc: HookProcess) -> None:
        proxy = self._proxies.get(proc)
        if proxy is not None:
            await proxy.close()  # a second close (by `close`, if this one is cancelled) is harmless
            self._proxies.pop(proc, None)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        while self._live:
            await asyncio.sleep(min(REAP_EVERY_S, max(self.idle_timeout_s / 2, 0.05)))
            now = time.monotonic()
            horizon = now - self.idle_timeout_s
            for proc in list(self._live.values()):
                if proc.in_flight == 0 and proc.last_used < horizon:
                    self._retire(proc)
                elif (version := self._versions.get(proc)) is not None and self._worn(proc, now):
                    self._recycle(proc, version)  # (a script that spends its CPU between calls)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
