"""Sampling the gateway with py-spy while a load runs, and the top functions of what it saw.

py-spy's raw output is one collapsed stack a line (`f1 (file);f2 (file) <count>`); from it we
count each function's own samples (it was the leaf) and its inclusive samples (it was on the
stack), and the share of leaf samples by package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_RATE_HZ = 250
TOP = 12


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


@dataclass
class Summary:
    label: str
    samples: int
    own: list[tuple[str, float]] = field(default_factory=list)  # (function, share of samples)
    inclusive: list[tuple[str, float]] = field(default_factory=list)  # gateway/ functions only
    packages: list[tuple[str, float]] = field(default_factory=list)
    threads: list[tuple[str, float]] = field(default_factory=list)  # from the all-threads recording
    db_own: list[tuple[str, float]] = field(default_factory=list)  # own time in the database threads
    error: str | None = None


def _package(frame: str) -> str:
    path = frame[frame.rfind("(") + 1:].rstrip(")")
    if "gateway/" in path and "site-packages" not in path:
        parts = path[path.rfind("gateway/"):].split("/")
        return "/".join(parts[:2]) if len(parts) > 2 else parts[0] + "/" + parts[1].removesuffix(".py")
    for name in ("aiohttp", "multidict", "yarl", "jwt", "cryptography", "tenacity", "uvloop", "sqlite3",
                 "asyncio", "json", "concurrent", "threading", "logging", "urllib"):
        if f"{name}/" in path or path.startswith(name) or f"/{name}." in path:
            return name
    return path.rsplit("/", 1)[-1] or "?"


def _short(frame: str) -> str:
    name, _, path = frame.partition(" (")
    path = path.rstrip(")")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    else:
        path = re.sub(r"^.*/python3\.\d+/", "", path)
    if "gateway/" in path:
        path = path[path.rfind("gateway/"):]
    return f"{name} ({path})"


DB_THREAD_MARK = "_worker (concurrent/futures/thread.py)"  # the executor threads run the database connections


def _stacks(raw: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            frames = [_short(f) for f in stack.split(";") if f]
            if frames:
                out.append((frames, int(n)))
    return out


def add_threads(summary: Summary, raw: Path) -> None:
    """Split the all-threads recording into the event loop and the database threads."""
    stacks = _stacks(raw)
    total = sum(n for _, n in stacks)
    if not total:
        return
    db = [(frames, n) for frames, n in stacks if any(f == DB_THREAD_MARK for f in frames)]
    db_total = sum(n for _, n in db)
    summary.threads = [("event loop thread", (total - db_total) / total),
                       ("database threads", db_total / total)]
    own: Counter[str] = Counter()
    for frames, n in db:
        own[frames[-1]] += n
    summary.db_own = [(f, n / total) for f, n in own.most_common(6)]


def summarize(raw: Path, label: str) -> Summary:
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    pkgs: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        own[_short(leaf)] += count
        pkgs[_package(leaf)] += count
        for f in {_short(f) for f in frames}:
            if "(gateway/" in f and "(gateway/cli.py)" not in f:
                incl[f] += count
    if total == 0:
        return Summary(label, 0, error="no samples")
    return Summary(
        label,
        total,
        own=[(f, n / total) for f, n in own.most_common(TOP)],
        inclusive=[(f, n / total) for f, n in incl.most_common(TOP)],
        packages=[(p, n / total) for p, n in pkgs.most_common(TOP)],
    )


class Recording:
    """`py-spy record` on one pid for a bounded time, pinned like the other peers."""

    def __init__(self, pid: int, duration_s: float, out: Path, core: int | None, *, gil: bool) -> None:
        exe = py_spy()
        assert exe is not None
        self.out = out
        self.duration_s = duration_s
        args = [exe, "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE_HZ), "--duration",
                str(max(1, int(duration_s))), "--format", "raw", "--nolineno", "--nonblocking",
                "--output", str(out), *(["--gil"] if gil else [])]
        prefix = ["taskset", "-c", str(core)] if core is not None else []
        self.proc = subprocess.Popen(  # noqa: S603 - py-spy on our own child
            [*prefix, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def finish(self, label: str) -> Summary:
        try:
            out, _ = self.proc.communicate(timeout=self.duration_s + 30.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=5)
            return Summary(label, 0, error="py-spy did not finish in time")
        if self.proc.returncode != 0 or not self.out.exists():
            return Summary(label, 0, error=f"py-spy failed: {out.decode(errors='replace')[-500:]}")
        return summarize(self.out, label)


def profile_load(pid: int, load: object, core: int | None, out: Path, label: str,
                 ready_timeout_s: float = 30.0) -> tuple[Summary, dict[str, object]]:
    """Run `load` (a bench.loadgen.Load) and sample `pid` during its measured phase."""
    import time

    from .loadgen import Load, finish_load, start_load

    assert isinstance(load, Load)
    ready = out.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    proc = start_load(load, core, ready)
    deadline = time.monotonic() + ready_timeout_s
    while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    # Two recordings at once: only the thread holding the GIL (where Python time goes, without the
    # samples of a thread that merely waits for the GIL), and every busy thread (the database
    # threads run SQLite without the GIL).
    duration = max(1.0, load.duration_s - 1.0)
    gil = Recording(pid, duration, out, core, gil=True)
    every = Recording(pid, duration, out.with_suffix(".all.txt"), core, gil=False)
    summary = gil.finish(label)
    threads = every.finish(label)
    if not threads.error:
        add_threads(summary, every.out)
    return summary, finish_load(proc, load)
