"""What one hosted hook's process may cost the gateway, and how long it may serve: a script flooding
its console costs the gateway little of its CPU and reads (the rest waits in a full pipe), while
other hooks answer; its channel carries frames no larger than an answer may be, and only what was
asked for (a second `ready`, an answer to a call never made, end the process; a late answer to a
call given up is not one); and a process is handed over to a successor before its lifetime's CPU
time ([runtime] cpu_seconds) runs out, so a busy, legitimate script is never killed mid-call.
Needs what tests/test_hosted_hooks.py needs."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Gateway
from test_hosted_hooks import children, event_of, invoke, runtime_settings, sandbox_host, script_hook

from gateway.egress import MAX_SYNC_BODY_BYTES
from gateway.runtime.hosting import Hosting, start_hosting
from gateway.runtime.output import OUTPUT_BURST_BYTES, OUTPUT_BYTES_PER_S, PIPE_READ_BYTES
from gateway.runtime.process import RuntimeFailure
from gateway.runtime.supervisor import HostedHook
from gateway.settings import RuntimeSettings, Settings

pytestmark = pytest.mark.sqlite_only
__all__ = ["sandbox_host"]  # the fixture, imported for this module's tests

UID_FIRST = 2_500_000  # a range of this file's own (every hosted-hooks test file has one)
UID_COUNT = 100
POINT = "credentials-exchange"
SECRETS = {"auth0-extension-secret": "extension-secret"}  # noqa: S105 - a test value
MAX_POLLS = 1000  # looks, 10 ms apart, for a process to be up or flooding
FLOOD_WINDOW_S = 2.0  # how long the gateway's CPU is measured while a script floods its console
# The gateway's CPU while a script floods, as a share of the wall time: the design reads at most
# OUTPUT_BYTES_PER_S, in reads charged at least 4 KiB each (at most 256 wake-ups a second, ~30 µs
# each: under 1 %); a tenth leaves room for the rest of the gateway idling meanwhile. Reading the
# flood as fast as it came cost half of a core.
FLOOD_CPU_SHARE = 0.1

# Answers at once, then floods its console from the next turn of its event loop on, forever.
FLOOD = """
const line = 'flood '.repeat(10922) + '\\n';
setImmediate(function flood() {
  while (process.stdout.write(line)) {}
  process.stdout.once('drain', flood);
});
module.exports = function (client, scope, audience, context, cb) { cb(null, {}); };
"""
BYSTANDER = """module.exports = function (client, scope, audience, context, cb) {
  cb(null, { 'https://example.com/claim': 'answered' });
};"""


@pytest.fixture
async def gateway_hosting(sandbox_host: None, make_gateway: Callable[..., Awaitable[Gateway]],
                          make_settings: Callable[..., Settings]) -> Gateway:
    gw = await make_gateway(make_settings(runtime=runtime_settings(uid_first=UID_FIRST, uid_count=UID_COUNT)))
    assert gw.svc.registry.hosting.refusal is None, gw.svc.registry.hosting.refusal
    await gw.create_tenant("acme")
    await gw.create_tenant("bystander")
    return gw


@pytest.fixture
async def hosting(sandbox_host: None) -> AsyncIterator[Hosting]:
    hosting = await start_hosting(RuntimeSettings(**runtime_settings(
        uid_first=UID_FIRST, uid_count=UID_COUNT, cpu_seconds=2)))
    assert hosting.refusal is None, hosting.refusal
    try:
        yield hosting
    finally:
        await hosting.close()


def node_of(bwrap: int) -> int:
    """The node process of a hook's sandbox (bubblewrap -> the sandbox's pid 1 -> node)."""
    (init,) = children(bwrap)
    (node,) = children(init)
    return node


def written(pid: int) -> int:
    """Bytes the process has written so far (its console and its channel)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/<pid>/io")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # the gateway's (this process's), not the children's
    return usage.ru_utime + usage.ru_stime


async def test_a_script_flooding_its_console_costs_the_gateway_little_and_others_keep_answering(
    gateway_hosting: Gateway,
) -> None:
    """Before: the gateway read the flood as fast as it came, in 4 KiB reads: half of a core."""
    gw = gateway_hosting
    supervisor = gw.svc.registry.hosting.supervisor
    assert supervisor is not None
    await script_hook(gw, POINT, BYSTANDER, tenant="bystander", name="bystander")
    assert (await invoke(gw, POINT, event_of(POINT), tenant="bystander"))["status"] == "success"
    flooding = await script_hook(gw, POINT, FLOOD, name="flood")
    node = None
    for _ in range(MAX_POLLS):  # until its pre-warmed process floods
        bwrap = supervisor.live().get(flooding["id"])
        if bwrap is not None and len(children(bwrap)) == 1 and children(children(bwrap)[0]):
            node = node_of(bwrap)
            if written(node) > OUTPUT_BURST_BYTES:
                break
        await asyncio.sleep(0.01)
    assert node is not None, "the flooding script never started"

    cpu0, wall0, bytes0 = cpu_seconds(), time.monotonic(), written(node)
    await asyncio.sleep(FLOOD_WINDOW_S)
    cpu1, wall1, bytes1 = cpu_seconds(), time.monotonic(), written(node)
    wall = wall1 - wall0
    share = (cpu1 - cpu0) / wall
    # What the script could write: what the gateway read (its budget, and one read past it), and
    # what the pipe holds.
    budget = OUTPUT_BURST_BYTES + OUTPUT_BYTES_PER_S * wall + PIPE_READ_BYTES + (1 << 20)
    assert bytes1 - bytes0 <= budget, f"the script wrote {(bytes1 - bytes0) >> 20} MiB in {wall:.1f} s"
    assert share <= FLOOD_CPU_SHARE, f"the gateway used {share:.0%} of a core while a script flooded"

    for _ in range(20):  # the other tenant's hook answers, the flood still on
        answer = await invoke(gw, POINT, event_of(POINT), tenant="bystander")
        assert answer["status"] == "success" and answer["data"]["https://example.com/claim"] == "answered"
    assert supervisor.live().get(flooding["id"]) is not None and children(children(bwrap)[0]) == [node]


# --- the channel carries answers of a bounded size, and only to calls made ----------------------

# Writes a frame of its own on its channel (the descriptor is in its argv) when a call asks for it,
# then answers the call.
FORGE = """
const fd = process.argv.slice(2).map(Number).find((n) => Number.isInteger(n) && n > 2);
function forge(frame) {
  const json = Buffer.from(frame.json || '');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(frame.length === undefined ? json.length : frame.length, 0);
  require('fs').writeSync(fd, Buffer.concat([head, json]));
}
module.exports = function (client, scope, audience, context, cb) {
  if (client.forge) forge(client.forge);
  const answer = () => cb(null, { 'https://example.com/pad': '"'.repeat(client.pad || 0), id: client.id });
  if (client.delay) setTimeout(answer, client.delay); else answer();
};
"""
FORGED = {
    "a second ready": {"json": json.dumps({"ready": True})},
    "an answer to a call never made": {"json": json.dumps({"id": 999, "status": 200, "body": "{}"})},
    # far over what an answer of MAX_SYNC_BODY_BYTES can be, however it is escaped; never sent
    "a frame larger than any answer": {"length": 8 * MAX_SYNC_BODY_BYTES},
}


def hook(script: str, name: str = "forge") -> HostedHook:
    return HostedHook("acme", name, POINT, script, SECRETS)


def body(**client: Any) -> bytes:
    return json.dumps({**event_of(POINT), "client": {"id": "c1", **client}}).encode()


async def call(hosting: Hosting, h: HostedHook, **client: Any) -> dict[str, Any]:
    answer = await hosting.call(h, body(**client), timeout_s=20.0, body_cap=MAX_SYNC_BODY_BYTES)
    assert answer.status == 200, answer
    data: dict[str, Any] = json.loads(answer.body)
    return data


@pytest.mark.parametrize("forged", list(FORGED))
async def test_a_frame_nobody_asked_for_ends_the_process(hosting: Hosting, forged: str) -> None:
    """Before: a second `ready` and an answer to no call were ignored, so a script could send them
    without end; a frame was read up to 8 MiB (some 60 ms of the gateway's event loop)."""
    h = hook(FORGE)
    assert (await call(hosting, h))["status"] == "success"
    supervisor = hosting.supervisor
    assert supervisor is not None
    pid = supervisor.live()[h.hook_id]
    with pytest.raises(RuntimeFailure, match="broke the protocol"):
        await call(hosting, h, forge=FORGED[forged])
    assert supervisor.live().get(h.hook_id) != pid
    assert (await call(hosting, h))["status"] == "success"  # a new process serves the hook


async def test_the_largest_answer_fits_in_a_frame_and_a_late_answer_to_a_call_given_up_is_ignored(
    hosting: Hosting,
) -> None:
    h = hook(FORGE)
    # An answer of nearly MAX_SYNC_BODY_BYTES, each of whose characters is escaped twice on the way
    # (in the answer's JSON, then in the frame's): four times as large in its frame.
    pad = MAX_SYNC_BODY_BYTES // 2 - 1024
    big = await call(hosting, h, pad=pad)
    assert big["data"]["https://example.com/pad"] == '"' * pad
    supervisor = hosting.supervisor
    assert supervisor is not None
    pid = supervisor.live()[h.hook_id]
    # A call whose caller gave up before its answer came (the answer comes later, on the channel).
    given_up = asyncio.ensure_future(call(hosting, h, id="late", delay=200))
    await asyncio.sleep(0.01)
    given_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await given_up
    # Answered after the late answer (later timer, same channel): the process still serves.
    after = await call(hosting, h, id="after", delay=400)
    assert after["data"]["id"] == "after"
    assert supervisor.live()[h.hook_id] == pid


# --- the lifetime's CPU time -----------------------------------------------------------------------

# Burns 50 ms of CPU per call: [runtime] cpu_seconds = 2 is used up in 40 calls.
BURNS_CPU = """
const TAG = String(Math.random());  // this process's
module.exports = function (client, scope, audience, context, cb) {
  const start = process.cpuUsage();
  for (;;) {
    const used = process.cpuUsage(start);
    if (used.user + used.system >= 50000) break;
  }
  cb(null, { 'https://example.com/process': TAG });
};
"""


async def test_a_process_is_handed_over_before_its_cpu_time_runs_out(hosting: Hosting) -> None:
    """Before: RLIMIT_CPU killed the process in the middle of a call (SIGXCPU), a failed call."""
    h = hook(BURNS_CPU, name="burner")
    tags = []
    for _ in range(100):
        answer = await call(hosting, h)
        assert answer["status"] == "success", answer
        tags.append(answer["data"]["https://example.com/process"])
    assert len(set(tags)) >= 2, "the process was never replaced"
