"""What this host offers the sandbox, and what is missing, in words an operator can act on.

`probe()` checks each requirement on its own (so the message names the missing piece), then
starts a trivial script with every layer on, the only proof that the pieces work together.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from .limits import detect_cgroups
from .sandbox import SandboxConfig, prepare
from .seccomp import compile_bpf

NODE_MIN_MAJOR = 20  # --experimental-permission
PROBE_TIMEOUT_S = 15.0
USERNS_FILE = "/proc/sys/user/max_user_namespaces"
PROBE_SCRIPT = "process.stdout.write('sandbox ok')"


@dataclass(frozen=True)
class HostSupport:
    missing: tuple[str, ...] = ()  # each stops script hooks on this host
    notes: tuple[str, ...] = ()  # weaker than asked, but script hooks can run
    cgroups: bool = False

    @property
    def ready(self) -> bool:
        return not self.missing

    def report(self) -> str:
        lines = ["hosted hooks: " + ("available" if self.ready else "unavailable")]
        lines += [f"  missing: {m}" for m in self.missing]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class _Found:
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the configured node
        argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
    )


def _check_node(node: str, found: _Found) -> None:
    if not (os.path.isfile(node) and os.access(node, os.X_OK)):
        found.missing.append(f"node: no executable at {node} (Debian: apt-get install nodejs)")
        return
    version = _run([node, "--version"]).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match.group(1)) < NODE_MIN_MAJOR:
        found.missing.append(f"node: {version or 'unknown version'} at {node}; "
                             f"the permission flags need node {NODE_MIN_MAJOR} or later")


def _check_bwrap(bwrap: str, found: _Found) -> None:
    if shutil.which(bwrap) is None:
        found.missing.append(f"bubblewrap: no {bwrap} (Debian: apt-get install bubblewrap)")
        return
    try:
        limit = int(Path(USERNS_FILE).read_text())
    except (OSError, ValueError):
        limit = -1
    if limit == 0:
        found.missing.append(f"user namespaces: {USERNS_FILE} is 0 (bubblewrap needs them)")


def _check_seccomp(found: _Found) -> None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    if "Seccomp:" not in status:
        found.missing.append("seccomp: the kernel has no seccomp filters (CONFIG_SECCOMP_FILTER)")
        return
    try:
        compile_bpf()
    except (ImportError, RuntimeError, OSError) as exc:
        found.missing.append(f"seccomp: cannot compile the filter ({exc}); needs libseccomp2 "
                             "and the pyseccomp package")


def probe(config: SandboxConfig, *, probe_uid: int) -> HostSupport:
    """Check the host for `config` (its layers' needs), then start one sandboxed script as
    `probe_uid` (a uid of the configured range)."""
    found = _Found()
    layers = config.layers
    _check_node(config.node, found)
    if layers.namespaces:
        _check_bwrap(config.bwrap, found)
    if layers.uid and os.geteuid() != 0:
        found.missing.append("tenant uids: the gateway must run as root to start scripts as "
                             "per-tenant uids (it drops to them before bubblewrap)")
    if layers.seccomp:
        _check_seccomp(found)
    cgroups = detect_cgroups() if layers.limits else None
    if layers.limits and cgroups is None:
        found.notes.append("cgroups: no writable memory/pids cgroup (v1, or v2 with the controllers "
                           "delegated); only rlimits bound memory and processes")
    if not found.missing:
        _try_sandbox(replace(config, cgroups=cgroups), probe_uid, found)
    return HostSupport(missing=tuple(found.missing), notes=tuple(found.notes), cgroups=cgroups is not None)


def _try_sandbox(config: SandboxConfig, uid: int, found: _Found) -> None:
    base = Path(tempfile.mkdtemp(prefix="gateway-probe-"))
    try:
        runtime, hook = base / "runtime", base / "hook"
        for folder in (base, runtime, hook):
            folder.mkdir(exist_ok=True)
            folder.chmod(0o755)
        script = hook / "probe.js"
        script.write_text(PROBE_SCRIPT)
        script.chmod(0o644)
        launch = prepare(config, uid=uid if config.layers.uid else None,
                         runtime_dir=runtime, hook_dir=hook, entry=script)
        try:
            done = subprocess.run(  # noqa: S603 - the sandbox's own argv
                launch.argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                check=False, **launch.popen_kwargs(),
            )
        finally:
            launch.close()
        if done.returncode != 0 or done.stdout != "sandbox ok":
            detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1][:200]
            found.missing.append(f"sandbox: a trial script did not run with every layer on: {detail}")
    except (OSError, subprocess.SubprocessError) as exc:
        found.missing.append(f"sandbox: a trial script could not start: {exc}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
