"""CPU time from /proc: per core (how busy, whoever used it) and per process (ours).

CPU seconds per request are immune to the machine being shared, where a rate is not: another
process on the gateway's core lowers the rate but not the cost of one request.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _cores() -> dict[str, tuple[int, int]]:
    """core -> (busy ticks, all ticks)."""
    out = {}
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *fields = line.split()
                values = [int(v) for v in fields]
                idle = values[3] + (values[4] if len(values) > 4 else 0)
                out[name] = (sum(values) - idle, sum(values))
    except OSError:
        pass
    return out


def process_s(pid: int) -> float:
    """CPU seconds (user + system) of a process, all its threads."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


@dataclass
class Usage:
    wall_s: float
    process_s: dict[int, float]  # pid -> CPU seconds in the interval
    core_busy: dict[str, float]  # "cpu0" -> fraction busy in the interval

    def share(self, pid: int) -> float:
        """The process's CPU as a fraction of one core."""
        return self.process_s.get(pid, 0.0) / self.wall_s if self.wall_s > 0 else 0.0


class Meter:
    """`with Meter([pid]) as m: ...` then `m.usage`."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.usage = Usage(0.0, {}, {})

    def __enter__(self) -> Meter:
        self._t0 = time.monotonic()
        self._p0 = {p: process_s(p) for p in self.pids}
        self._c0 = _cores()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._t0
        c1 = _cores()
        busy = {}
        for name, (b1, a1) in c1.items():
            b0, a0 = self._c0.get(name, (0, 0))
            busy[name] = (b1 - b0) / (a1 - a0) if a1 > a0 else 0.0
        self.usage = Usage(wall, {p: process_s(p) - self._p0[p] for p in self.pids}, busy)
