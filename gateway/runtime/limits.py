"""Layer 2: resource limits on each sandboxed process.

rlimits are set between fork and exec, so bubblewrap and node inherit them. Where the host has
the memory and pids cgroup controllers (v1, or v2 with them delegated), each process also gets
a cgroup of its own: a hard memory cap (the kernel's OOM killer ends the process with SIGKILL)
and a cap on tasks (threads count: node starts about 7). The cgroup is joined before the first
exec and removed, with anything left in it killed, when the process is done.
"""

from __future__ import annotations

import os
import resource
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_GROUP = "hooks-gateway"  # the folder, under the gateway's own cgroup, of the per-process cgroups
CGROUP_KILL_ROUNDS = 50  # kill-and-look rounds before giving up on an emptying cgroup


@dataclass(frozen=True)
class Limits:
    address_space_mib: int = 2048  # RLIMIT_AS; node reserves ~0.7 GiB of address space at start
    cpu_seconds: int = 30  # RLIMIT_CPU over the process's life: SIGXCPU, then SIGKILL a second later
    open_files: int = 256  # RLIMIT_NOFILE
    file_size_mib: int = 1  # RLIMIT_FSIZE (the sandbox has no writable filesystem anyway)
    processes: int = 1024  # RLIMIT_NPROC: tasks (threads too) of the tenant's uid, all its hooks
    memory_mib: int | None = 256  # cgroup memory cap per process; None: no cgroup memory cap
    pids: int | None = 32  # cgroup tasks cap per process (threads too); None: no cgroup pids cap


def rlimits(limits: Limits) -> list[tuple[int, int]]:
    """(resource, value) pairs, soft = hard except CPU (SIGXCPU at soft, SIGKILL at hard)."""
    return [
        (resource.RLIMIT_AS, limits.address_space_mib * MIB),
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_FSIZE, limits.file_size_mib * MIB),
        (resource.RLIMIT_NPROC, limits.processes),
    ]


def rlimit_setter(limits: Limits) -> Callable[[], None]:
    pairs = rlimits(limits)

    def apply() -> None:
        for which, value in pairs:
            hard = value + 1 if which == resource.RLIMIT_CPU else value
            resource.setrlimit(which, (value, hard))

    return apply


@dataclass(frozen=True)
class CgroupHost:
    """Where per-process cgroups can be made: one folder per controller (v1), or one (v2)."""

    version: int
    memory: Path | None  # the parent folder for memory cgroups
    pids: Path | None  # the parent folder for pids cgroups (the same folder on v2)

    def create(self, limits: Limits) -> Cgroup:
        name = uuid.uuid4().hex
        folders: list[Path] = []
        try:
            if limits.memory_mib is not None and self.memory is not None:
                folder = self.memory / name
                folder.mkdir()
                folders.append(folder)
                value = limits.memory_mib * MIB
                if self.version == 1:
                    (folder / "memory.limit_in_bytes").write_text(str(value))
                    # No swap either, where swap accounting is on.
                    _write_if_present(folder / "memory.memsw.limit_in_bytes", str(value))
                else:
                    (folder / "memory.max").write_text(str(value))
                    _write_if_present(folder / "memory.swap.max", "0")
            if limits.pids is not None and self.pids is not None:
                folder = self.pids / name
                if folder not in folders:
                    folder.mkdir()
                    folders.append(folder)
                (folder / "pids.max").write_text(str(limits.pids))
        except OSError:
            Cgroup(folders).destroy()
            raise
        return Cgroup(folders)


def _write_if_present(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except FileNotFoundError:
        pass


class Cgroup:
    """One process's cgroup folders (one per controller on v1)."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders

    def joiner(self) -> tuple[Callable[[], None], list[int]]:
        """The child-side step that moves the child into the cgroup, and the descriptors it
        writes to (opened here, closed by the caller once the child has started)."""
        fds = [os.open(f / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for f in self.folders]

        def join() -> None:
            for fd in fds:
                os.write(fd, b"0")  # 0: the writing process

        return join, fds

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.folders:
            try:
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                pass
        return found

    def destroy(self) -> None:
        """Kill whatever is left in the cgroup, then remove it."""
        for folder in self.folders:
            if (folder / "cgroup.kill").exists():  # v2, Linux 5.14+
                (folder / "cgroup.kill").write_text("1")
        for _ in range(CGROUP_KILL_ROUNDS):
            left = self.pids()
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.sched_yield()
        for folder in self.folders:
            for _ in range(CGROUP_KILL_ROUNDS):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last tasks are being reaped
                    os.sched_yield()


def _own_cgroup_paths() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _parent_for(mount: Path, own: str | None) -> Path | None:
    """A writable parent folder for our cgroups: under our own cgroup where that folder is
    visible (the usual case), else under the mount's root (a cgroup namespace)."""
    candidates = [mount / own.lstrip("/")] if own else []
    candidates.append(mount)
    for base in candidates:
        if not base.is_dir():
            continue
        parent = base / CGROUP_GROUP
        try:
            parent.mkdir(exist_ok=True)
        except OSError:
            continue
        if os.access(parent, os.W_OK):
            return parent
    return None


def detect_cgroups(root: Path = CGROUP_ROOT) -> CgroupHost | None:
    """The cgroup folders this host lets us use for memory and pids, or None."""
    try:
        own = _own_cgroup_paths()
    except OSError:
        return None
    v1_memory, v1_pids = root / "memory", root / "pids"
    if (v1_memory / "cgroup.procs").exists() or (v1_pids / "cgroup.procs").exists():
        memory = _parent_for(v1_memory, own.get("memory")) if (v1_memory / "tasks").exists() else None
        pids = _parent_for(v1_pids, own.get("pids")) if (v1_pids / "tasks").exists() else None
        if memory is None and pids is None:
            return None
        return CgroupHost(version=1, memory=memory, pids=pids)
    if (root / "cgroup.controllers").exists():
        return _detect_v2(root, own.get(""))
    return None


def _detect_v2(root: Path, own: str | None) -> CgroupHost | None:
    parent = _parent_for(root, own)
    if parent is None:
        return None
    try:
        available = set((parent / "cgroup.controllers").read_text().split())
        wanted = available & {"memory", "pids"}
        if wanted:
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
    except OSError:  # controllers not delegated to us
        return None
    return CgroupHost(
        version=2,
        memory=parent if "memory" in wanted else None,
        pids=parent if "pids" in wanted else None,
    )
