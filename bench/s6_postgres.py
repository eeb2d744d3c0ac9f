"""Scenario 6: PostgreSQL, measured in the same run against SQLite.

- end to end (scenario 2's measurement): SQLite, PostgreSQL with one instance, PostgreSQL with
  two instances sharing the database (a load generator each, half the concurrency each);
- the blocking path (scenario 1's gateway at c=64 and c=1): SQLite against PostgreSQL, in turns;
- scenario 3's backlog drained from PostgreSQL: 1,000,000 pending against 10,000.

Every process of this scenario floats over all cores (two instances pinned to one core could not
show whether they scale), the SQLite baselines too. PostgreSQL runs with fsync and synchronous
commits on, as SQLite runs with synchronous=FULL.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from . import bodies, peers, pg, s3_backlog
from .cpu import Meter
from .gateway import TENANT, Gateway, Keys
from .loadgen import Load, run_load
from .procs import ANY_CORE, Pinning, all_cores
from .results import Context, Section, Target, ms, rate, ratio
from .s2_async import _measure_e2e

ASYNC_TRIGGER = "post-user-registration"
BLOCKING_TRIGGER = "credentials-exchange"
E2E_TARGET = 0.7  # PostgreSQL end to end >= this x SQLite's
SCALE_TARGET = 1.0  # two instances >= this x one
BLOCKING_TARGET = 0.9  # PostgreSQL blocking req/s >= this x SQLite's (within 10%)
CONCURRENCY = 64
E2E_ROUNDS = 5  # rounds of the three end-to-end measurements, in turns (the ratios are paired per round)


def run(ctx: Context) -> Section:
    wd = ctx.workdir / "s6"
    wd.mkdir(parents=True, exist_ok=True)
    floating = Pinning(ANY_CORE, ANY_CORE) if ctx.pin.active else ctx.pin
    fctx = Context(quick=ctx.quick, pin=floating, workdir=wd, profile=False, shared={})
    section = Section("6", "PostgreSQL: one and two instances, the blocking path and the backlog, "
                           "against SQLite in the same run")
    with pg.Server(all_cores() if ctx.pin.active else None) as server:
        recv, recv_base = peers.start_receiver(fctx, wd)
        try:
            e2e = _end_to_end(fctx, wd / "e2e", server, recv_base)
            blocking = _blocking(fctx, wd / "blocking", server, recv_base)
            drains = _backlogs(fctx, wd / "backlog", server, recv_base)
        finally:
            recv.stop()
    _report(section, e2e, blocking, drains, ctx)
    return section


# -- end to end -----------------------------------------------------------------------------


def _end_to_end(ctx: Context, wd: Path, server: pg.Server, recv_base: str) -> dict[str, list[dict[str, Any]]]:
    wd.mkdir(parents=True, exist_ok=True)
    body = bodies.write(wd, "pur", bodies.POST_USER_REGISTRATION)
    rounds = 1 if ctx.quick else E2E_ROUNDS
    duration = 4.0 if ctx.quick else 10.0
    drain_bound = 60.0 if ctx.quick else 120.0
    out: dict[str, list[dict[str, Any]]] = {}
    for r in range(rounds):  # in turns, so a slow minute on the machine hits every configuration
        for name, instances, postgres in (("SQLite", 1, False), ("PostgreSQL, 1 instance", 1, True),
                                          ("PostgreSQL, 2 instances", 2, True)):
            url = server.database() if postgres else None
            server.settle()
            keys = Keys.new()
            gws = [Gateway.prepare(wd / f"{name[:2]}{instances}-{r}-{i}", database_url=url, keys=keys)
                   for i in range(instances)]
            try:
                for gw in gws:
                    gw.start(ctx.pin.server_core)
                gws[0].create_tenant()
                gws[0].create_hook(ASYNC_TRIGGER, f"{recv_base}/e2e", maxConcurrency=CONCURRENCY)
                # One load generator whatever the number of instances, its connections shared out
                # between them as a balancer would: on 2 cores a second generator's own CPU would
                # count against the two instances.
                path = f"/v1/tenants/{TENANT}/triggers/{ASYNC_TRIGGER}"
                loads = [Load(f"{gws[0].base}{path}", body, (gws[0].service_header(),),
                              concurrency=CONCURRENCY, duration_s=duration, warmup_s=0.0, expect=202,
                              also=tuple(f"{gw.base}{path}" for gw in gws[1:]))]
                result = _measure_e2e(ctx, gws, loads, recv_base, drain_bound, wd)
            finally:
                for gw in gws:
                    gw.stop()
                if url is not None:
                    server.settle(url)
            out.setdefault(name, []).append(result)
    return out


# -- the blocking path ----------------------------------------------------------------------


def _blocking(ctx: Context, wd: Path, server: pg.Server, recv_base: str) -> dict[str, dict[str, float]]:
    wd.mkdir(parents=True, exist_ok=True)
    body = bodies.write(wd, "cx", bodies.CREDENTIALS_EXCHANGE)
    d64, d1, warm, rounds = (3.0, 2.0, 0.5, 1) if ctx.quick else (4.0, 3.0, 1.0, 3)
    gws = {"SQLite": Gateway.prepare(wd / "sqlite"),
           "PostgreSQL": Gateway.prepare(wd / "postgres", database_url=server.database())}
    server.settle()
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for gw in gws.values():
            gw.start(ctx.pin.server_core)
            gw.create_tenant()
            gw.create_hook(BLOCKING_TRIGGER, f"{recv_base}/cx")
            answer = gw.post(f"/v1/tenants/{TENANT}/triggers/{BLOCKING_TRIGGER}", bodies.CREDENTIALS_EXCHANGE)
            if answer.get("status") != "success":
                raise RuntimeError(f"the gateway's answer is not the receiver's: {answer}")
        for conc, dur in ((64, d64), (1, d1)):
            for _ in range(rounds):
                for name, gw in gws.items():
                    assert gw.proc is not None
                    load = Load(f"{gw.base}/v1/tenants/{TENANT}/triggers/{BLOCKING_TRIGGER}", body,
                                (gw.service_header(),), concurrency=conc, duration_s=dur, warmup_s=warm)
                    with Meter([gw.proc.pid]) as meter:
                        result = run_load(load, ctx.pin.peer_core)
                    cpu_s = meter.usage.process_s.get(gw.proc.pid, 0.0)
                    result["cpu_us"] = cpu_s / max(1, result["total"]) * 1e6
                    result["bad"] = result["requests"] - result["ok"] + result["errors"]
                    runs.setdefault((name, conc), []).append(result)
    finally:
        for gw in gws.values():
            gw.stop()
    return {
        f"{name} c={conc}": {key: statistics.median(r[key] for r in results)
                             for key in ("rate", "p50_ms", "p99_ms", "cpu_us", "bad")}
        for (name, conc), results in runs.items()
    }


# -- the backlog ----------------------------------------------------------------------------


def _backlogs(ctx: Context, wd: Path, server: pg.Server, recv_base: str) -> list[s3_backlog.Drain]:
    small, large = (10_000, 100_000) if ctx.quick else (10_000, 1_000_000)
    warm_s, window_s = (2.0, 5.0) if ctx.quick else (3.0, 10.0)
    smalls = [s3_backlog._drain(ctx, wd / f"n{small}-{i}", recv_base, small, warm_s, window_s,
                                database_url=server.database())
              for i in range(s3_backlog.SMALL_DRAINS)]
    median = sorted(smalls, key=lambda d: d.span_ms)[len(smalls) // 2]
    big = s3_backlog._drain(ctx, wd / f"n{large}", recv_base, large, warm_s, window_s,
                            database_url=server.database())
    return [median, big]


# -- the report -----------------------------------------------------------------------------


def _median(results: list[dict[str, Any]], key: str) -> float:
    """The median of the rounds (one round that met a noisy neighbour does not move it)."""
    return statistics.median(float(r[key]) for r in results)


def _per_round(results: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> list[float]:
    """Each round's rate of `results` to `baseline`'s in the same round."""
    return [float(r["rate"]) / float(b["rate"]) for r, b in zip(results, baseline, strict=True)]


def _paired(results: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> float:
    return statistics.median(_per_round(results, baseline))


def _ratios(results: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> str:
    return ", ".join(f"{x:.2f}x" for x in _per_round(results, baseline))


def _report(section: Section, e2e: dict[str, list[dict[str, Any]]], blocking: dict[str, dict[str, float]],
            drains: list[s3_backlog.Drain], ctx: Context) -> None:
    base = _median(e2e["SQLite"], "rate")
    one = _median(e2e["PostgreSQL, 1 instance"], "rate")
    two = _median(e2e["PostgreSQL, 2 instances"], "rate")
    # The targets' ratios pair the measurements of one round (taken a few seconds apart), then take
    # the median: the machine's speed drifts from minute to minute, a round's three do not.
    one_vs_base = _paired(e2e["PostgreSQL, 1 instance"], e2e["SQLite"])
    two_vs_one = _paired(e2e["PostgreSQL, 2 instances"], e2e["PostgreSQL, 1 instance"])
    section.headers = ["measurement", "rate", "vs SQLite", "gateway CPU/event or request", "detail"]
    for name, results in e2e.items():
        r = _median(results, "rate")
        section.rows.append([
            f"end to end, {name}", rate(r), ratio(r / base), f"{_median(results, 'cpu_us'):.0f} us",
            "; ".join(f"{x['succeeded']:,} of {x['ingested']:,} delivered in {x['elapsed']:.1f} s, ingest "
                      f"{x['ingest_rate']:,.0f}/s" for x in results),
        ])
    sq64, pg64 = blocking["SQLite c=64"], blocking["PostgreSQL c=64"]
    sq1, pg1 = blocking["SQLite c=1"], blocking["PostgreSQL c=1"]
    for name, f64, f1 in (("SQLite", sq64, sq1), ("PostgreSQL", pg64, pg1)):
        section.rows.append([
            f"blocking credentials-exchange, {name}", rate(f64["rate"]), ratio(f64["rate"] / sq64["rate"]),
            f"{f64['cpu_us']:.0f} us",
            f"c=64 p50 {ms(f64['p50_ms'])}, p99 {ms(f64['p99_ms'])}; c=1 p50 {ms(f1['p50_ms'])}, "
            f"p99 {ms(f1['p99_ms'])}" + (f"; {f64['bad']:.0f} answers not 200" if f64["bad"] else ""),
        ])
    small, large = drains
    steady = large.window_ms if large.window_n else large.span_ms
    for d in drains:
        section.rows.append([
            f"backlog of {d.size:,} on PostgreSQL", f"{1000 / d.span_ms:,.0f}/s", "-",
            f"{d.span_ms:.3f} ms per delivery",
            f"insert {d.insert_s:.1f} s, database {d.db_mb:,.0f} MB, start to 1st delivery {d.start_s:.2f} s"
            + (f", steady window {d.window_ms:.3f} ms per delivery" if d.window_n else "")
            + f", peak RSS {d.hwm_mb:.0f} MB",
        ])
    per = steady / small.span_ms
    section.targets += [
        Target("PostgreSQL end to end >= 0.7x SQLite's",
               f"{ratio(one_vs_base)} ({rate(one)} vs {rate(base)})",
               f">= {E2E_TARGET}x", one_vs_base >= E2E_TARGET),
        Target("two instances >= 1.0x one (PostgreSQL end to end)",
               f"{ratio(two_vs_one)} ({rate(two)} vs {rate(one)})",
               f">= {SCALE_TARGET}x", two_vs_one >= SCALE_TARGET),
        Target("blocking path on PostgreSQL within 10% of SQLite (c=64 req/s)",
               f"{ratio(pg64['rate'] / sq64['rate'])}", f">= {BLOCKING_TARGET}x",
               pg64["rate"] / sq64["rate"] >= BLOCKING_TARGET),
        Target(f"PostgreSQL backlog: per delivery at {large.size:,} within 1.2x of {small.size:,}",
               f"{per:.2f}x", f"<= {s3_backlog.PER_DELIVERY_TARGET}x", per <= s3_backlog.PER_DELIVERY_TARGET),
    ]
    section.notes += [
        "every process of this scenario (gateways, PostgreSQL, receiver, load generators) floats over "
        f"all cores{' (taskset -c ' + all_cores() + ')' if ctx.pin.active else ''}, the SQLite baselines "
        "too; PostgreSQL runs with fsync and synchronous commits on (SQLite: WAL, synchronous=FULL); "
        "before each measurement the previous one's database is dropped and a CHECKPOINT writes every "
        "dirty page out, so that none pays for another's writes",
        f"end to end: scenario 2's measurement, {len(e2e['SQLite'])} round(s) taken in turns, medians shown; "
        "the targets' ratios are the medians of each round's ratio (its measurements a few seconds apart): "
        f"two instances to one {_ratios(e2e['PostgreSQL, 2 instances'], e2e['PostgreSQL, 1 instance'])}, "
        f"one to SQLite {_ratios(e2e['PostgreSQL, 1 instance'], e2e['SQLite'])}; "
        f"with two instances one load generator at c={CONCURRENCY} sends half its connections to each (as a "
        f"balancer would; a second generator's CPU would count against them on 2 cores), and the hook's "
        f"maxConcurrency={CONCURRENCY} holds across both; gateway CPU counts the gateway "
        "processes only (PostgreSQL's own CPU is not in it)",
        "blocking: scenario 1's gateway path (the invocation recorded after the answer), medians of "
        "rounds taken in turns",
        f"backlog: scenario 3's measurement on PostgreSQL (pre-step with COPY, then VACUUM ANALYZE); the "
        f"small figure is the median of {s3_backlog.SMALL_DRAINS} drains",
    ]
