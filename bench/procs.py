"""Child processes of the benchmark: start (pinned to a core), wait until they answer, stop.

Every wait is bounded; a child that will not stop is killed. Only processes started here are
ever signalled, each by its own pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PYTHON = sys.executable
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Pinning:
    """Which core each role runs on; `None` when pinning is off (no taskset, or one core)."""

    server_core: int | None  # gateway and bare relay: the process under test
    peer_core: int | None  # receiver, load generator, profiler, this orchestrator

    @classmethod
    def detect(cls, enabled: bool = True) -> Pinning:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if not enabled or shutil.which("taskset") is None or len(cores) < 2:
            return cls(None, None)
        return cls(cores[0], cores[1])

    @property
    def active(self) -> bool:
        return self.server_core is not None

    def describe(self) -> str:
        if not self.active:
            return ("no pinning (taskset missing, fewer than 2 cores, or --no-pin): "
                    "all processes share all cores")
        return (f"taskset: gateway / bare relay on core {self.server_core}; receiver, load generator, "
                f"profiler and orchestrator on core {self.peer_core}")

    def pin_self(self) -> None:
        if self.peer_core is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {self.peer_core})


ANY_CORE = -1  # a "core" that means all of them: the process floats (scenario 6's instances)


def all_cores() -> str:
    cores = sorted(os.sched_getaffinity(0) | {0}) if hasattr(os, "sched_getaffinity") else [0]
    return ",".join(str(c) for c in range(max(os.cpu_count() or 1, len(cores))))


def prefix(core: int | None) -> list[str]:
    """`taskset` before a child's command: one core, every core (`ANY_CORE`, for a child of an
    orchestrator pinned to one), or nothing."""
    if core is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", all_cores() if core == ANY_CORE else str(core)]





@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _closed: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status_kib(self, key: str) -> int | None:
        """A field of /proc/<pid>/status in KiB (VmHWM: peak RSS, VmRSS: current)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return None

    def wait_http(self, url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - loopback URL we built
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        if self._closed:
            return
        self._closed = True
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(timeout=5.0)


def spawn(name: str, args: list[str], *, core: int | None, log_dir: Path,
          drop_env_prefix: str | None = None, env_extra: dict[str, str] | None = None) -> Proc:
    env = {k: v for k, v in os.environ.items()
           if drop_env_prefix is None or not k.startswith(drop_env_prefix)}
    env.update(env_extra or {})
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    try:
        popen = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            [*prefix(core), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    finally:
        log.close()
    return Proc(name, popen, log_path)
