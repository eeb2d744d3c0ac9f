"""Scenario 7: retention at scale. Finished deliveries (with their events and attempts) are
written into the database while the gateway is stopped, with a retention set so that they pass
it a few seconds after the gateway has started and warmed up under a steady ingest; its purge
(every second here) then deletes them in bounded batches while the ingest goes on. Measured on
SQLite and on PostgreSQL: how long the purge takes, the ingest's latency while it runs against
just before it, and the hot tables' size and dead rows before and after (bloat).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from gateway.store.postgres.rows import PURGE_BATCH as PG_PURGE_BATCH
from gateway.store.sqlite.rows import PURGE_BATCH as SQLITE_PURGE_BATCH

from . import backlog, bodies, peers, pg
from .gateway import TENANT, Gateway, write_config
from .loadgen import Load, finish_load, start_load, timeline
from .procs import ANY_CORE, Pinning, all_cores
from .results import Context, Section, Target, ms

TRIGGER = "post-user-registration"
QUIET = "quiet"  # the ingesting tenant: no hooks, so the load measures ingest alone
START_S = 4.0  # allowance for the gateway's start-up
WARM_S = 4.0  # ingest runs this long before the rows pass the retention
P99_TARGET = 2.0  # ingest p99 while the purge runs <= this x just before it
POLL_S = 0.1


def run(ctx: Context) -> Section:
    size = 50_000 if ctx.quick else 300_000
    bound = 20.0 if ctx.quick else 45.0  # the purge must be over within this after the rows pass
    wd = ctx.workdir / "s7"
    wd.mkdir(parents=True, exist_ok=True)
    floating = Pinning(ANY_CORE, ANY_CORE) if ctx.pin.active else ctx.pin
    fctx = Context(quick=ctx.quick, pin=floating, workdir=wd, profile=False, shared={})
    section = Section("7", f"Retention: purging {size:,} finished deliveries (with events and attempts) "
                           "under a steady ingest")
    body = bodies.write(wd, "pur", bodies.POST_USER_REGISTRATION)
    results: dict[str, dict[str, Any]] = {}
    with pg.Server(all_cores() if ctx.pin.active else None) as server:
        recv, recv_base = peers.start_receiver(fctx, wd)
        try:
            results["SQLite"] = _purge(fctx, wd / "sqlite", recv_base, body, size, bound, None)
            results["PostgreSQL"] = _purge(fctx, wd / "postgres", recv_base, body, size, bound,
                                           server.database())
        finally:
            recv.stop()
    section.headers = ["backend", "pre-step", "purge time", "rows/s", "ingest p50 / p99 during the purge",
                       "just before", "non-202", "hot tables before", "hot tables after"]
    for name, r in results.items():
        section.rows.append([
            name, f"{r['insert_s']:.1f} s",
            f"{r['purge_s']:.1f} s" if r["done"] else f"> {r['purge_s']:.0f} s (not finished)",
            f"{size / r['purge_s']:,.0f}/s" if r["done"] else "-",
            f"{ms(r['during'][0])} / {ms(r['during'][1])} ({r['during'][2]:,} requests)",
            f"{ms(r['before'][0])} / {ms(r['before'][1])} ({r['before'][2]:,})",
            str(r["bad"]), r["sizes_before"], r["sizes_after"],
        ])
        ratio_p99 = r["during"][1] / r["before"][1]
        section.targets += [
            Target(f"{name}: the purge finishes under load", f"{r['purge_s']:.1f} s", f"within {bound:.0f} s",
                   r["done"]),
            Target(f"{name}: ingest p99 during the purge <= {P99_TARGET}x just before, every answer 202",
                   f"{ratio_p99:.2f}x, {r['bad']} not 202", f"<= {P99_TARGET}x, 0",
                   ratio_p99 <= P99_TARGET and r["bad"] == 0),
        ]
    section.notes += [
        f"{size:,} succeeded deliveries, each with its event and one attempt, written while the gateway is "
        "stopped; its retention is set so they pass it once the gateway has run for "
        f"~{START_S + WARM_S:.0f} s under load, and its purge runs every second, in transactions of at "
        f"most {SQLITE_PURGE_BATCH:,} deliveries (and as many events) on SQLite, {PG_PURGE_BATCH:,} on "
        "PostgreSQL",
        "purge time: from the moment the rows pass the retention until none is left (polled every "
        f"{POLL_S * 1000:.0f} ms); the ingest load (c=16, a tenant without hooks, one load generator for "
        "the whole run) is split by each request's start: 'during' the purge, and 'just before' it "
        "(from 1 s after the gateway answered to the moment the rows pass)",
        "hot tables: SQLite: the database file (SQLite reuses freed pages; it does not shrink the file); "
        "PostgreSQL: deliveries + events + attempts with their indexes, and the dead rows left for "
        "autovacuum right after the purge",
        "every process floats over all cores, as in scenario 6; PostgreSQL with fsync on",
    ]
    return section


def _purge(ctx: Context, wd: Path, recv_base: str, body: Path, size: int, bound: float,
           database_url: str | None) -> dict[str, Any]:
    gw = Gateway.prepare(wd, database_url=database_url)
    try:
        gw.start(ctx.pin.server_core)
        gw.create_tenant()
        gw.create_tenant(QUIET)
        hook = gw.create_hook(TRIGGER, f"{recv_base}/old")
        gw.stop()
        at = time.time()
        if database_url is None:
            insert_s = backlog.insert_finished(gw.db_path, tenant=TENANT, hook_id=hook["id"], count=size,
                                               at=at)
        else:
            insert_s = pg.insert_finished(database_url, tenant=TENANT, hook_id=hook["id"], count=size,
                                          at=at)
        sizes_before = _sizes(gw)
        # The rows pass the retention START_S + WARM_S from now.
        crossing = time.time() + START_S + WARM_S
        retention = crossing - at
        assert gw.keys is not None
        write_config(wd, gw.port, database_url=database_url, keys=gw.keys,
                     extra=f'[delivery]\nretention = "{retention:.3f}s"\npurge_interval = "1s"\n')
        launched = time.time()
        gw.start(ctx.pin.server_core)
        ready = time.time()
        if ready > crossing - 1.0:
            raise RuntimeError(f"the gateway took {ready - launched:.1f} s to start: no warm-up before "
                               "the purge")
        tl = wd / "timeline.json"
        load = Load(f"{gw.base}/v1/tenants/{QUIET}/triggers/{TRIGGER}", body, (gw.service_header(QUIET),),
                    concurrency=16, duration_s=(crossing - time.time()) + bound + 1.0, warmup_s=0.0,
                    expect=202, timeline=tl)
        proc = start_load(load, ctx.pin.peer_core, wd / "load.ready")
        done, ended = False, crossing + bound
        while time.time() < crossing + bound:
            if time.time() > crossing and _older(gw, at + 1.0) == 0:
                done, ended = True, time.time()
                break
            time.sleep(POLL_S)
        result = finish_load(proc, load)
        sizes_after = _sizes(gw)
    finally:
        gw.stop()
    requests = timeline(tl)
    during = [lat for start, lat in requests if crossing <= start <= ended]
    before = [lat for start, lat in requests if ready + 1.0 <= start < crossing]
    bad = int(result["requests"]) - int(result["ok"]) + int(result["errors"])
    return {"insert_s": insert_s, "purge_s": ended - crossing, "done": done, "during": _pct(during),
            "before": _pct(before), "bad": bad, "sizes_before": sizes_before, "sizes_after": sizes_after}


def _pct(latencies: list[float]) -> tuple[float, float, int]:
    if len(latencies) < 2:
        return float("nan"), float("nan"), len(latencies)
    q = statistics.quantiles(latencies, n=100)
    return q[49] * 1000, q[98] * 1000, len(latencies)


def _older(gw: Gateway, before: float) -> int:
    if gw.database_url is None:
        return backlog.count_older(gw.db_path, before)
    return pg.count(gw.database_url, "SELECT COUNT(*) FROM deliveries WHERE created_at < $1", before)


def _sizes(gw: Gateway) -> str:
    if gw.database_url is None:
        return f"{gw.db_path.stat().st_size / 1e6:,.0f} MB file"
    sizes = pg.table_sizes(gw.database_url)
    total = sum(s[0] for s in sizes.values())
    live = sum(s[1] for s in sizes.values())
    dead = sum(s[2] for s in sizes.values())
    return f"{total:,.0f} MB, {live:,} live / {dead:,} dead rows"
