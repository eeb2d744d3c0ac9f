"""The load generator: one `ClientSession`, N concurrent tasks, bounded in count and time.

`python -m bench.loadgen --url U [--url U2]... --body-file F [--header "Name: value"]... --concurrency 64
--duration 10 --warmup 1 --max-requests 100000` prints one JSON object: requests, statuses,
errors, elapsed, rate and latency percentiles of the measured phase (the warm-up is not
counted), and `total` (every completed request, warm-up included). With several `--url`, the
connections are shared out between them (connection i sends to URL i mod n), as a balancer in
front of several instances would: one load generator, whatever the number of instances.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from . import procs

REQUEST_TIMEOUT_S = 30.0


@dataclass
class Phase:
    latencies: list[float]
    starts: list[float]  # wall-clock start of each request in `latencies`, same order
    statuses: dict[int, int]
    errors: int
    elapsed: float


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


async def _phase(session: aiohttp.ClientSession, urls: list[str], body: bytes, headers: dict[str, str],
                 concurrency: int, duration_s: float, max_requests: int) -> Phase:
    latencies: list[float] = []
    starts: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    issued = 0
    start = time.perf_counter()
    end = start + duration_s
    last_done = start

    async def worker(url: str) -> None:
        nonlocal issued, errors, last_done
        while issued < max_requests and time.perf_counter() < end:
            issued += 1
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
            except (aiohttp.ClientError, TimeoutError, OSError):
                errors += 1
                continue
            t1 = time.perf_counter()
            latencies.append(t1 - t0)
            starts.append(time.time() - (t1 - t0))
            last_done = t1

    await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(concurrency)))
    return Phase(latencies, starts, statuses, errors, max(1e-9, last_done - start))


async def run(args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        total = 0
        if args.warmup > 0:
            warm = await _phase(session, args.url, body, headers, args.concurrency, args.warmup,
                                args.max_requests)
            total += len(warm.latencies)
        ready = Path(args.ready_file) if args.ready_file else None
        if ready is not None:
            ready.write_text(str(time.time()))
        phase = await _phase(session, args.url, body, headers, args.concurrency, args.duration,
                             args.max_requests)
        total += len(phase.latencies)
    if args.timeline:
        pairs = list(zip(phase.starts, phase.latencies, strict=True))
        Path(args.timeline).write_text(json.dumps(pairs))  # noqa: ASYNC240 - the load is over
    lat = sorted(phase.latencies)
    ok = sum(n for s, n in phase.statuses.items() if s == args.expect)
    return {
        "requests": len(lat),
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(phase.statuses.items())},
        "errors": phase.errors,
        "elapsed_s": phase.elapsed,
        "rate": ok / phase.elapsed,
        "p50_ms": percentile(lat, 0.50) * 1000,
        "p90_ms": percentile(lat, 0.90) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "max_ms": (lat[-1] * 1000) if lat else float("nan"),
        "total": total,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, action="append")
    p.add_argument("--body-file", required=True)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--max-requests", type=int, default=1_000_000)
    p.add_argument("--expect", type=int, default=200, help="the status that counts as success")
    p.add_argument("--ready-file", help="written when the measured phase starts")
    p.add_argument("--timeline", help="write [start (unix s), latency (s)] of every measured request here")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    print(json.dumps(asyncio.run(run(args, Path(args.body_file).read_bytes()))))


# -- used by the orchestrator ------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    url: str
    body_file: Path
    headers: tuple[str, ...] = ()
    concurrency: int = 64
    duration_s: float = 10.0
    warmup_s: float = 1.0
    max_requests: int = 1_000_000
    expect: int = 200
    timeline: Path | None = None  # every measured request's start and latency, written here
    also: tuple[str, ...] = ()  # more URLs (instances) the connections are shared out with

    def argv(self, ready_file: Path | None = None) -> list[str]:
        out = [sys.executable, "-m", "bench.loadgen", "--url", self.url, "--body-file", str(self.body_file),
               *(arg for url in self.also for arg in ("--url", url)),
               "--concurrency", str(self.concurrency), "--duration", str(self.duration_s),
               "--warmup", str(self.warmup_s), "--max-requests", str(self.max_requests),
               "--expect", str(self.expect)]
        for h in self.headers:
            out += ["--header", h]
        if ready_file is not None:
            out += ["--ready-file", str(ready_file)]
        if self.timeline is not None:
            out += ["--timeline", str(self.timeline)]
        return out

    def bound_s(self) -> float:
        return self.warmup_s + self.duration_s + 2 * REQUEST_TIMEOUT_S + 15.0


prefix = procs.prefix


def timeline(path: Path) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in json.loads(path.read_text())]


def run_load(load: Load, core: int | None) -> dict[str, Any]:
    """Run the load generator in its own process (bounded) and return its figures."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [*prefix(core), *load.argv()], capture_output=True, timeout=load.bound_s(), check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def start_load(load: Load, core: int | None, ready_file: Path) -> subprocess.Popen[bytes]:
    """The load generator in the background; `ready_file` appears when measuring starts."""
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [*prefix(core), *load.argv(ready_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def finish_load(proc: subprocess.Popen[bytes], load: Load) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=load.bound_s())
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=5)
        raise RuntimeError("load generator did not finish in time") from None
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {err.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    return result


if __name__ == "__main__":
    main()
