"""One `npm install` of a hook's dependencies, sandboxed: the registry is its only way out.

npm runs as node (`node --require npm_bridge.js npm-cli.js install`) under every layer that
fits an install (docs/RUNTIME.md):

- layer 1: an unprivileged uid of the range, the installs' own (no tenant's), no capabilities,
  `no_new_privs`;
- layer 2: rlimits (a file larger than `[runtime] max_install_mib` ends it with SIGXFSZ) and a
  cgroup of its own (memory, pids) where the host has them; a wall timeout kills it;
- layer 3: bubblewrap with new user, pid, network, ipc, uts and cgroup namespaces: a read-only
  root holding node and its libraries, npm's folder at /npm, the bridge at /bridge; the project
  (package.json in, node_modules and the lockfile out) is a tmpfs at /install of
  `max_install_mib` (and a little more), HOME, npm's cache and TMPDIR another at /home: npm
  writes no host folder at all; no /etc, /proc, /dev;
- layer 4: the seccomp filter, with IPv4/IPv6 sockets allowed (the network namespace holds a
  loopback only): no process can be started, so neither an install script nor git;
- the network: the namespace's loopback and a Unix socket at /egress/proxy.sock, the gateway's
  egress proxy (gateway/runtime/egress_proxy.py) that CONNECTs to the registry's host and port
  and nothing else, after the egress guard's checks. npm is pointed at npm_bridge.js, an HTTP
  proxy on the loopback that carries every request through that socket.

npm itself is told to run no scripts and fetch nothing but registry packages (`--ignore-scripts`,
`--allow-git=none`, ...). A failure is an `InstallFailure` with a short reason: npm's error code
and the package it names, never a host path or npm's log.

The disk takes nothing until npm has succeeded within the bounds: the gateway holds the
sandbox's mount namespace (gateway/runtime/sandbox_files.py), bubblewrap waits on `--block-fd`
until it does, and once npm has ended the project's tmpfs is measured, then copied out by the
caller (`Installed.copy_into`) and released.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import GatewayError
from .limits import MIB, Cgroup, Limits, rlimit_setter
from .package_specs import is_package_name
from .sandbox import ENVIRONMENT, SandboxConfig, child_pidfd, node_files, read_sandbox_pid
from .sandbox import _pipe_with as pipe_with
from .sandbox_files import HeldNamespace, ReadBackError, copy_tree, used_bytes
from .seccomp import compile_bpf
from .users import privilege_drop, set_no_new_privs

BRIDGE = "npm_bridge.js"  # in the runtime folder
BRIDGE_PORT = 3128  # on the sandbox's own loopback: nothing else listens there
# Inside the sandbox: npm's folder, the bridge's, the project (the one host folder written), a
# tmpfs for HOME (npm's cache, TMPDIR), the egress proxy's socket's folder.
NPM_MOUNT, BRIDGE_MOUNT, PROJECT_MOUNT = "/npm", "/bridge", "/install"
HOME_MOUNT, EGRESS_MOUNT, CAFILE_MOUNT = "/home", "/egress", "/cafile.pem"
SCRATCH_TMP = f"{HOME_MOUNT}/scratch"  # TMPDIR, inside the HOME tmpfs
PROXY_SOCKET = "proxy.sock"
OUTPUT_MAX_BYTES = 64 * 1024  # npm's output kept (its last bytes) to tell why it failed
KILL_WAIT_S = 10.0  # after SIGKILL, how long to wait for the exit status
SCRATCH_MIB_MIN = 64  # the tmpfs of HOME, npm's cache (the tarballs) and TMPDIR: at least this,
SCRATCH_FACTOR = 2  # ... or this many times [runtime] max_install_mib
# The project's tmpfs: max_install_mib and this much more, so that npm running out of room there
# (ENOSPC, which its tar may only warn about) always leaves more than max_install_mib in use.
PROJECT_SLACK_MIB = 1
MEMORY_MIB = 1024  # the install's cgroup memory cap, its two tmpfs on top (tmpfs pages count)
ADDRESS_SPACE_MIB = 8192  # RLIMIT_AS: npm's node reserves far more address space than a hook's
OPEN_FILES = 1024  # npm extracts packages in parallel
PIDS = 64  # cgroup tasks (node's threads); no process can start anyway
CPU_PER_WALL = 4  # RLIMIT_CPU: this many times the wall timeout (threads add up; the wall timeout rules)
MAX_SOCKETS = 8  # npm's connections at once (--maxsockets); the proxy allows twice as many tunnels
# npm's flags: the lockfile, no scripts, no audit or fund calls, nothing but registry packages.
NPM_FLAGS = (
    "--ignore-scripts", "--no-audit", "--no-fund", "--no-update-notifier", "--omit=dev",
    "--package-lock=true", "--no-bin-links", "--allow-git=none", "--allow-remote=none",
    "--allow-file=none", "--allow-directory=none", "--loglevel=error", "--no-progress", "--color=false",
    "--fetch-retries=1", "--fetch-retry-mintimeout=1000", "--fetch-retry-maxtimeout=5000",
    f"--maxsockets={MAX_SOCKETS}",
)
_CODE = re.compile(r"npm error code ([A-Z][A-Z0-9_]{1,40})")
TLS_CODES = ("SELF_SIGNED_CERT_IN_CHAIN", "DEPTH_ZERO_SELF_SIGNED_CERT", "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
             "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "CERT_HAS_EXPIRED", "ERR_TLS_CERT_ALTNAME_INVALID")
_NOT_IN_REGISTRY = re.compile(
    r"'(@?[a-z0-9][a-z0-9._/-]{0,213})@[^']*' (?:is not in this registry|could not be found)")
_GET_404 = re.compile(r"404 Not Found - GET \S+?/(@?[a-z0-9][a-z0-9._%-]{0,213})(?:\s|$)")
_NO_MATCH = re.compile(r"No matching version found for (@?[a-z0-9][a-z0-9._/-]{0,213})@")


class InstallFailure(GatewayError):  # noqa: N818 - what the hook's 400 says
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class NpmSandbox:
    """What every install shares: the host's sandbox settings and npm's place."""

    config: SandboxConfig  # node, bwrap, which layers, the host's cgroups
    npm_dir: Path  # npm's package folder (holding bin/npm-cli.js)
    bridge: Path  # npm_bridge.js
    registry: str
    cafile: Path | None  # the CA certificates npm trusts for the registry; None: node's own
    timeout_s: float
    max_install_mib: int
    uid: int | None  # the installs' uid (None: the uid layer is off)

    def limits(self) -> Limits:
        scratch = self.scratch_mib()
        return replace(self.config.limits, address_space_mib=ADDRESS_SPACE_MIB,
                       cpu_seconds=CPU_PER_WALL * (int(self.timeout_s) + 1), open_files=OPEN_FILES,
                       file_size_mib=self.max_install_mib, pids=PIDS,
                       memory_mib=MEMORY_MIB + scratch + self.project_mib())

    def scratch_mib(self) -> int:
        return max(SCRATCH_MIB_MIN, SCRATCH_FACTOR * self.max_install_mib)

    def project_mib(self) -> int:
        return self.max_install_mib + PROJECT_SLACK_MIB


def npm_dir(npm: str) -> Path:
    """npm's package folder, from its command (/usr/bin/npm -> .../node_modules/npm/bin/npm-cli.js)."""
    cli = Path(os.path.realpath(npm))
    folder = cli.parent.parent
    if not (folder / "bin" / "npm-cli.js").is_file():
        raise InstallFailure("npm is not installed where [runtime] npm says (Debian: apt-get install npm)")
    return folder


def registry_authority(registry: str) -> tuple[str, int]:
    """The (host, port) the install may reach."""
    url = urlsplit(registry)
    host = url.hostname or ""
    return host, url.port or (443 if url.scheme == "https" else 80)


def argv(box: NpmSandbox, manifest_fd: int, egress: Path, seccomp_fd: int | None, info_fd: int,
         block_fd: int) -> list[str]:
    """bubblewrap's command line around `node --require bridge npm-cli.js install ...`; the
    project's package.json is copied from `manifest_fd`; nothing runs before `block_fd` is written."""
    config = box.config
    node = os.path.realpath(config.node)
    cmd = [config.bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
           "--unshare-cgroup-try", "--info-fd", str(info_fd), "--block-fd", str(block_fd)]
    if config.layers.uid or os.geteuid() != 0:
        cmd += ["--unshare-user", "--disable-userns"]
    cmd += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
    env = {**ENVIRONMENT, "HOME": HOME_MOUNT, "TMPDIR": SCRATCH_TMP, "PATH": "/nonexistent",
           "npm_config_cache": f"{HOME_MOUNT}/.npm", "npm_config_userconfig": f"{HOME_MOUNT}/.npmrc",
           "npm_config_globalconfig": f"{HOME_MOUNT}/npmrc", "npm_config_registry": box.registry,
           "npm_config_proxy": f"http://127.0.0.1:{BRIDGE_PORT}/",
           "npm_config_https_proxy": f"http://127.0.0.1:{BRIDGE_PORT}/", "npm_config_noproxy": "",
           "GATEWAY_EGRESS_SOCKET": f"{EGRESS_MOUNT}/{PROXY_SOCKET}", "GATEWAY_BRIDGE_PORT": str(BRIDGE_PORT)}
    if box.cafile is not None:
        env["npm_config_cafile"] = CAFILE_MOUNT
    for name, value in env.items():
        cmd += ["--setenv", name, value]
    for source, inside in node_files(config.node):
        cmd += ["--ro-bind", source, inside]
    cmd += ["--ro-bind", str(box.npm_dir), NPM_MOUNT, "--ro-bind", str(box.bridge),
            f"{BRIDGE_MOUNT}/{BRIDGE}", "--size", str(box.scratch_mib() * MIB), "--perms", "0700",
            "--tmpfs", HOME_MOUNT, "--perms", "0700", "--dir", SCRATCH_TMP,
            "--size", str(box.project_mib() * MIB), "--perms", "0700", "--tmpfs", PROJECT_MOUNT,
            "--perms", "0600", "--file", str(manifest_fd), f"{PROJECT_MOUNT}/package.json",
            "--ro-bind", str(egress), EGRESS_MOUNT]
    if box.cafile is not None:
        cmd += ["--ro-bind", str(box.cafile), CAFILE_MOUNT]
    cmd += ["--chdir", PROJECT_MOUNT, "--remount-ro", "/"]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    return [*cmd, "--", node, "--require", f"{BRIDGE_MOUNT}/{BRIDGE}", f"{NPM_MOUNT}/bin/npm-cli.js",
            "install", *NPM_FLAGS]


@dataclass
class Installed:
    """What npm left in the project's tmpfs, once it succeeded: held (in the ended sandbox's
    mount namespace) until `run`'s block ends."""

    folder_fd: int  # the project folder, /install inside
    used: int  # bytes in use in its tmpfs, at most max_install_mib (in MiB)
    capacity: int  # the tmpfs's size in bytes

    def copy_into(self, dest: Path, *, max_files: int) -> None:
        """Every entry copied into the empty host folder `dest` (blocking: run it in a thread);
        `InstallFailure` past `max_files` entries or for anything but folders, files and links."""
        try:
            copy_tree(self.folder_fd, dest, max_entries=max_files, max_bytes=self.capacity)
        except ReadBackError as exc:
            if str(exc) == "too many files":
                raise InstallFailure(f"the installed dependencies hold more than {max_files} files") from None
            raise InstallFailure(f"the installed dependencies cannot be kept: {exc}") from None
        except OSError as exc:
            raise InstallFailure(f"the installed dependencies could not be stored: "
                                 f"{exc.strerror or type(exc).__name__}") from None


@contextlib.asynccontextmanager
async def run(box: NpmSandbox, manifest: Path, egress: Path) -> AsyncIterator[Installed]:
    """`npm install` of the package.json `manifest` (copied into the sandbox's project tmpfs),
    through the egress proxy listening in the folder `egress`: `InstallFailure` unless it
    succeeded in time within `max_install_mib`; else what it installed, until the block ends."""
    if not box.config.layers.namespaces:
        raise InstallFailure("dependencies are installed only inside bubblewrap, which is off here")
    returncode, output, held = await _npm(box, manifest, egress)
    folder: int | None = None
    try:
        if held is not None:
            with contextlib.suppress(ReadBackError):
                folder = await held.open_folder(PROJECT_MOUNT)
        used = used_bytes(folder) if folder is not None else 0
        file_too_large = returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ)
        if used > box.max_install_mib * MIB and not file_too_large:  # npm ran out of room, or nearly
            raise InstallFailure(_too_large(used, box, whole=returncode == 0))
        if returncode != 0:
            raise InstallFailure(reason(returncode, output, box))
        if folder is None:
            raise InstallFailure("the installed dependencies could not be read back from its sandbox")
        yield Installed(folder, used, box.project_mib() * MIB)
    finally:
        if folder is not None:
            os.close(folder)
        if held is not None:
            held.close()  # the tmpfs goes with the namespace


def _too_large(used: int, box: NpmSandbox, *, whole: bool) -> str:
    if whole:
        return (f"the installed dependencies take {used / MIB:.1f} MiB, more than {box.max_install_mib} MiB "
                "([runtime] max_install_mib)")
    return f"the installed dependencies take more than {box.max_install_mib} MiB ([runtime] max_install_mib)"


async def _npm(box: NpmSandbox, manifest: Path,
               egress: Path) -> tuple[int | None, bytes, HeldNamespace | None]:
    """npm's exit status and output once it has ended, and its sandbox's mount namespace, held."""
    layers = box.config.layers
    steps: list[Callable[[], None]] = []
    parent_fds: list[int] = []
    cgroup: Cgroup | None = None
    limits = box.limits()
    info, their_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    block_w: int | None = None
    learning: asyncio.Future[_Sandbox] | None = None
    try:
        info_fd = their_end.detach()
        parent_fds.append(info_fd)
        block_r, block_w = os.pipe()
        parent_fds.append(block_r)
        manifest_fd = os.open(manifest, os.O_RDONLY | os.O_NOFOLLOW)
        parent_fds.append(manifest_fd)
        pass_fds = [info_fd, block_r, manifest_fd]
        if layers.limits:
            if box.config.cgroups is not None:
                cgroup = box.config.cgroups.create(limits)
                join, fds = cgroup.joiner()
                parent_fds += fds
                steps.append(join)
            steps.append(rlimit_setter(limits))
        if layers.uid and box.uid is not None:
            steps.append(privilege_drop(box.uid))
        elif layers.seccomp:
            steps.append(set_no_new_privs)
        seccomp_fd = None
        if layers.seccomp:
            seccomp_fd = pipe_with(compile_bpf(inet=True))
            parent_fds.append(seccomp_fd)
            pass_fds.append(seccomp_fd)
        cmd = argv(box, manifest_fd, egress, seccomp_fd, info_fd, block_r)

        def preexec() -> None:
            for step in steps:
                step()

        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=dict(ENVIRONMENT), pass_fds=pass_fds, preexec_fn=preexec, cwd="/", start_new_session=True,
        )
        for fd in parent_fds:
            os.close(fd)
        parent_fds.clear()
        learning = asyncio.ensure_future(_learn(info, proc.pid, block_w))
        output = await _wait(proc, learning, box.timeout_s)
        try:
            sandbox = await asyncio.wait_for(asyncio.shield(learning), KILL_WAIT_S)  # its report is in
        except (TimeoutError, OSError):
            learning.cancel()
            await asyncio.gather(learning, return_exceptions=True)
            sandbox = _Sandbox()
        sandbox.close_pidfd()
        return proc.returncode, output, sandbox.held
    except BaseException:
        if learning is not None:
            learning.cancel()
            with contextlib.suppress(BaseException):
                (await learning).close()
        raise
    finally:
        for fd in parent_fds:
            os.close(fd)
        if block_w is not None:
            os.close(block_w)
        info.close()
        if cgroup is not None:
            cgroup.destroy()  # whatever is left of the install goes with it


async def _wait(proc: asyncio.subprocess.Process, learning: asyncio.Future[_Sandbox],
                timeout_s: float) -> bytes:
    """npm's output once it has ended; killed (the whole sandbox) at the timeout or when cancelled."""
    tail = bytearray()

    async def read() -> None:
        stream = proc.stdout
        assert stream is not None  # noqa: S101 - a pipe was asked for
        while chunk := await stream.read(8192):
            tail.extend(chunk)
            del tail[:-OUTPUT_MAX_BYTES]

    reader = asyncio.ensure_future(read())
    try:
        async with asyncio.timeout(timeout_s):
            await proc.wait()
            await reader
    except BaseException as exc:
        await _kill(proc, learning)
        if isinstance(exc, TimeoutError):
            raise InstallFailure(f"the install did not finish within {timeout_s:g} s "
                                 "([runtime] install_timeout)") from None
        raise
    finally:
        reader.cancel()
    return bytes(tail)


@dataclass
class _Sandbox:
    """What the gateway learns of a started sandbox: its pid 1 (a pidfd) and its namespaces, held."""

    pidfd: int | None = None
    held: HeldNamespace | None = None

    def close_pidfd(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def close(self) -> None:
        self.close_pidfd()
        if self.held is not None:
            self.held.close()


async def _learn(info: socket.socket, parent: int, block_w: int) -> _Sandbox:
    """The sandbox's pid 1, from bubblewrap's --info-fd report, and its namespaces, taken before
    bubblewrap may go on (`--block-fd`: written here, closed by the caller)."""
    sandbox = _Sandbox()
    try:
        pid = await read_sandbox_pid(info)  # the whole report: bubblewrap waits for us now
        sandbox.pidfd = child_pidfd(pid, parent) if pid is not None else None
        if sandbox.pidfd is not None and pid is not None:
            with contextlib.suppress(OSError):
                held = HeldNamespace.of(pid)
                try:
                    signal.pidfd_send_signal(sandbox.pidfd, 0)  # still the sandbox: the namespace is its
                    sandbox.held = held
                except OSError:
                    held.close()
        return sandbox
    except BaseException:
        sandbox.close()
        raise
    finally:
        with contextlib.suppress(OSError):
            os.write(block_w, b"1")


async def _kill(proc: asyncio.subprocess.Process, learning: asyncio.Future[_Sandbox]) -> None:
    """SIGKILL the sandbox's pid 1 (all inside go with it) and bubblewrap; wait, bounded."""
    with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
        sandbox = await asyncio.wait_for(asyncio.shield(learning), KILL_WAIT_S)
        if sandbox.pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(sandbox.pidfd, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), KILL_WAIT_S)


def reason(returncode: int | None, output: bytes, box: NpmSandbox) -> str:
    """Why npm failed, in a line: its error code and the package it names (a package name only
    when it is one: the output is the registry's as much as npm's)."""
    text = output.decode("utf-8", "replace")
    if returncode is not None and returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        return (f"the install wrote a file (a package's or its download) larger than {box.max_install_mib} "
                "MiB ([runtime] max_install_mib)")
    if returncode is not None and returncode in (-signal.SIGKILL, 128 + signal.SIGKILL):
        return "the install was killed (its memory cap)"
    code = (m[1] if (m := _CODE.search(text)) else None)
    name = _named(text)
    if code == "E404":
        return f"package {name} is not in the registry" if name else "a package is not in the registry"
    if code == "ETARGET":
        return (f"no version of {name} in the registry matches the one asked for" if name
                else "no version in the registry matches the one asked for")
    if code in ("EALLOWREMOTE", "EALLOWGIT", "EALLOWFILE", "EALLOWDIRECTORY"):
        return ("a package depends on something outside the registry (a URL, git, a file or a folder), "
                f"which is never installed ({code})")
    if code in TLS_CODES:
        return f"the registry's TLS certificate is not trusted ({code}; see [runtime] npm_cafile)"
    if code == "ENOSPC":  # its project's tmpfs (max_install_mib), or its cache's
        return (f"the install ran out of room: the dependencies or their downloads take more than "
                f"{box.max_install_mib} MiB ([runtime] max_install_mib)")
    if code == "EINTEGRITY":
        return "a package downloaded from the registry failed its integrity check"
    if code in ("E403", "E502", "E504", "ECONNRESET", "ECONNREFUSED", "ETIMEDOUT", "EAI_AGAIN"):
        return (f"npm could not fetch from the registry ({code}; only the registry's host and port are "
                "reachable)")
    if code is not None:
        return f"npm install failed ({code})"
    return f"npm install failed (exit status {returncode})"


def _named(text: str) -> str | None:
    for pattern in (_NOT_IN_REGISTRY, _NO_MATCH, _GET_404):
        match = pattern.search(text)
        if match:
            name = match[1].replace("%2f", "/").replace("%2F", "/")
            if is_package_name(name):
                return repr(name)
    return None
