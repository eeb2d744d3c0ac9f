"""Scenario 9: hosted hooks (gateway/runtime/): a credentials-exchange hook's `script` run by the
gateway in its sandbox, against the same hook as a loopback HTTP receiver, in one gateway.

- cold start: hook created (with its secrets) -> first call answered, through the API; and the
  part of it from the process's start to its `ready` (the script compiled), timed in-process;
- warm calls: p50/p99 at c=1, req/s and p50/p99 at c=64 through the blocking endpoint, hosted and
  receiver taken in turns; the CPU of the gateway and of the hook (node's sandbox or the
  receiver) per call;
- memory: the sandboxes of N warm hooks (PSS, RSS and private pages from smaps_rollup).

Needs root, bubblewrap and the runtime's packages (`make node`), as hosted hooks do.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.runtime import hosting, limits
from gateway.runtime.process import HookProcess
from gateway.runtime.sandbox import ENVIRONMENT
from gateway.runtime.supervisor import COMPILERS
from gateway.runtime.users import TenantUids
from gateway.settings import RuntimeSettings

from . import bodies, peers, sandboxes
from .cpu import Meter
from .gateway import TENANT, Gateway
from .loadgen import Load, run_load
from .procs import ANY_CORE, Pinning, all_cores
from .results import Context, Section, Target, ms, rate, ratio

TRIGGER = "credentials-exchange"
URL_TENANT = "bench-url"  # the same hook as a loopback HTTP receiver, beside TENANT's hosted one
ADDED_P50_TARGET_MS = 1.0  # hosted warm p50 at c=1 - receiver's <= this
UID_FIRST = 1_800_000  # a range of the benchmark's own (the tests use 1_500_000 to 1_700_000 and 1_900_000)
MEMORY_HOOKS = 20  # warm hooks whose sandboxes' memory is measured
# The hook: one claim added, its value from the hook's secrets (context.webtask.secrets).
SCRIPT = """module.exports = function (client, scope, audience, context, cb) {
  var token = { scope: scope || [] };
  token['https://example.com/claim'] = context.webtask.secrets.CLAIM;
  cb(null, token);
};
"""
EXPECTED = {"status": "success", "data": {"scope": ["read", "write"], "https://example.com/claim": "x"}}
HOSTED, RECEIVER = "hosted script", "loopback receiver"


def runtime_toml() -> str:
    return f"""
[runtime]
enabled = true
uid_first = {UID_FIRST}
uid_count = 1000
"""


def secrets_of() -> dict[str, str]:
    return {"auth0-extension-secret": secrets.token_urlsafe(24), "CLAIM": "x"}


def run(ctx: Context) -> Section:
    quick = (3.0, 2.0, 0.5, 1, 1, 3)
    d64, d1, warm, rounds64, rounds1, n_cold = quick if ctx.quick else (4.0, 2.0, 1.0, 3, 7, 7)
    wd = ctx.workdir / "s9"
    wd.mkdir(parents=True, exist_ok=True)
    # Every process floats over every core: the sandboxes are the gateway's children, so pinning
    # the gateway would put them on its core while the receiver has a core of its own.
    floating = Pinning(ANY_CORE, ANY_CORE) if ctx.pin.active else ctx.pin
    ctx = Context(quick=ctx.quick, pin=floating, workdir=ctx.workdir, profile=False, shared=ctx.shared)
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        raise RuntimeError("hosted hooks need root and bubblewrap (apt-get install bubblewrap)")
    body = bodies.write(wd, "cx", bodies.CREDENTIALS_EXCHANGE)
    section = Section("9", "Hosted hooks: a credentials-exchange script in the sandbox, and the same hook "
                           "as a loopback receiver")
    procs = []
    gw = Gateway.prepare(wd / "gateway", extra=runtime_toml())
    try:
        recv, recv_base = peers.start_receiver(ctx, wd)
        procs.append(recv)
        gw.start(ctx.pin.server_core)
        assert gw.proc is not None
        gw_pid = gw.proc.pid
        cold = _cold_starts(gw, recv_base, n_cold)
        start_ready, start_cpu = _start_to_ready(ctx, gw.settings().runtime, n_cold)
        node_alone = _node_alone(ctx, n_cold)
        memory = _memory(gw, n_cold)
        before = frozenset(sandboxes.trees(gw_pid))  # the warm hooks, idle from now on
        idle0, idle_t0 = _idle_cpu(gw_pid, before), time.monotonic()

        gw.create_tenant()
        gw.create_script_hook(TRIGGER, SCRIPT, secrets=secrets_of())
        gw.create_tenant(URL_TENANT)
        gw.create_hook(TRIGGER, f"{recv_base}/claim", tenant=URL_TENANT)
        for tenant in (TENANT, URL_TENANT):
            answer = gw.post(f"/v1/tenants/{tenant}/triggers/{TRIGGER}", bodies.CREDENTIALS_EXCHANGE, tenant)
            if answer != EXPECTED:
                raise RuntimeError(f"{tenant}: the gateway answered {answer}, not {EXPECTED}")
        paths = {
            HOSTED: (f"{gw.base}/v1/tenants/{TENANT}/triggers/{TRIGGER}", gw.service_header(TENANT), None),
            RECEIVER: (f"{gw.base}/v1/tenants/{URL_TENANT}/triggers/{TRIGGER}", gw.service_header(URL_TENANT),
                       recv.pid),
        }
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        started = hosted_calls = 0  # sandboxes started (recycling) during the hosted runs, and their calls
        for conc, dur, rounds in ((64, d64, rounds64), (1, d1, rounds1)):
            for _ in range(rounds):
                for name, (url, header, peer_pid) in paths.items():
                    load = Load(url, body, (header,), concurrency=conc, duration_s=dur, warmup_s=warm)
                    with sandboxes.CpuSampler(gw_pid, exclude=before) as hosted, \
                            Meter([gw_pid] + ([peer_pid] if peer_pid else [])) as meter:
                        result = run_load(load, ctx.pin.peer_core)
                    calls = max(1, result["total"])
                    hook_s = hosted.total_s if peer_pid is None else meter.usage.process_s.get(peer_pid, 0.0)
                    if peer_pid is None:
                        started += hosted.started
                    result["gw_cpu_us"] = meter.usage.process_s.get(gw_pid, 0.0) / calls * 1e6
                    result["hook_cpu_us"] = hook_s / calls * 1e6
                    runs.setdefault((name, conc), []).append(result)
                    if peer_pid is None:
                        hosted_calls += result["total"]
                    bad = result["requests"] - result["ok"] + result["errors"]
                    if bad:
                        section.notes.append(f"{name} c={conc}: {bad} answers were not 200 "
                                             f"({result['statuses']}, {result['errors']} errors)")
        idle_s = (_idle_cpu(gw_pid, before) - idle0) / len(before)
        idle_ms_per_s = idle_s / (time.monotonic() - idle_t0) * 1000
        loaded = [t for top, t in sandboxes.trees(gw_pid).items() if top not in before]
        loaded_memory = [sandboxes.tree_memory(t) for t in loaded]
        runtime = gw.settings().runtime
    finally:
        gw.stop()
        for p in reversed(procs):
            p.stop()
    figures = {name: {c: _median(runs[(name, c)]) for c in (64, 1)} for name in paths}
    _table(section, figures)
    _cold_table(section, cold, start_ready, start_cpu, node_alone)
    _memory_table(section, memory, loaded_memory, idle_ms_per_s)
    section.notes.append(
        f"one gateway, [runtime] at its defaults but its uid range (recycle_calls {runtime.recycle_calls}, "
        f"max_processes {runtime.max_processes}, memory_mib {runtime.memory_mib}), every layer of the "
        "sandbox on; the hosted hook and the receiver hook belong to two tenants of it and are loaded in "
        "turns, each figure the median of the rounds. Both add one claim: the script with a value from "
        "its secrets, through Auth0's compiler; the receiver (bench/receiver.py, under /claim) by parsing "
        "the body. The gateway's answers are the same"
    )
    section.notes.append(
        "CPU per call: the gateway process (event loop and database threads); the hook: every process of "
        "the hook's sandboxes, sampled every 20 ms (a recycled one up to its last sample), or the receiver "
        "process. Every process of this scenario (gateway and its sandboxes, receiver, load generator) "
        "floats over all cores, as in scenario 6: the hook's CPU competes with the gateway's either way. "
        f"c=64: {rounds64} round(s) of {d64:g} s; c=1: {rounds1} round(s) of {d1:g} s, after {warm:g} s of "
        "warm-up each"
    )
    cpu_ms = statistics.median(start_cpu) * 1000
    section.notes.append(
        f"recycling: {started} sandboxes started during the hosted runs' {hosted_calls:,} calls (one per "
        f"recycle_calls = {runtime.recycle_calls:,}). A start costs {cpu_ms:.0f} ms of CPU, "
        f"{cpu_ms * 1000 / runtime.recycle_calls:.0f} us per call at this recycle_calls (in the hook CPU "
        "above). No call waits for it: the recycled process answers until its successor is ready"
    )
    return section


# -- cold start -----------------------------------------------------------------------------------


def _cold_starts(gw: Gateway, recv_base: str, n: int) -> dict[str, list[float]]:
    """Seconds from the hook's creation (with its secrets) to its first call answered, each on a
    tenant of its own (a blocking call runs every hook of the point); a receiver hook likewise."""
    out: dict[str, list[float]] = {HOSTED: [], RECEIVER: [], "api": []}
    for i in range(n):
        for name in (HOSTED, RECEIVER):
            tenant = f"cold-{i}" if name == HOSTED else f"cold-url-{i}"
            gw.create_tenant(tenant)
            t0 = time.perf_counter()
            if name == HOSTED:
                gw.create_script_hook(TRIGGER, SCRIPT, tenant=tenant, secrets=secrets_of())
            else:
                gw.create_hook(TRIGGER, f"{recv_base}/claim", tenant=tenant)
            t1 = time.perf_counter()
            answer = gw.post(f"/v1/tenants/{tenant}/triggers/{TRIGGER}", bodies.CREDENTIALS_EXCHANGE, tenant)
            t2 = time.perf_counter()
            if answer != EXPECTED:
                raise RuntimeError(f"{tenant}: the first call answered {answer}")
            out[name].append(t2 - t0)
            if name == HOSTED:
                out["api"].append(t1 - t0)
    return out


def _start_to_ready(ctx: Context, r: RuntimeSettings, n: int) -> tuple[list[float], list[float]]:
    """Seconds from HookProcess.start to the script compiled (`ready`), with the gateway's own
    sandbox settings, from this process on the gateway's cores; and the CPU seconds each
    start took (every process of the sandbox, up to `ready`)."""
    config = replace(hosting.sandbox_config(r), cgroups=limits.detect_cgroups())
    uid = TenantUids(r.uid_first, r.uid_count).uid_for("bench-ready")
    # Not under `wd`: the tenant's uid must reach the folder (the gateway's base folder is the same).
    base = Path(tempfile.mkdtemp(prefix="gateway-bench-ready-"))
    base.chmod(0o711)  # noqa: S103 - traversable by the tenant's uid, listable by none
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, _cores(ctx))

    async def measure() -> tuple[list[float], list[float]]:
        times, cpu = [], []
        for i in range(n):
            folder = base / f"hook-{i}"
            folder.mkdir(mode=0o755)
            (folder / "script.js").write_text(SCRIPT)
            (folder / "script.js").chmod(0o644)
            t0 = time.perf_counter()
            proc = await HookProcess.start(config, hook_id=f"ready-{i}", digest="bench", uid=uid,
                                           runtime_dir=hosting.RUNTIME_DIR, hook_dir=folder,
                                           compiler=COMPILERS[TRIGGER], cleanup=lambda: None)
            try:
                if not await proc.wait_ready(30.0):
                    reason = proc.ended.result() if proc.ended.done() else "no answer in 30 s"
                    raise RuntimeError(f"the hook's process did not get ready: {reason}")
                times.append(time.perf_counter() - t0)
                tree = [proc.pid, *(p for t in sandboxes.trees(proc.pid).values() for p in t)]
                cpu.append(sum(sandboxes.own_cpu_s(p) or 0.0 for p in tree))
            finally:
                await proc.close()
        return times, cpu

    try:
        return asyncio.run(measure())
    finally:
        os.sched_setaffinity(0, affinity)
        shutil.rmtree(base, ignore_errors=True)


def _cores(ctx: Context) -> set[int]:
    """The cores the gateway may run on."""
    if ctx.pin.server_core is None or ctx.pin.server_core == ANY_CORE:
        return {int(c) for c in all_cores().split(",")}
    return {ctx.pin.server_core}


def _node_alone(ctx: Context, n: int) -> list[float]:
    """Seconds from starting node, outside any sandbox but with its environment, to its first
    line of JavaScript running (it writes a byte), where the gateway runs."""
    node = shutil.which("node") or "/usr/bin/node"
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, _cores(ctx))
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            # The sandbox's environment: the host's may hold NODE_EXTRA_CA_CERTS, read at start
            with subprocess.Popen([node, "-e", "process.stdout.write('r')"],  # noqa: S603 - node, no input
                                  stdout=subprocess.PIPE, env=dict(ENVIRONMENT)) as child:
                assert child.stdout is not None
                child.stdout.read(1)
                out.append(time.perf_counter() - t0)
                child.wait(timeout=30)
    finally:
        os.sched_setaffinity(0, affinity)
    return out


def _cold_table(section: Section, cold: dict[str, list[float]], start_ready: list[float],
                start_cpu: list[float], node_alone: list[float]) -> None:
    def row(what: str, values: list[float], detail: str) -> list[str]:
        return [what, ms(statistics.median(values) * 1000), ms(min(values) * 1000), ms(max(values) * 1000),
                str(len(values)), detail]

    section.extra_tables.append((["cold start", "median", "min", "max", "samples", "what"], [
        row("hosted: hook created -> first call answered", cold[HOSTED],
            "through the API: POST the hook, POST its secrets, then the blocking call"),
        row("... of which the two API calls", cold["api"],
            "the process starts (pre-warm) when the hook is created"),
        row("... process start -> ready", start_ready,
            "HookProcess.start to the script compiled: sandbox set up, node started, compilers loaded"),
        row("CPU of one start", start_cpu, "every process of the sandbox, up to ready (CPU time, not wall)"),
        row("node alone, outside the sandbox", node_alone, "node started -> its first JavaScript ran"),
        row("receiver: hook created -> first call answered", cold[RECEIVER],
            "through the API: POST the hook, then the blocking call"),
    ]))


# -- memory ---------------------------------------------------------------------------------------


def _memory(gw: Gateway, already: int) -> list[tuple[sandboxes.Memory, sandboxes.Memory]]:
    """The warm hooks' sandboxes (each created and called once): (whole tree, node alone) each."""
    assert gw.proc is not None
    for i in range(already, MEMORY_HOOKS):
        tenant = f"cold-{i}"
        gw.create_tenant(tenant)
        gw.create_script_hook(TRIGGER, SCRIPT, tenant=tenant, secrets=secrets_of())
        answer = gw.post(f"/v1/tenants/{tenant}/triggers/{TRIGGER}", bodies.CREDENTIALS_EXCHANGE, tenant)
        if answer != EXPECTED:
            raise RuntimeError(f"{tenant}: answered {answer}")
    out = []
    for tree in sandboxes.trees(gw.proc.pid).values():
        node = sandboxes.node_of(tree)
        node_memory = sandboxes.smaps(node) if node is not None else None
        if node_memory is not None:
            out.append((sandboxes.tree_memory(tree), node_memory))
    if len(out) != MEMORY_HOOKS:
        raise RuntimeError(f"{len(out)} sandboxes found under the gateway, not {MEMORY_HOOKS}")
    return out


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def _idle_cpu(gw_pid: int, tops: frozenset[int]) -> float:
    """CPU seconds the sandboxes `tops` have used so far."""
    return sum(sandboxes.own_cpu_s(p) or 0.0 for top, tree in sandboxes.trees(gw_pid).items() if top in tops
               for p in tree)


def _memory_table(section: Section, memory: list[tuple[sandboxes.Memory, sandboxes.Memory]],
                  loaded: list[sandboxes.Memory], idle_ms_per_s: float) -> None:
    trees = [t for t, _ in memory]
    nodes = [n for _, n in memory]

    def med(values: list[int]) -> str:
        return _mib(statistics.median(values))

    rows = [
        ["whole sandbox (bubblewrap, its pid 1, node)", med([t.pss for t in trees]),
         med([t.rss for t in trees]), med([t.private for t in trees])],
        ["node alone", med([n.pss for n in nodes]), med([n.rss for n in nodes]),
         med([n.private for n in nodes])],
    ]
    if loaded:
        rows.append(["the loaded hook's sandbox after the runs (its current process)",
                     _mib(sum(t.pss for t in loaded)), _mib(sum(t.rss for t in loaded)),
                     _mib(sum(t.private for t in loaded))])
    section.extra_tables.append((
        [f"memory per warm hook ({len(memory)} hooks)", "PSS", "RSS", "private (USS)"], rows))
    total = sum(t.pss for t in trees)
    section.notes.append(
        f"memory: {len(memory)} hooks of as many tenants, each created and called once, then each "
        f"sandbox's /proc/<pid>/smaps_rollup; medians per hook. PSS splits the pages node's binary and "
        f"libraries share among the sandboxes: {_mib(total)} for the {len(memory)} together, "
        f"{_mib(total / len(memory))} per hook; RSS counts them in full in each. Idle, during the runs "
        f"below, a warm hook's sandbox used {idle_ms_per_s:.1f} ms of CPU per second (node's timers: V8's "
        "garbage collector and memory reducer)"
    )


# -- warm calls -----------------------------------------------------------------------------------


def _median(results: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("rate", "p50_ms", "p99_ms", "gw_cpu_us", "hook_cpu_us")
    return {key: statistics.median(r[key] for r in results) for key in keys}


def _table(section: Section, f: dict[str, dict[int, dict[str, float]]]) -> None:
    recv1, recv64 = f[RECEIVER][1], f[RECEIVER][64]
    section.headers = ["hook", "p50 c=1", "p99 c=1", "added p50 c=1", "req/s c=64", "vs receiver", "p50 c=64",
                       "p99 c=64", "gateway CPU/call", "hook CPU/call", "total CPU/call"]
    for name in (RECEIVER, HOSTED):
        c1, c64 = f[name][1], f[name][64]
        section.rows.append([
            name, ms(c1["p50_ms"]), ms(c1["p99_ms"]),
            "-" if name == RECEIVER else ms(c1["p50_ms"] - recv1["p50_ms"]),
            rate(c64["rate"]), ratio(c64["rate"] / recv64["rate"]), ms(c64["p50_ms"]), ms(c64["p99_ms"]),
            f"{c64['gw_cpu_us']:.0f} us", f"{c64['hook_cpu_us']:.0f} us",
            f"{c64['gw_cpu_us'] + c64['hook_cpu_us']:.0f} us",
        ])
    hosted1 = f[HOSTED][1]
    added = hosted1["p50_ms"] - recv1["p50_ms"]
    section.targets.append(Target(
        "hosted hook's warm added p50 at c=1 (hosted - loopback receiver) <= 1 ms",
        f"{ms(added)} ({ms(hosted1['p50_ms'])} vs {ms(recv1['p50_ms'])}, "
        f"{ratio(hosted1['p50_ms'] / recv1['p50_ms'])})",
        f"<= {ADDED_P50_TARGET_MS:g} ms", added <= ADDED_P50_TARGET_MS,
    ))
    hosted64 = f[HOSTED][64]
    section.notes.append(
        f"hosted vs receiver: p50 at c=1 {ratio(hosted1['p50_ms'] / recv1['p50_ms'])}, p99 at c=1 "
        f"{ratio(hosted1['p99_ms'] / recv1['p99_ms'])}; at c=64 {ratio(hosted64['rate'] / recv64['rate'])} "
        f"the calls/s, p50 {ratio(hosted64['p50_ms'] / recv64['p50_ms'])}, p99 "
        f"{ratio(hosted64['p99_ms'] / recv64['p99_ms'])}"
    )
