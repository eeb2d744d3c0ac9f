"""Scenario 3: draining a backlog. Pending deliveries, due now, are written straight into the
SQLite file while the gateway is stopped; then the gateway starts and drains them. We measure
the time per delivery over a window after a warm-up, and the gateway's peak RSS (VmHWM)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from . import backlog, peers, pg
from .gateway import TENANT, Gateway
from .results import Context, Section, Target

TRIGGER = "post-user-registration"
MAX_CONCURRENCY = 64
PER_DELIVERY_TARGET = 1.2  # large backlog's time per delivery <= this x the small one's
RSS_TARGET_MB = 200.0
POLL_S = 0.1


SPAN = (2_000, 9_000)  # the like-for-like span: the 2,000th to the 9,000th delivery
SMALL_DRAINS = 3  # the small backlog's figure is the median of this many drains


@dataclass
class Drain:
    size: int
    insert_s: float
    start_s: float  # gateway start to its first delivery
    span_ms: float  # time per delivery over SPAN
    window_s: float  # the steady window after the warm-up (0: the backlog ran out first)
    window_n: int
    hwm_mb: float
    rss_mb: float
    db_mb: float

    @property
    def window_ms(self) -> float:
        return self.window_s / self.window_n * 1000 if self.window_n else float("nan")


def run(ctx: Context) -> Section:
    small, large = (10_000, 100_000) if ctx.quick else (10_000, 1_000_000)
    warm_s, window_s = (2.0, 5.0) if ctx.quick else (3.0, 10.0)
    wd = ctx.workdir / "s3"
    wd.mkdir(parents=True, exist_ok=True)
    section = Section("3", f"Backlog: draining {small:,} and {large:,} pending deliveries on SQLite")
    recv, recv_base = peers.start_receiver(ctx, wd)
    try:
        # The small backlog drains in under a second, so one drain is at the mercy of whatever
        # else runs on the machine in that second: its figure is the median of a few drains.
        smalls = [_drain(ctx, wd / f"n{small}-{i}", recv_base, small, warm_s, window_s)
                  for i in range(SMALL_DRAINS)]
        median = sorted(smalls, key=lambda d: d.span_ms)[len(smalls) // 2]
        drains = [median, _drain(ctx, wd / f"n{large}", recv_base, large, warm_s, window_s)]
    finally:
        recv.stop()
    section.headers = ["backlog", "insert (pre-step)", "db file", "start to 1st delivery",
                       f"per delivery, {SPAN[0]:,}th..{SPAN[1]:,}th",
                       f"per delivery, {window_s:.0f} s window",
                       "rate in window", "peak RSS (VmHWM)", "RSS at end"]
    for d in drains:
        section.rows.append([
            f"{d.size:,}", f"{d.insert_s:.1f} s", f"{d.db_mb:.0f} MB", f"{d.start_s:.2f} s",
            f"{d.span_ms:.3f} ms ({1000 / d.span_ms:,.0f}/s)",
            f"{d.window_ms:.3f} ms" if d.window_n else "(drained first)",
            f"{d.window_n / d.window_s:,.0f}/s" if d.window_n else "-",
            f"{d.hwm_mb:.0f} MB", f"{d.rss_mb:.0f} MB",
        ])
    a, b = drains
    steady = b.window_ms if b.window_n else b.span_ms
    per = steady / a.span_ms
    like = b.span_ms / a.span_ms
    hwm = max(d.hwm_mb for d in drains)
    section.targets += [
        Target(f"time per delivery at {large:,} within 1.2x of {small:,}",
               f"{per:.2f}x steady window ({like:.2f}x over the same span)", f"<= {PER_DELIVERY_TARGET}x",
               per <= PER_DELIVERY_TARGET),
        Target("gateway peak RSS <= 200 MB", f"{hwm:.0f} MB", f"<= {RSS_TARGET_MB:.0f} MB",
               hwm <= RSS_TARGET_MB),
    ]
    section.notes += [
        f"one event and one delivery per row, one enabled hook (maxConcurrency={MAX_CONCURRENCY}), "
        "workers and batch at their defaults; the pre-step is one transaction of executemany with "
        "synchronous=OFF",
        f"times are arrival times at the receiver. The {small:,} backlog drains in about a second, so its "
        f"figure is the span from the {SPAN[0]:,}th to the {SPAN[1]:,}th delivery, the median of "
        f"{SMALL_DRAINS} drains ({', '.join(f'{d.span_ms:.3f}' for d in smalls)} ms); the {large:,} backlog "
        f"is measured over the same span and over a {window_s:.0f} s window starting {warm_s:.0f} s after "
        "its first delivery; the target compares the steady window with the small backlog's span",
    ]
    return section


def _drain(ctx: Context, wd: Path, recv_base: str, size: int, warm_s: float, window_s: float,
           database_url: str | None = None) -> Drain:
    """`database_url`: drain from this (empty) PostgreSQL database instead of a SQLite file."""
    gw = Gateway.prepare(wd, database_url=database_url)
    try:
        gw.start(ctx.pin.server_core)
        gw.create_tenant()
        hook = gw.create_hook(TRIGGER, f"{recv_base}/backlog", maxConcurrency=MAX_CONCURRENCY)
        gw.stop()
        if database_url is None:
            insert_s = backlog.insert(gw.db_path, tenant=TENANT, hook_id=hook["id"], count=size)
            db_mb = gw.db_path.stat().st_size / 1e6
        else:
            insert_s = pg.insert_backlog(database_url, tenant=TENANT, hook_id=hook["id"], count=size)
            db_mb = pg.size_mb(database_url)
        peers.reset(recv_base)
        launched = time.time()
        gw.start(ctx.pin.server_core)
        proc = gw.proc
        assert proc is not None
        steady = size * 0.9 > SPAN[1] * 2  # big enough for a steady window after the span
        deadline = time.monotonic() + 120.0 + warm_s + window_s  # start-up, warm-up and window, bounded
        first: float | None = None
        while time.monotonic() < deadline:
            n = int(peers.stats(recv_base)["requests"])
            if first is None and n > 0:
                first = peers.arrival(recv_base, 1)[0]
            if n >= 0.9 * size:
                break
            if first is not None and n >= SPAN[1]:
                if not steady or time.time() >= first + warm_s + window_s:
                    break
            time.sleep(POLL_S)
        hwm = (proc.status_kib("VmHWM") or 0) / 1024
        rss = (proc.status_kib("VmRSS") or 0) / 1024
        t_lo, t_hi = peers.arrival(recv_base, *SPAN)
        window_n = 0
        if steady and first is not None:
            window_n = peers.arrived_between(recv_base, first + warm_s, first + warm_s + window_s)
    finally:
        gw.stop()
    if first is None or t_lo is None or t_hi is None:
        raise RuntimeError(f"backlog of {size:,}: the drain did not get going within the bound")
    span_ms = (t_hi - t_lo) / (SPAN[1] - SPAN[0]) * 1000
    return Drain(size, insert_s, first - launched, span_ms, window_s if window_n else 0.0, window_n,
                 hwm, rss, db_mb)
