"""A hosted hook's process is recycled after `[runtime] recycle_calls` calls without a call waiting
for the start of its successor: the recycled process keeps answering until the successor has
compiled the script, then retires. Needs what tests/test_hosted_hooks.py needs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import Gateway
from test_hosted_hooks import event_of, invoke, runtime_settings, sandbox_host, script_hook

from gateway.settings import Settings

pytestmark = pytest.mark.sqlite_only
__all__ = ["sandbox_host"]  # the fixture, imported for this module's tests

UID_FIRST = 2_200_000  # a range of this file's own (every hosted-hooks test file has one: 1.5 to 2.4 million)
TAG = "https://example.com/process"
# Each process answers with a tag of its own, drawn when it compiles the script; compiling takes a
# second more (a loop at load), so a successor is far from ready when the next call comes.
SLOW_TO_COMPILE = """
const TAG = String(Math.random());
const until = Date.now() + 1000;
while (Date.now() < until) {}
module.exports = function (client, scope, audience, context, cb) {
  cb(null, { 'https://example.com/process': TAG });
};
"""
MAX_POLLS = 400  # calls or looks, 50 ms apart, while the successor gets ready or the old one ends


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def recycling(sandbox_host: None, make_gateway: Callable[..., Awaitable[Gateway]],
                    make_settings: Callable[..., Settings]) -> Gateway:
    settings = make_settings(runtime=runtime_settings(uid_first=UID_FIRST, recycle_calls=2))
    gw = await make_gateway(settings)
    assert gw.svc.registry.hosting.refusal is None, gw.svc.registry.hosting.refusal
    await gw.create_tenant("acme")
    return gw


async def tag(gw: Gateway) -> Any:
    answer = await invoke(gw, "credentials-exchange", event_of("credentials-exchange"))
    assert answer["status"] == "success", answer
    return answer["data"][TAG]


async def test_a_recycled_process_answers_until_its_successor_is_ready(recycling: Gateway) -> None:
    supervisor = recycling.svc.registry.hosting.supervisor
    assert supervisor is not None
    hook = await script_hook(recycling, "credentials-exchange", SLOW_TO_COMPILE, timeoutMs=10_000)
    first = await tag(recycling)  # waits for the pre-warmed process
    old_pid = supervisor.live()[hook["id"]]
    assert await tag(recycling) == first  # its second call: recycle_calls reached
    # The successor is compiling for a second: the calls meanwhile go to the recycled process, and
    # none of them waits for the start.
    assert await tag(recycling) == first
    tags = [first]
    for _ in range(MAX_POLLS):
        tags.append(await tag(recycling))
        if tags[-1] != first:
            break
        await asyncio.sleep(0.05)
    assert tags[-1] != first, "the successor never answered"
    assert supervisor.live()[hook["id"]] != old_pid
    for _ in range(MAX_POLLS):  # the recycled process retires once its successor is ready
        if not alive(old_pid):
            break
        await asyncio.sleep(0.05)
    assert not alive(old_pid), "the recycled process was left running"
