"""Scenario 1: the blocking credentials-exchange, through the gateway (token check, body
validation, signing, the receiver's answer folded in, the invocation recorded) against the
same receiver reached directly and through the bare relay."""

from __future__ import annotations

import statistics
import time
from typing import Any

from . import backlog, bodies, peers
from .cpu import Meter, Usage
from .gateway import TENANT, Gateway
from .loadgen import Load, run_load
from .profile import profile_load
from .results import Context, Section, Target, ms, rate, ratio

TRIGGER = "credentials-exchange"
THROUGHPUT_TARGET = 0.8  # gateway req/s >= this x bare relay
ADDED_P50_TARGET = 1.25  # gateway added p50 at c=1 <= this x bare relay's
# The bare relay again, forwarding with the gateway's outbound client (gateway.transport) instead
# of aiohttp's ClientSession: what that client saves, measured beside the rest. Not a target.
OWN_CLIENT_RELAY = "relay, gateway's client"


def run(ctx: Context) -> Section:
    d64, d1, warm, rounds = (3.0, 2.0, 0.5, 1) if ctx.quick else (4.0, 3.0, 1.0, 3)
    wd = ctx.workdir / "s1"
    wd.mkdir(parents=True, exist_ok=True)
    body = bodies.write(wd, "cx", bodies.CREDENTIALS_EXCHANGE)
    section = Section("1", "Blocking credentials-exchange (receiver answers at once)")
    procs = []
    gw = Gateway.prepare(wd / "gateway")
    try:
        recv, recv_base = peers.start_receiver(ctx, wd)
        procs.append(recv)
        relay, relay_base = peers.start_relay(ctx, wd, f"{recv_base}/cx")
        procs.append(relay)
        lean, lean_base = peers.start_relay(ctx, wd, f"{recv_base}/cx", client="transport")
        procs.append(lean)
        gw.start(ctx.pin.server_core)
        gw.create_tenant()
        gw.create_hook(TRIGGER, f"{recv_base}/cx")
        gw_url = f"{gw.base}/v1/tenants/{TENANT}/triggers/{TRIGGER}"
        answer = gw.post(f"/v1/tenants/{TENANT}/triggers/{TRIGGER}", bodies.CREDENTIALS_EXCHANGE)
        if answer.get("status") != "success" or answer.get("data", {}).get("scope") != ["read", "write"]:
            raise RuntimeError(f"the gateway's answer is not the receiver's: {answer}")
        assert gw.proc is not None
        paths: dict[str, tuple[str, tuple[str, ...], int]] = {
            "direct": (f"{recv_base}/cx", (), recv.pid),
            "bare relay": (f"{relay_base}/cx", (), relay.pid),
            OWN_CLIENT_RELAY: (f"{lean_base}/cx", (), lean.pid),
            "gateway": (gw_url, (gw.service_header(),), gw.proc.pid),
        }
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        gateway_requests = 1
        # Rounds, each path in turn: a burst of load from elsewhere on the machine hits all paths alike.
        for conc, dur in ((64, d64), (1, d1)):
            for _ in range(rounds):
                for name, (url, headers, pid) in paths.items():
                    load = Load(url, body, headers, concurrency=conc, duration_s=dur, warmup_s=warm)
                    with Meter([pid]) as meter:
                        result = run_load(load, ctx.pin.peer_core)
                    _cpu(result, meter.usage, pid, ctx.pin.server_core)
                    runs.setdefault((name, conc), []).append(result)
                    if name == "gateway":
                        gateway_requests += result["total"]
                    bad = result["requests"] - result["ok"] + result["errors"]
                    if bad:
                        section.notes.append(f"{name} c={conc}: {bad} answers were not 200 "
                                             f"({result['statuses']}, {result['errors']} errors)")
        figures = {name: {f"c{c}": _median(runs[(name, c)]) for c in (64, 1)} for name in paths}
        ctx.shared["relay_rate"] = figures["bare relay"]["c64"]["rate"]
        ctx.shared["relay_cpu_us"] = figures["bare relay"]["c64"]["cpu_us"]
        if ctx.profile:
            load = Load(gw_url, body, (gw.service_header(),), concurrency=64, duration_s=d64, warmup_s=0.5)
            assert gw.proc is not None
            summary, result = profile_load(gw.proc.pid, load, ctx.pin.peer_core, wd / "profile-s1.txt",
                                           "scenario 1: gateway, blocking credentials-exchange at c=64")
            section.profiles.append(summary)
            gateway_requests += int(result["total"])  # type: ignore[call-overload]
        recorded = _wait_recorded(gw, gateway_requests)
        section.notes.append(
            f"recording: {recorded:,} of {gateway_requests:,} blocking invocations are in the database as "
            "sync deliveries (written after the answer, batched)"
        )
    finally:
        gw.stop()
        for p in reversed(procs):
            p.stop()
    _table(section, figures, ctx.pin.server_core)
    return section


def _cpu(result: dict[str, Any], usage: Usage, pid: int, core: int | None) -> None:
    result["cpu_share"] = usage.share(pid)
    result["cpu_us"] = usage.process_s.get(pid, 0.0) / max(1, result["total"]) * 1e6
    busy = usage.core_busy.get(f"cpu{core}") if core is not None else None
    result["core_busy"] = busy if busy is not None else float("nan")


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds."""
    keys = ("rate", "p50_ms", "p99_ms", "cpu_share", "cpu_us", "core_busy")
    return {key: statistics.median(r[key] for r in results) for key in keys}


def _wait_recorded(gw: Gateway, expected: int, timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    n = 0
    while time.monotonic() < deadline:
        n = backlog.count_kind(gw.db_path, "sync")
        if n >= expected:
            break
        time.sleep(0.2)
    return n


def _table(section: Section, f: dict[str, dict[str, dict[str, Any]]], core: int | None) -> None:
    relay_rate = f["bare relay"]["c64"]["rate"]
    direct_p50 = f["direct"]["c1"]["p50_ms"]
    direct_p50_64 = f["direct"]["c64"]["p50_ms"]
    relay_added = f["bare relay"]["c1"]["p50_ms"] - direct_p50
    section.headers = ["path", "req/s c=64", "vs relay", "p50 c=64", "p99 c=64", "p50 c=1", "p99 c=1",
                       "added p50 c=1", "added p50 c=64", "added vs relay (c=1)", "CPU/request",
                       "CPU vs relay"]
    for name in ("direct", "bare relay", OWN_CLIENT_RELAY, "gateway"):
        c64, c1 = f[name]["c64"], f[name]["c1"]
        added = c1["p50_ms"] - direct_p50
        section.rows.append([
            name, rate(c64["rate"]), ratio(c64["rate"] / relay_rate), ms(c64["p50_ms"]), ms(c64["p99_ms"]),
            ms(c1["p50_ms"]), ms(c1["p99_ms"]),
            "-" if name == "direct" else ms(added),
            "-" if name == "direct" else ms(c64["p50_ms"] - direct_p50_64),
            "-" if name == "direct" else ratio(added / relay_added) if relay_added > 0 else "n/a",
            f"{c64['cpu_us']:.0f} us", ratio(c64["cpu_us"] / f["bare relay"]["c64"]["cpu_us"]),
        ])
    gw64, gw1 = f["gateway"]["c64"], f["gateway"]["c1"]
    tput = gw64["rate"] / relay_rate
    added_ratio = (gw1["p50_ms"] - direct_p50) / relay_added if relay_added > 0 else float("inf")
    section.targets += [
        Target("gateway throughput at c=64 >= 0.8x bare relay", ratio(tput), f">= {THROUGHPUT_TARGET}x",
               tput >= THROUGHPUT_TARGET),
        Target("gateway added p50 at c=1 <= 1.25x bare relay's added p50",
               f"{ratio(added_ratio)} ({ms(gw1['p50_ms'] - direct_p50)} vs {ms(relay_added)})",
               f"<= {ADDED_P50_TARGET}x", added_ratio <= ADDED_P50_TARGET),
    ]
    gw_busy = f["gateway"]["c64"]["core_busy"]
    section.notes.append(
        "CPU/request: CPU time of the process that answers the load generator (receiver for direct, the "
        "relay, "
        "the gateway with its database threads) over every request of the c=64 runs; it does not move when "
        f"something else shares the core. During the gateway's c=64 runs the gateway used "
        f"{f['gateway']['c64']['cpu_share']:.0%} of a core"
        + (f" and core {core} was {gw_busy:.0%} busy (the rest: other processes on the machine)"
           if core is not None else "")
    )
    section.notes.append(
        f"the direct path is the ceiling of the peer core (load generator and receiver together, "
        f"{rate(f['direct']['c64']['rate'])}); the relay reaches "
        f"{ratio(relay_rate / f['direct']['c64']['rate'])} "
        "of it, so its rate is partly capped by the load generator"
    )
    own = f[OWN_CLIENT_RELAY]["c64"]
    section.notes.append(
        f"{OWN_CLIENT_RELAY}: the bare relay with its ClientSession replaced by the gateway's outbound "
        f"client (gateway/transport/): {own['cpu_us']:.0f} us of CPU per request against "
        f"{f['bare relay']['c64']['cpu_us']:.0f} us; the difference is what that client saves the gateway on "
        "every call. The targets compare with the bare relay as the issue defines it (ClientSession)"
    )
    section.notes.append("added latency = p50(path) - p50(direct) at the same concurrency; each figure is "
                         "the median of rounds in which every path is measured in turn, after a warm-up, "
                         "on the same receiver")
