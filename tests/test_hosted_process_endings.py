"""How a hosted hook's process that ended on its own is reported: with its real cause (a script that
exits is not "killed"), and with its last console line, which may hold what the script printed, but
never the hook's secrets: neither in the recorded attempt nor in the gateway's logs. Needs what
tests/test_hosted_hooks.py needs."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

import pytest
from conftest import Gateway
from test_hosted_hooks import event_of, runtime_settings, sandbox_host, script_hook, sync_attempts

from gateway.runtime.output import OUTPUT_TAIL_BYTES, Output
from gateway.settings import Settings

pytestmark = pytest.mark.sqlite_only
__all__ = ["sandbox_host"]  # the fixture, imported for this module's tests

UID_FIRST = 2_500_100  # a range of this file's own (every hosted-hooks test file has one)
UID_COUNT = 100
POINT = "credentials-exchange"
SECRET = "tok-" + "7f3a9c2e5b1d"  # noqa: S105 - a test value
QUOTED = 'k"ey\\' + "q0Zr6HGm2ZzC"  # noqa: S105 - a test value (escaped in JSON)


@pytest.fixture
async def gw(sandbox_host: None, make_gateway: Callable[..., Awaitable[Gateway]],
             make_settings: Callable[..., Settings]) -> Gateway:
    settings = make_settings(runtime=runtime_settings(uid_first=UID_FIRST, uid_count=UID_COUNT))
    gateway = await make_gateway(settings)
    assert gateway.svc.registry.hosting.refusal is None, gateway.svc.registry.hosting.refusal
    await gateway.create_tenant("acme")
    return gateway


EXITS = """
const fd = process.argv.slice(2).map(Number).find((n) => Number.isInteger(n) && n > 2);
console.log('giving up');
require('fs').closeSync(fd);
const until = Date.now() + 300;
while (Date.now() < until) {}
process.exit(3);
"""


async def test_a_script_that_exits_at_compile_is_reported_with_its_exit_status(gw: Gateway) -> None:
    """Before: the gateway killed the sandbox as soon as the channel ended, before reading the exit
    status, and reported "killed (SIGKILL: its memory cap, or its CPU time ran out)". A node that
    exits closes its channel a moment before its exit status can be read; this script widens that
    moment to make the race certain."""
    hook = await script_hook(gw, POINT, EXITS)
    resp = await gw.forward(POINT, event_of(POINT))
    assert resp.status == 200, await resp.text()
    (attempt,) = await sync_attempts(gw, hook["id"])
    assert attempt["statusCode"] is None
    assert attempt["error"].startswith("the hook's process exited with status 3"), attempt
    assert "giving up" in attempt["error"]


LEAKS = """module.exports = function (client, scope, audience, context, cb) {
  const s = context.webtask.secrets;
  console.log(s.TOKEN);
  console.log('the key is ' + s.TOKEN + ', the short one ' + s.PIN + ', as JSON ' + JSON.stringify(s.QUOTED));
  process.exit(4);
};
"""


async def test_a_script_printing_its_secrets_as_it_exits_leaks_them_nowhere(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the last line of the process's console went as it was into the attempt's error and
    the gateway's "ended" log line."""
    caplog.set_level(logging.DEBUG)
    hook = await script_hook(gw, POINT, LEAKS, secrets={"TOKEN": SECRET, "QUOTED": QUOTED, "PIN": "123"})
    resp = await gw.forward(POINT, event_of(POINT))
    assert resp.status == 200, await resp.text()
    (attempt,) = await sync_attempts(gw, hook["id"])
    error = attempt["error"]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for where in (error, logged, str(attempt)):
        assert SECRET not in where
        assert "q0Zr6HGm2ZzC" not in where  # neither as it is, nor in JSON
    assert error.startswith("the hook's process exited with status 4"), attempt
    # The line is kept, each secret value of 4 characters or more replaced (a shorter one is kept:
    # it would blank out common words)
    assert "the key is [secret], the short one 123, as JSON" in error, error
    assert "the key is [secret]" in logged


async def test_a_secret_cut_at_either_end_of_the_kept_output_is_taken_out_too() -> None:
    """Only the output's last bytes are kept: its first line, cut, may start inside a secret, and a
    process killed in the middle of a write may end inside one."""
    output, write = await Output.open()
    last = "\nlast line " + SECRET[:8]
    middle = "m" * (OUTPUT_TAIL_BYTES - len(SECRET) + 5 - len(last) - 1)
    try:  # the kept bytes start 5 characters into the first secret
        os.write(write, (SECRET + "\n" + middle + last).encode())
    finally:
        os.close(write)
    await asyncio.wait_for(output.ended, 10)
    assert output.tail([SECRET]) == middle + "\nlast line [secret]"
