"""The launch of one sandboxed node process: every layer's part put together.

Layer 3 (bubblewrap): new user (when unprivileged), pid, network, ipc, uts and cgroup
namespaces; a root that is an empty, read-only tmpfs holding only the node binary and the
shared libraries it loads (found with ldd), the runtime folder at /runtime and the hook's folder
at /hook, all read-only; no /etc, /proc, /dev, /tmp, shell or other binary; a cleared
environment; `--die-with-parent`, `--new-session` (no terminal to push input into).
`--die-with-parent` takes hold inside only once bubblewrap has set the sandbox up, so bubblewrap
also reports the pid of the sandbox's pid 1 (`--info-fd`): killing that pid ends every process in
the sandbox at any moment, where killing bubblewrap alone during the set-up would leave the
sandbox running, an orphan (gateway/runtime/process.py).

Layer 5 (node): `--experimental-permission` with reads allowed in the two folders only; no
child processes, workers, native addons or writes.

Each layer can be switched off (`Layers`) so that a test can show what the others stop. The
launch is plain data (argv, env, descriptors to pass, a pre-exec step) for `subprocess.Popen`
or `asyncio.create_subprocess_exec` alike; the pre-exec step only makes syscalls on objects
made before the fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import SandboxError
from .limits import Cgroup, CgroupHost, Limits, rlimit_setter
from .seccomp import Installer, compile_bpf
from .users import privilege_drop, set_no_new_privs

RUNTIME_MOUNT = "/runtime"  # where the runtime folder (runner script, compilers) appears inside
HOOK_MOUNT = "/hook"  # where the hook's folder (script, dependencies) appears inside
MODULES_MOUNT = "/hook/node_modules"  # the hook's installed dependencies (gateway/runtime/dependencies.py)
# The whole environment of a sandboxed process (bubblewrap's --clearenv, then these).
ENVIRONMENT: dict[str, str] = {"NODE_ENV": "production", "TZ": "UTC", "LANG": "C.UTF-8"}
LDD_TIMEOUT_S = 10.0
SIGNAL_EXIT_BASE = 128  # bubblewrap exits 128 + N when its child was killed by signal N
PIPE_CAPACITY_BYTES = 65536  # Linux's default pipe buffer: the BPF program is written before bwrap reads
INFO_MAX_BYTES = 4096  # bubblewrap's --info-fd report ({"child-pid": N}) is far smaller


@dataclass(frozen=True)
class Layers:
    """Which layers are on: all of them outside tests."""

    uid: bool = True  # a tenant uid/gid, no capabilities, no_new_privs
    limits: bool = True  # rlimits, cgroup memory and pids
    namespaces: bool = True  # bubblewrap
    seccomp: bool = True
    node_permissions: bool = True


@dataclass(frozen=True)
class SandboxConfig:
    node: str = "/usr/bin/node"
    bwrap: str = "/usr/bin/bwrap"
    limits: Limits = field(default_factory=Limits)
    layers: Layers = field(default_factory=Layers)
    cgroups: CgroupHost | None = None  # limits.detect_cgroups(); None: rlimits only


@functools.cache
def node_files(node: str) -> tuple[tuple[str, str], ...]:
    """(host path, path inside) of the node binary and every shared library it loads."""
    real = os.path.realpath(node)
    out = subprocess.run(  # noqa: S603 - the configured node binary
        ["ldd", real],  # noqa: S607 - the system's ldd, found on PATH like glibc's tools
        capture_output=True, text=True, timeout=LDD_TIMEOUT_S, check=False, env={"LC_ALL": "C"},
    )
    if out.returncode != 0:
        raise SandboxError(f"ldd {real} failed: {out.stderr.strip()[:200]}")
    files = [(real, real)]
    for line in out.stdout.splitlines():
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"
        words = line.split()
        path = words[2] if len(words) >= 3 and words[1] == "=>" else words[0] if words else ""
        if path.startswith("/"):
            files.append((os.path.realpath(path), path))
    return tuple(files)


@dataclass
class Launch:
    """What to start and how. Call `started()` once the process runs, `close()` once it ended."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...]
    preexec_fn: Callable[[], None]
    cwd: str
    cgroup: Cgroup | None = None
    # Where bubblewrap reports the pid of the sandbox's pid 1 (`sandbox_pid`); None without bubblewrap.
    info: socket.socket | None = None
    _parent_fds: list[int] = field(default_factory=list)

    def popen_kwargs(self) -> dict[str, Any]:
        return {"env": self.env, "pass_fds": self.pass_fds, "preexec_fn": self.preexec_fn,
                "cwd": self.cwd, "start_new_session": True}

    def started(self) -> None:
        """Close the parent's copies of what only the child needed."""
        while self._parent_fds:
            os.close(self._parent_fds.pop())

    def close(self) -> None:
        """Kill anything left in the process's cgroup and remove it."""
        self.started()
        if self.info is not None:
            self.info.close()
            self.info = None
        if self.cgroup is not None:
            self.cgroup.destroy()
            self.cgroup = None


def _inside(path: Path, runtime_dir: Path, hook_dir: Path, namespaces: bool) -> str:
    for folder, mount in ((runtime_dir, RUNTIME_MOUNT), (hook_dir, HOOK_MOUNT)):
        if path.is_relative_to(folder):
            return str(Path(mount) / path.relative_to(folder)) if namespaces else str(path)
    raise SandboxError("the entry script must be in the runtime or the hook folder")


def node_argv(config: SandboxConfig, read_dirs: Sequence[str], entry: str, args: Sequence[str]) -> list[str]:
    argv = [os.path.realpath(config.node)]
    if config.layers.limits:
        # RLIMIT_AS leaves no room for the guard regions (~10 GiB each) of V8's trap-handler bounds
        # checks, so WebAssembly (undici's HTTP parser: fetch) needs inline checks (node 20.15+).
        argv.append("--disable-wasm-trap-handler")
    if config.layers.node_permissions:
        argv += ["--experimental-permission", "--disable-warning=ExperimentalWarning"]
        argv += [f"--allow-fs-read={d}" for d in read_dirs]  # node 20: one folder per flag
    return [*argv, entry, *args]


def bwrap_argv(config: SandboxConfig, runtime_dir: Path, hook_dir: Path, seccomp_fd: int | None,
               info_fd: int | None = None, node_modules: Path | None = None) -> list[str]:
    argv = [config.bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try"]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    if config.layers.uid or os.geteuid() != 0:
        # Unprivileged bubblewrap works in a user namespace; nothing inside may make another.
        argv += ["--unshare-user", "--disable-userns"]
    argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
    for name, value in ENVIRONMENT.items():
        argv += ["--setenv", name, value]
    for source, inside in node_files(config.node):
        argv += ["--ro-bind", source, inside]
    argv += ["--ro-bind", str(runtime_dir), RUNTIME_MOUNT, "--ro-bind", str(hook_dir), HOOK_MOUNT]
    if node_modules is not None:  # onto the hook folder's empty node_modules (a mount point)
        argv += ["--ro-bind", str(node_modules), MODULES_MOUNT]
    argv += ["--chdir", HOOK_MOUNT, "--remount-ro", "/"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return [*argv, "--"]


def prepare(
    config: SandboxConfig,
    *,
    uid: int | None,
    runtime_dir: Path,
    hook_dir: Path,
    entry: Path,
    args: Sequence[str] = (),
    node_modules: Path | None = None,
) -> Launch:
    """The launch of `node entry args...` for one hook, as tenant `uid`, inside every layer
    that `config.layers` has on. `node_modules`: the hook's installed dependencies, bound
    read-only at /hook/node_modules (without bubblewrap, the hook folder links to them)."""
    layers = config.layers
    if layers.uid and uid is None:
        raise SandboxError("the uid layer needs a tenant uid")
    runtime_dir, hook_dir = runtime_dir.resolve(), hook_dir.resolve()
    inside = [RUNTIME_MOUNT, HOOK_MOUNT] if layers.namespaces else [str(runtime_dir), str(hook_dir)]
    if node_modules is not None and not layers.namespaces:
        inside.append(str(node_modules.resolve()))
    script = _inside(entry.resolve(), runtime_dir, hook_dir, layers.namespaces)
    steps: list[Callable[[], None]] = []
    parent_fds: list[int] = []
    pass_fds: tuple[int, ...] = ()
    cgroup: Cgroup | None = None
    info: socket.socket | None = None
    try:
        if layers.limits:
            if config.cgroups is not None:
                cgroup = config.cgroups.create(config.limits)
                join, fds = cgroup.joiner()
                parent_fds += fds
                steps.append(join)
            steps.append(rlimit_setter(config.limits))
        if layers.uid and uid is not None:
            steps.append(privilege_drop(uid))
        elif layers.seccomp:
            steps.append(set_no_new_privs)
        argv = node_argv(config, inside, script, args)
        if layers.namespaces:
            seccomp_fd = None
            if layers.seccomp:
                seccomp_fd = _pipe_with(compile_bpf())
                parent_fds.append(seccomp_fd)
                pass_fds = (seccomp_fd,)
            info, their_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            info_fd = their_end.detach()
            parent_fds.append(info_fd)
            pass_fds = (*pass_fds, info_fd)
            argv = bwrap_argv(config, runtime_dir, hook_dir, seccomp_fd, info_fd, node_modules) + argv
        elif layers.seccomp:
            steps.append(Installer(compile_bpf()))
    except BaseException:
        for fd in parent_fds:
            os.close(fd)
        if info is not None:
            info.close()
        if cgroup is not None:
            cgroup.destroy()
        raise

    def preexec() -> None:
        for step in steps:
            step()

    return Launch(argv=argv, env=dict(ENVIRONMENT), pass_fds=pass_fds, preexec_fn=preexec,
                  cwd=str(hook_dir), cgroup=cgroup, info=info, _parent_fds=parent_fds)


def sandbox_pid(info: bytes) -> int | None:
    """The pid (in the gateway's pid namespace) of the sandbox's pid 1, from what bubblewrap wrote
    to `--info-fd`: `{"child-pid": N}`; None when it wrote nothing usable (it failed before)."""
    try:
        pid = json.loads(info).get("child-pid")
    except (ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 1 else None


async def read_sandbox_pid(info: socket.socket) -> int | None:
    """Read bubblewrap's `--info-fd` report (bounded, until its end: bubblewrap closes the socket
    after it, or, with `--block-fd`, waits for the caller) and return `sandbox_pid` of it."""
    info.setblocking(False)
    loop = asyncio.get_running_loop()
    data = b""
    with contextlib.suppress(OSError):
        while len(data) < INFO_MAX_BYTES and (chunk := await loop.sock_recv(info, INFO_MAX_BYTES)):
            data += chunk
            if data.rstrip().endswith(b"}"):  # the whole report
                break
    return sandbox_pid(data)


def child_pidfd(pid: int, parent: int) -> int | None:
    """A pidfd of `pid` while it is still `parent`'s child (so not a reused number); None when it
    has ended."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])  # "pid (comm) state ppid ..."
    except (OSError, ValueError, IndexError):
        ppid = None
    if ppid != parent:
        os.close(fd)
        return None
    return fd


def ended_by(returncode: int) -> int | None:
    """The signal that ended a sandboxed node, from its launch's exit status: negative when
    node was started directly, 128 + the signal when bubblewrap reports its child's end."""
    if returncode < 0:
        return -returncode
    if returncode > SIGNAL_EXIT_BASE:
        return returncode - SIGNAL_EXIT_BASE
    return None


def _pipe_with(data: bytes) -> int:
    """A pipe's read end holding `data` (bubblewrap reads its seccomp program from a descriptor)."""
    if len(data) >= PIPE_CAPACITY_BYTES:
        raise SandboxError("seccomp program too large for a pipe")
    read, write = os.pipe()
    try:
        os.write(write, data)
    finally:
        os.close(write)
    return read
