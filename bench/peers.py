"""The receiver and the bare relay as pinned subprocesses, and the receiver's counters."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from .procs import Proc, free_port, spawn
from .results import Context


def start_receiver(ctx: Context, workdir: Path, *, rate: float = 0.0, burst: int = 100,
                   name: str = "receiver", hang_s: float = 0.0, mark: str = "") -> tuple[Proc, str]:
    """See bench/receiver.py for `rate`, `hang_s` (paths under /hang) and `mark`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [sys.executable, "-m", "bench.receiver", "--port", str(port)]
    if rate > 0:
        args += ["--rate", str(rate), "--burst", str(burst)]
    if hang_s > 0:
        args += ["--hang", str(hang_s)]
    if mark:
        args += ["--mark", mark]
    proc = spawn(name, args, core=ctx.pin.peer_core, log_dir=workdir)
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(f"{base}/stats")
    return proc, base


def start_relay(ctx: Context, workdir: Path, target: str, *, client: str = "aiohttp") -> tuple[Proc, str]:
    """The bare relay; `client="transport"` forwards with the gateway's own outbound client."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [sys.executable, "-m", "bench.relay", "--port", str(port), "--target", target, "--client", client]
    proc = spawn(f"relay-{client}", args, core=ctx.pin.server_core, log_dir=workdir)
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(f"{base}/healthz")
    return proc, base


def stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/stats", timeout=5.0) as resp:  # noqa: S310 - loopback
        data: dict[str, Any] = json.loads(resp.read())
    return data


def reset(base: str) -> None:
    req = urllib.request.Request(f"{base}/reset", method="POST", data=b"")  # noqa: S310 - loopback
    with urllib.request.urlopen(req, timeout=5.0):  # noqa: S310
        pass


def arrival(base: str, *indexes: int) -> list[float | None]:
    """Arrival times (unix seconds) of the receiver's N-th requests."""
    query = "&".join(f"i={i}" for i in indexes)
    with urllib.request.urlopen(f"{base}/times?{query}", timeout=5.0) as resp:  # noqa: S310 - loopback
        data = json.loads(resp.read())
    return [data[str(i)] for i in indexes]


def arrived_between(base: str, since: float, until: float) -> int:
    with urllib.request.urlopen(f"{base}/times?since={since!r}&until={until!r}", timeout=5.0) as resp:  # noqa: S310
        return int(json.loads(resp.read())["count"])


def marks(base: str) -> dict[int, float]:
    """First arrival (unix seconds) of each marked number (a receiver started with `mark`)."""
    with urllib.request.urlopen(f"{base}/marks", timeout=5.0) as resp:  # noqa: S310 - loopback
        data = json.loads(resp.read())
    return {int(k): float(v) for k, v in data.items()}
