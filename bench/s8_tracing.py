"""Scenario 8: the cost of tracing (gateway/tracing.py) on the blocking credentials-exchange.

The same gateway three ways, against the same receiver, measured in turn: tracing off (the
default), tracing on exporting every span over OTLP/HTTP to a loopback collector, and tracing on
with `OTEL_TRACES_SAMPLER=always_off` (the instrumentation and the `traceparent` to receivers,
no span recorded). Every request carries an auth server's `traceparent`. Beside them, the CPU
the off path adds to one request, timed in this process: the span sites a blocking call passes,
each a test of `tracing.ENABLED`.
"""

from __future__ import annotations

import statistics
import timeit
from typing import Any

from gateway import tracing

from . import bodies, peers
from .cpu import Meter
from .gateway import TENANT, Gateway
from .loadgen import Load, run_load
from .results import Context, Section, ms, rate, ratio

TRIGGER = "credentials-exchange"
INCOMING = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OFF, ON, UNSAMPLED = "tracing off (default)", "tracing on, OTLP export", "tracing on, sampler always_off"
MICRO_LOOPS = 200_000


def run(ctx: Context) -> Section:
    d64, d1, warm, rounds = (3.0, 2.0, 0.5, 1) if ctx.quick else (4.0, 3.0, 1.0, 3)
    wd = ctx.workdir / "s8"
    wd.mkdir(parents=True, exist_ok=True)
    body = bodies.write(wd, "cx", bodies.CREDENTIALS_EXCHANGE)
    section = Section("8", "Tracing: the blocking credentials-exchange with tracing off and on")
    procs = []
    gateways: dict[str, Gateway] = {}
    try:
        recv, recv_base = peers.start_receiver(ctx, wd)
        procs.append(recv)
        # A collector for each traced gateway: the bench receiver answers every POST (here
        # /v1/traces) 200 at once, and counts them.
        collectors: dict[str, str] = {}
        for name in (ON, UNSAMPLED):
            sink, collectors[name] = peers.start_receiver(ctx, wd / f"collector-{len(collectors)}",
                                                          name="otlp-collector")
            procs.append(sink)
        envs = {
            OFF: {"OTEL_SDK_DISABLED": "true"},  # off whatever the shell running the bench has set
            ON: {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": collectors[ON]},
            UNSAMPLED: {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": collectors[UNSAMPLED],
                        "OTEL_TRACES_SAMPLER": "always_off"},
        }
        for name, env in envs.items():
            gw = Gateway.prepare(wd / f"gateway-{len(gateways)}")
            gateways[name] = gw
            gw.start(ctx.pin.server_core, env=env)
            gw.create_tenant()
            gw.create_hook(TRIGGER, f"{recv_base}/cx")
            answer = gw.post(f"/v1/tenants/{TENANT}/triggers/{TRIGGER}", bodies.CREDENTIALS_EXCHANGE)
            if answer.get("status") != "success":
                raise RuntimeError(f"{name}: the gateway's answer is not the receiver's: {answer}")
        for base in collectors.values():
            peers.reset(base)
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for conc, dur in ((64, d64), (1, d1)):
            for _ in range(rounds):
                for name, gw in gateways.items():
                    assert gw.proc is not None
                    url = f"{gw.base}/v1/tenants/{TENANT}/triggers/{TRIGGER}"
                    load = Load(url, body, (gw.service_header(), INCOMING), concurrency=conc, duration_s=dur,
                                warmup_s=warm)
                    with Meter([gw.proc.pid]) as meter:
                        result = run_load(load, ctx.pin.peer_core)
                    cpu_s = meter.usage.process_s.get(gw.proc.pid, 0.0)
                    result["cpu_us"] = cpu_s / max(1, result["total"]) * 1e6
                    runs.setdefault((name, conc), []).append(result)
                    bad = result["requests"] - result["ok"] + result["errors"]
                    if bad:
                        section.notes.append(f"{name} c={conc}: {bad} answers were not 200 "
                                             f"({result['statuses']}, {result['errors']} errors)")
        for gw in gateways.values():
            gw.stop()  # a clean stop exports the spans still queued
        exports = {name: int(peers.stats(base)["requests"]) for name, base in collectors.items()}
    finally:
        for gw in gateways.values():
            gw.stop()
        for p in reversed(procs):
            p.stop()
    figures = {name: {c: _median(runs[(name, c)]) for c in (64, 1)} for name in gateways}
    _table(section, figures, exports)
    return section


def off_path_ns() -> float:
    """CPU (ns) of the span sites one blocking call with one hook passes, tracing off."""
    assert not tracing.ENABLED, "the bench process itself traces nothing"
    headers = {"traceparent": INCOMING.split(": ", 1)[1]}
    answer = {"status": "success", "data": {}}

    def one_call() -> None:
        with tracing.ingest(headers):
            tracing.annotate(tenant_id=TENANT, trigger_id=TRIGGER)
            with tracing.invocation(TENANT, TRIGGER):
                tracing.annotate(event_id="evt")
                with tracing.hook_call(TENANT, "hk", "evt", "dlv"):
                    if tracing.ENABLED:  # send()'s test
                        pass
                    tracing.failed(None)
                tracing.envelope(answer)
            tracing.answered(200)

    best = min(timeit.repeat(one_call, number=MICRO_LOOPS, repeat=5))
    return best / MICRO_LOOPS * 1e9


def _median(results: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("rate", "p50_ms", "p99_ms", "cpu_us")
    return {key: statistics.median(r[key] for r in results) for key in keys}


def _table(section: Section, f: dict[str, dict[int, dict[str, float]]], exports: dict[str, int]) -> None:
    off64 = f[OFF][64]
    section.headers = ["gateway", "req/s c=64", "vs off", "CPU/request", "vs off", "p50 c=64", "p99 c=64",
                       "p50 c=1", "p99 c=1", "OTLP exports"]
    for name in (OFF, UNSAMPLED, ON):
        c64, c1 = f[name][64], f[name][1]
        section.rows.append([
            name, rate(c64["rate"]), ratio(c64["rate"] / off64["rate"]), f"{c64['cpu_us']:.0f} us",
            ratio(c64["cpu_us"] / off64["cpu_us"]), ms(c64["p50_ms"]), ms(c64["p99_ms"]), ms(c1["p50_ms"]),
            ms(c1["p99_ms"]), f"{exports[name]:,}" if name in exports else "-",
        ])
    ns = off_path_ns()
    section.notes.append(
        f"tracing off: the span sites of one blocking call (ingest, invoke, one hook call, its request) cost "
        f"{ns:.0f} ns of CPU together, timed in-process; that is {ns / 1000 / off64['cpu_us']:.2%} of the "
        f"{off64['cpu_us']:.0f} us the gateway spends per request, below what a run can tell apart. Off, "
        "nothing of OpenTelemetry is imported, no span is made and no traceparent goes out"
    )
    on, unsampled = f[ON][64], f[UNSAMPLED][64]
    section.notes.append(
        f"tracing on: {on['cpu_us'] - off64['cpu_us']:.0f} us more CPU per request "
        f"({ratio(on['cpu_us'] / off64['cpu_us'])}) for four spans (ingest, invoke, hook call and POST, with "
        "their attributes), batched and exported over OTLP/HTTP by the SDK's export thread: the price of "
        "OpenTelemetry's Python SDK, whose every span is tens of microseconds of Python. Sampled out, a span "
        "still costs the SDK's start and end "
        f"({unsampled['cpu_us'] - off64['cpu_us']:.0f} us more per request with every span sampled out); "
        "a ratio sampler (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`) pays between the two"
    )
    section.notes.append(
        "CPU/request: CPU time of the gateway process over every request of the c=64 runs; OTLP exports: "
        "the requests its collector got (batches of spans); each figure is the median of rounds in which "
        "every gateway is measured in turn, after a warm-up, against the same receiver"
    )
