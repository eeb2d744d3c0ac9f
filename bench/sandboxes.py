"""The gateway's hosted hooks' sandboxes as seen from /proc: each is a tree of processes under
the gateway (bubblewrap, the sandbox's pid 1, node), found by walking children; their memory
(smaps_rollup) and their CPU time, sampled while they run.

Reading another uid's /proc files needs root, as running hosted hooks does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from .cpu import TICK_S


def children(pid: int) -> list[int]:
    """Direct children of `pid` (of all its threads)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def trees(pid: int) -> dict[int, list[int]]:
    """Each child of `pid` -> the pids of its tree (itself first); bounded in depth and size."""
    out: dict[int, list[int]] = {}
    for top in children(pid):
        found: list[int] = []
        todo = [top]
        while todo and len(found) < 64:
            p = todo.pop()
            found.append(p)
            todo += children(p)
        out[top] = found
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


@dataclass(frozen=True)
class Memory:
    """KiB, from /proc/<pid>/smaps_rollup, summed over a tree."""

    rss: int
    pss: int  # shared pages split among the processes sharing them: what one more hook costs
    private: int  # pages of these processes alone (USS)


def smaps(pid: int) -> Memory | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            values[name] = int(parts[0])
    return Memory(values.get("Rss", 0), values.get("Pss", 0),
                  values.get("Private_Clean", 0) + values.get("Private_Dirty", 0))


def tree_memory(pids: list[int]) -> Memory:
    found = [m for p in pids if (m := smaps(p)) is not None]
    return Memory(sum(m.rss for m in found), sum(m.pss for m in found), sum(m.private for m in found))


def node_of(tree: list[int]) -> int | None:
    """The node process of a sandbox's tree."""
    return next((p for p in tree if comm(p).startswith("node")), None)


def own_cpu_s(pid: int) -> float | None:
    """CPU seconds of the process itself (user + system, all threads), None once it is gone."""
    f = _stat(pid)
    return None if f is None else (int(f[11]) + int(f[12])) * TICK_S


class CpuSampler:
    """CPU seconds used by the processes under `pid` while it runs, sampled every `interval_s`
    in a thread: processes that end meanwhile (a recycled hook's) are counted up to their last
    sample. Their CPU cannot be read after the end: bubblewrap is killed with the sandbox, which
    the host's init then reaps, so it never reaches the gateway's cumulative children's time.

    `with CpuSampler(pid, exclude=...) as s: ...` then `s.total_s`; `exclude`: sandboxes (their
    bubblewrap pids) not to count."""

    def __init__(self, pid: int, interval_s: float = 0.02, exclude: frozenset[int] = frozenset()) -> None:
        self.pid = pid
        self.exclude = exclude
        self.interval_s = interval_s
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._tops: set[int] = set()  # the sandboxes (bubblewrap pids) seen
        self._tops_before: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _sample(self, first: bool) -> None:
        found = {top: tree for top, tree in trees(self.pid).items() if top not in self.exclude}
        self._tops.update(found)
        if first:
            self._tops_before = set(found)
        for tree in found.values():
            for p in tree:
                cpu = own_cpu_s(p)
                if cpu is None:
                    continue
                if p not in self._last:  # started before the sampler (first) or during it (from 0)
                    self._first[p] = cpu if first else 0.0
                self._last[p] = cpu

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample(False)

    def __enter__(self) -> CpuSampler:
        self._sample(True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._sample(False)

    @property
    def total_s(self) -> float:
        return sum(self._last[p] - self._first[p] for p in self._last)

    @property
    def started(self) -> int:
        """Sandboxes started while sampling (a recycled hook's successor is one)."""
        return len(self._tops - self._tops_before)
