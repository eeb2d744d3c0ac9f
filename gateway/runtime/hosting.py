"""Whether this gateway runs hosted hooks, and the supervisor that does: built once at start
from `[runtime]` (probing the host), kept on the hook registry, which hands it to each hosted
hook's calls. Where hosted hooks cannot run, `refusal` says why (the API's 400, the attempt's
error)."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..settings import RuntimeSettings
from .limits import Limits, detect_cgroups
from .probe import probe
from .process import Answer, RuntimeFailure
from .sandbox import Layers, SandboxConfig
from .supervisor import HostedHook, Supervisor
from .users import TenantUids

log = logging.getLogger("gateway.runtime")

RUNTIME_DIR = Path(__file__).resolve().parent / "node"  # runner.js and its node_modules (make node)
COMPILERS_PACKAGE = "auth0-ext-compilers"
PROBE_TENANT = "\0probe"  # the uid the start-up probe runs as: one of the range, no tenant's
OFF = "hosted hooks are off on this gateway ([runtime] enabled = false)"


@dataclass
class Hosting:
    supervisor: Supervisor | None = None
    refusal: str | None = OFF  # why hooks with a script cannot run here; None once they can

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
        if self.supervisor is not None:
            await self.supervisor.close()


def sandbox_config(r: RuntimeSettings, layers: Layers = Layers()) -> SandboxConfig:  # noqa: B008 - frozen
    limits = Limits(address_space_mib=r.address_space_mib, cpu_seconds=r.cpu_seconds, open_files=r.open_files,
                    file_size_mib=r.file_size_mib, processes=r.processes, memory_mib=r.memory_mib or None,
                    pids=r.pids or None)
    return SandboxConfig(node=r.node, bwrap=r.bwrap, limits=limits, layers=layers)


async def start_hosting(r: RuntimeSettings, *, runtime_dir: Path = RUNTIME_DIR,
                        layers: Layers = Layers()) -> Hosting:  # noqa: B008 - frozen
    """The hosting `r` asks for, once the host is probed (every layer on outside tests)."""
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
    base = Path(tempfile.mkdtemp(prefix="gateway-hooks-"))
    os.chmod(base, 0o711)  # noqa: S103 - tenants' uids reach their own folders (0o750), and list none
    supervisor = Supervisor(
        replace(config, cgroups=cgroups),
        uids=uids, runtime_dir=runtime_dir, base_dir=base, max_processes=r.max_processes,
        recycle_calls=r.recycle_calls, idle_timeout_s=float(r.idle_timeout),
    )
    log.info("hosted hooks: available (%s)", "cgroups" if cgroups else "rlimits only")
    return Hosting(supervisor, None)


def _refused(reason: str) -> Hosting:
    log.warning("hosted hooks: unavailable: %s", reason)
    return Hosting(None, reason)
