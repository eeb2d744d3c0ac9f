"""The warm pool of hosted hooks' runtime processes: one per hook, never shared.

A hook's process is started when the hook is created or enabled (pre-warmed) or on its first
call; it serves the hook's calls until it has served `recycle_calls` of them, sat idle for
`idle_timeout_s`, or its script changed (then it is retired: killed once its calls in flight
are done, and the next call starts a new one); a call that runs out of time, a crash or an OOM
kill ends it at once (gateway/runtime/process.py). At most `max_processes` live at a time: the
least recently used idle one makes room; when every one is busy, the call fails.
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
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.trigger_id}\0{self.script}".encode()).hexdigest()


class Supervisor:
    def __init__(
        self,
        config: SandboxConfig,
        *,
        uids: TenantUids | None,
        runtime_dir: Path,
        base_dir: Path,
        max_processes: int = 64,
        recycle_calls: int = 1000,
        idle_timeout_s: float = 300.0,
    ) -> None:
        self.config = config
        self.uids = uids  # None: the uid layer is off
        self.runtime_dir = runtime_dir
        self.base_dir = base_dir
        self.max_processes = max_processes
        self.recycle_calls = recycle_calls
        self.idle_timeout_s = idle_timeout_s
        self._live: OrderedDict[str, HookProcess] = OrderedDict()  # hook id -> process, LRU first
        self._starting: dict[str, asyncio.Future[HookProcess]] = {}
        self._retired: set[HookProcess] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._folders = itertools.count(1)
        self._closed = False

    # -- calls ------------------------------------------------------------------------------

    async def call(self, hook: HostedHook, body: bytes, *, timeout_s: float, body_cap: int) -> Answer:
        """One call of `hook` with `body`; `RuntimeFailure` when it got no answer in time."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
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
            if proc.calls >= self.recycle_calls:
                self._retire(proc)
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

        self._spawn(warm())

    def forget(self, hook_id: str) -> None:
        """The hook was deleted, disabled or changed: its process goes once idle."""
        proc = self._live.get(hook_id)
        if proc is not None:
            self._retire(proc)

    def live(self) -> dict[str, int]:
        """hook id -> pid of each live process (for tests and the operator)."""
        return {hook_id: proc.pid for hook_id, proc in self._live.items() if proc.alive}

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
        procs = list(self._live.values()) + list(self._retired)
        self._live.clear()
        self._retired.clear()
        await asyncio.gather(*(p.close() for p in procs), return_exceptions=True)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- the pool -----------------------------------------------------------------------------

    async def _process(self, hook: HostedHook) -> HookProcess:
        if self._closed:
            raise RuntimeFailure("the gateway is shutting down")
        proc = self._live.get(hook.hook_id)
        if proc is not None and proc.alive and proc.digest == hook.digest and not proc.retiring:
            self._live.move_to_end(hook.hook_id)
            return proc
        if proc is not None:
            self._retire(proc)
        starting = self._starting.get(hook.hook_id)
        if starting is None:
            starting = asyncio.ensure_future(self._start(hook))
            self._starting[hook.hook_id] = starting
            starting.add_done_callback(lambda _: self._starting.pop(hook.hook_id, None))
        proc = await asyncio.shield(starting)
        if proc.digest != hook.digest:  # started for another version of the script just now
            return await self._process(hook)
        return proc

    async def _start(self, hook: HostedHook) -> HookProcess:
        compiler = COMPILERS.get(hook.trigger_id)
        if compiler is None:
            raise RuntimeFailure(f"no compiler for the point {hook.trigger_id!r}")
        self._make_room()
        self._ensure_reaper()
        uid = self.uids.uid_for(hook.tenant_id) if self.uids is not None else None
        folder = self._hook_folder(hook, uid)
        try:
            proc = await HookProcess.start(
                self.config, hook_id=hook.hook_id, digest=hook.digest, uid=uid,
                runtime_dir=self.runtime_dir, hook_dir=folder, compiler=compiler,
                cleanup=lambda: shutil.rmtree(folder, ignore_errors=True),
            )
        except OSError as exc:
            raise RuntimeFailure(f"the hook's process could not start: {exc.strerror or exc}") from None
        if self._closed:
            await proc.close()
            raise RuntimeFailure("the gateway is shutting down")
        self._live[hook.hook_id] = proc
        proc.ended.add_done_callback(lambda _: self._ended(proc))
        return proc

    def _hook_folder(self, hook: HostedHook, uid: int | None) -> Path:
        """A folder of the process's own holding the script: readable by the tenant's uid only
        (root owns it, the tenant's gid may read it)."""
        folder = self.base_dir / f"{hook.hook_id}-{next(self._folders)}"
        folder.mkdir(mode=0o700)
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

    def _make_room(self) -> None:
        """Evict the least recently used idle process while the pool is full."""
        while len(self._live) + len(self._starting) > self.max_processes:
            idle = next((p for p in self._live.values() if p.in_flight == 0), None)
            if idle is None:
                raise RuntimeFailure(f"every hosted hook process is busy ([runtime] max_processes = "
                                     f"{self.max_processes})")
            self._retire(idle)

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
        self._retired.discard(proc)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        while self._live:
            await asyncio.sleep(min(REAP_EVERY_S, max(self.idle_timeout_s / 2, 0.05)))
            horizon = time.monotonic() - self.idle_timeout_s
            for proc in list(self._live.values()):
                if proc.in_flight == 0 and proc.last_used < horizon:
                    self._retire(proc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
