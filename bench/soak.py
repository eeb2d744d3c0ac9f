"""Soak: one gateway under a steady, bounded load for a long while, watched for growth.

`python -m bench.soak [--minutes 10] [--backend sqlite|postgres] [--out FILE]` (`make soak`).

A gateway process (bench/gateway.py) on a SQLite file, or on a database of a throwaway
PostgreSQL server (bench/pg.py), with three hooks: an asynchronous one towards a receiver in
this process that mixes good answers, `429`s with `Retry-After`, `500`s, slow answers (some past
the hook's timeout) and connection resets; an asynchronous one towards bench/receiver.py
rate-limiting with a token bucket (`429` + `Retry-After` + `X-RateLimit-*`); and a blocking
`credentials-exchange` one towards the mixed receiver (mostly good, some slow, some `500`).

Ingest and blocking calls are sent at steady rates, each with a cap on requests in flight (a
tick that finds the cap full is skipped and counted), until the time is up or `--max-events`
events were sent. Every `--interval` seconds a line is printed and kept: the gateway's RSS
(VmRSS), its open files (/proc/<pid>/fd), the backlog (pending deliveries, read from the
database) and the rates of the interval. At the end a summary (start, end and maximum of RSS,
open files and backlog; totals) is printed, and written with the samples to `--out`.

Only loopback is used; every wait is bounded; only processes started here are stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import socket
import struct
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from . import bodies, peers
from .gateway import Gateway
from .loadgen import percentile
from .pg import Server
from .procs import Pinning, Proc, free_port
from .results import Context

TENANT = "bench"
INGEST = "post-user-registration"
BLOCKING = "credentials-exchange"
MIXED_TIMEOUT_MS = 2000  # the mixed hook's timeoutMs: the slowest answers run past it
MIXED_CONCURRENCY = 50  # the mixed hook's maxConcurrency: room for its slow answers at the default rate
# The mixed receiver's asynchronous answers: kind -> share.
ASYNC_MIX = {"ok": 0.70, "429": 0.05, "500": 0.10, "slow": 0.08, "reset": 0.07}
BLOCKING_MIX = {"ok": 0.90, "slow": 0.05, "500": 0.05}
SLOW_S = (0.2, 3.0)  # asynchronous slow answers; blocking ones wait at most 1 s
MAX_IN_FLIGHT = 64  # per stream (ingest, blocking)
REQUEST_TIMEOUT_S = 30.0
DELIVERY_EXTRA = """
[delivery]
retry_schedule = ["1s", "3s", "10s", "30s"]
poll_interval = "200ms"
"""
ENVELOPE = {"status": "success", "data": {}}
CLAIMS = {"status": "success", "data": {"scope": ["read", "write"]}}


# -- the mixed receiver -------------------------------------------------------------------------


@dataclass
class Mixed:
    """Counts of what the mixed receiver answered, per path and kind."""

    counts: Counter[str] = field(default_factory=Counter)
    rng: random.Random = field(default_factory=lambda: random.Random(7))  # noqa: S311 - not security

    def pick(self, mix: dict[str, float]) -> str:
        return self.rng.choices(list(mix), weights=list(mix.values()))[0]

    def app(self) -> web.Application:
        async def hook(request: web.Request) -> web.StreamResponse:
            await request.read()
            blocking = request.path.startswith("/blocking")
            kind = self.pick(BLOCKING_MIX if blocking else ASYNC_MIX)
            self.counts[f"{'blocking' if blocking else 'async'} {kind}"] += 1
            if kind == "429":
                return web.json_response({"error": "slow down"}, status=429,
                                         headers={"Retry-After": str(self.rng.randint(1, 3))})
            if kind == "500":
                return web.json_response({"error": "boom"}, status=500)
            if kind == "reset":
                _reset(request)
                return web.Response()  # never sent: the connection is gone
            if kind == "slow":
                await asyncio.sleep(self.rng.uniform(*(SLOW_S if not blocking else (0.2, 1.0))))
            return web.json_response(CLAIMS if blocking else ENVELOPE)

        app = web.Application()
        app.router.add_post("/{tail:.*}", hook)
        return app


def _reset(request: web.Request) -> None:
    """Close the connection with a RST (SO_LINGER 0), the answer unsent."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# -- load -------------------------------------------------------------------------------------


@dataclass
class Stream:
    """One steady stream of requests: counts, and latencies of the current interval."""

    name: str
    statuses: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    skipped: int = 0  # ticks that found MAX_IN_FLIGHT requests in flight
    latencies: list[float] = field(default_factory=list)
    in_flight: int = 0

    def ok(self, status: int) -> int:
        return self.statuses.get(str(status), 0)


async def steady(http: aiohttp.ClientSession, stream: Stream, url: str, body: bytes, headers: dict[str, str],
                 rate: float, until: float, limit: int) -> None:
    """`rate` requests a second until `until` (monotonic) or `limit` requests sent."""
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        stream.in_flight += 1
        t0 = time.monotonic()
        try:
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                stream.statuses[str(resp.status)] += 1
                stream.latencies.append(time.monotonic() - t0)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            stream.statuses[type(exc).__name__] += 1
        finally:
            stream.in_flight -= 1

    due = time.monotonic()
    while stream.sent < limit and due < until:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        due += 1.0 / rate
        if stream.in_flight >= MAX_IN_FLIGHT:
            stream.skipped += 1
            continue
        stream.sent += 1
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 5)


# -- samples ----------------------------------------------------------------------------------


@dataclass
class Sample:
    at_s: float
    rss_mib: float
    fds: int
    backlog: int
    ingest_per_s: float
    blocking_per_s: float
    received_per_s: float
    blocking_p99_ms: float

    def line(self) -> str:
        return (f"{self.at_s:7.0f} s  rss {self.rss_mib:7.1f} MiB  fds {self.fds:4d}"
                f"  backlog {self.backlog:6d}"
                f"  ingest {self.ingest_per_s:6.1f}/s  blocking {self.blocking_per_s:5.1f}/s"
                f" (p99 {self.blocking_p99_ms:6.0f} ms)  received {self.received_per_s:6.1f}/s")


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


@dataclass
class Watch:
    proc: Proc
    gateway: Gateway
    ingest: Stream
    blocking: Stream
    mixed: Mixed
    limited_base: str
    started: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    _last: tuple[float, int, int, int] | None = None  # (when, ingested, blocked, received)

    def received(self) -> int:
        limited = peers.stats(self.limited_base)
        mixed = sum(n for k, n in self.mixed.counts.items() if k.startswith("async"))
        return mixed + int(limited["requests"])

    async def sample(self) -> Sample:
        now = time.monotonic()
        received = await asyncio.to_thread(self.received)
        backlog = await asyncio.to_thread(self.gateway.count, "pending")
        ingested, blocked = self.ingest.ok(202), self.blocking.ok(200)
        t0, i0, b0, r0 = self._last or (self.started, 0, 0, 0)
        dt = max(1e-9, now - t0)
        lat = sorted(self.blocking.latencies)
        self.blocking.latencies.clear()
        s = Sample(now - self.started, (self.proc.status_kib("VmRSS") or 0) / 1024, open_files(self.proc.pid),
                   backlog, (ingested - i0) / dt, (blocked - b0) / dt, (received - r0) / dt,
                   percentile(lat, 0.99) * 1000)
        self._last = (now, ingested, blocked, received)
        self.samples.append(s)
        print(s.line(), flush=True)
        return s

    async def every(self, interval_s: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            if not self.proc.alive():
                raise RuntimeError(f"the gateway exited:\n{self.proc.log_tail()}")
            await self.sample()


# -- the run ----------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, workdir: Path, database_url: str | None) -> list[str]:
    gw = Gateway.prepare(workdir / "gateway", database_url=database_url, extra=DELIVERY_EXTRA)
    ctx = Context(quick=False, pin=Pinning(None, None), workdir=workdir, profile=False)
    limited_proc, limited_base = await asyncio.to_thread(
        peers.start_receiver, ctx, workdir / "limited", rate=args.rate * 1.2, burst=10, name="limited")
    mixed = Mixed()
    runner = web.AppRunner(mixed.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    mixed_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", mixed_port).start()
    mixed_base = f"http://127.0.0.1:{mixed_port}"
    proc = await asyncio.to_thread(gw.start, None)
    try:
        await asyncio.to_thread(gw.create_tenant)
        await asyncio.to_thread(gw.create_hook, INGEST, f"{mixed_base}/async", name="soak mixed",
                                timeoutMs=MIXED_TIMEOUT_MS, maxConcurrency=MIXED_CONCURRENCY)
        await asyncio.to_thread(gw.create_hook, INGEST, f"{limited_base}/limited", name="soak limited")
        await asyncio.to_thread(gw.create_hook, BLOCKING, f"{mixed_base}/blocking", name="soak blocking",
                                timeoutMs=MIXED_TIMEOUT_MS)
        token = gw.service_header().partition(": ")[2]
        headers = {"Authorization": token, "Content-Type": "application/json"}
        ingest, blocking = Stream("ingest"), Stream("blocking")
        watch = Watch(proc, gw, ingest, blocking, mixed, limited_base)
        print(f"soak: {args.minutes:g} min on {args.backend}, ingest {args.rate:g}/s, blocking"
              f" {args.blocking_rate:g}/s, at most {args.max_events} events; gateway pid {proc.pid}",
              flush=True)
        await watch.sample()
        stop = asyncio.Event()
        sampler = asyncio.create_task(watch.every(args.interval, stop))
        until = time.monotonic() + args.minutes * 60
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
            base = f"{gw.base}/v1/tenants/{TENANT}/triggers"
            await asyncio.gather(
                steady(http, ingest, f"{base}/{INGEST}", bodies.encode(bodies.POST_USER_REGISTRATION),
                       headers, args.rate, until, args.max_events),
                steady(http, blocking, f"{base}/{BLOCKING}", bodies.encode(bodies.CREDENTIALS_EXCHANGE),
                       headers, args.blocking_rate, until, args.max_events),
            )
        stop.set()
        await sampler
        final = {status: await asyncio.to_thread(gw.count, status)
                 for status in ("pending", "succeeded", "failed")}
        peak = proc.status_kib("VmHWM")
        limited = await asyncio.to_thread(peers.stats, limited_base)
    finally:
        gw.stop()
        limited_proc.stop()
        await runner.cleanup()
    return summary(args, watch, final, peak, limited)


def summary(args: argparse.Namespace, watch: Watch, final: dict[str, int], peak_kib: int | None,
            limited: dict[str, Any]) -> list[str]:
    s = watch.samples

    def span(values: list[float], fmt: str) -> str:
        return f"start {values[0]:{fmt}}, end {values[-1]:{fmt}}, max {max(values):{fmt}}"

    ingest, blocking = watch.ingest, watch.blocking
    lines = [
        f"# Soak: {s[-1].at_s / 60:.1f} min on {args.backend}"
        f" (ingest {args.rate:g}/s, blocking {args.blocking_rate:g}/s, at most {args.max_events} events)",
        "",
        "samples:",
        *(x.line() for x in s),
        "",
        "summary:",
        f"- RSS MiB: {span([x.rss_mib for x in s], '.1f')}"
        + (f" (peak VmHWM {peak_kib / 1024:.1f})" if peak_kib else ""),
        f"- open files: {span([float(x.fds) for x in s], '.0f')}",
        f"- backlog (pending deliveries): {span([float(x.backlog) for x in s], '.0f')}",
        f"- ingest: {ingest.sent} sent, answers {dict(ingest.statuses)}, {ingest.skipped} ticks skipped"
        f" (>= {MAX_IN_FLIGHT} in flight)",
        f"- blocking: {blocking.sent} sent, answers {dict(blocking.statuses)},"
        f" {blocking.skipped} ticks skipped",
        f"- mixed receiver answered: {dict(sorted(watch.mixed.counts.items()))}",
        f"- rate-limited receiver: {limited.get('requests', 0)} requests, {limited.get('ok', 0)} ok,"
        f" {limited.get('limited', 0)} x 429",
        f"- deliveries at the end: {final}",
    ]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--rate", type=float, default=40.0, help="ingested events a second")
    p.add_argument("--blocking-rate", type=float, default=10.0, help="blocking calls a second")
    p.add_argument("--max-events", type=int, default=100_000, help="bound on events (and on blocking calls)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--out", type=Path, help="write the samples and the summary here too")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = p.parse_args()
    if args.minutes <= 0 or args.rate <= 0 or args.blocking_rate <= 0 or args.interval <= 0:
        p.error("--minutes, --rate, --blocking-rate and --interval must be positive")
    workdir = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    try:
        with contextlib.ExitStack() as stack:
            url = None
            if args.backend == "postgres":
                url = stack.enter_context(Server(None)).database()
            lines = asyncio.run(soak(args, workdir, url))
    finally:
        if args.keep:
            print(f"soak: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(lines[lines.index("summary:"):]))
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
        print(f"soak: wrote {args.out}")


if __name__ == "__main__":
    main()
