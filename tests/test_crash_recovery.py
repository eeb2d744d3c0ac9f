"""A crash loses nothing: the gateway runs as its own process, is killed with SIGKILL while
deliveries flow, restarts on the same SQLite file, and every event it accepted (202) reaches
the receiver at least once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
from aiohttp import web

from gateway import settings as settings_mod
from gateway.auth import SCOPE_ADMIN, SCOPE_CREATE, SCOPE_FORWARD, SCOPE_READ, SCOPE_UPDATE, mint
from gateway.crypto import new_key

ROOT = Path(__file__).resolve().parent.parent
EVENTS = 300
SENDERS = 16  # concurrent ingest requests
KILL_AFTER = 10  # deliveries the receiver has seen when the gateway is killed...
KILL_AT_ACCEPTED = EVENTS // 2  # ... and events it has accepted: it dies mid-ingest too
START_TIMEOUT_S = 20.0
DELIVERY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f"""
[server]
host = "127.0.0.1"
port = {port}
log_level = "warning"
shutdown_timeout = "1s"
[database]
url = "sqlite:///{tmp_path / "crash.db"}"
[auth]
hs256_secret = "crash-test-secret-that-is-long-enough"
[security]
encryption_key = "{new_key()}"
[egress]
allow_http = true
allow_cidrs = ["127.0.0.0/8"]
[delivery]
lease = "2s"
poll_interval = "50ms"
retry_schedule = ["200ms", "500ms", "1s"]
jitter = 0.0
""")
    return path


class GatewayProcess:
    """`python -m gateway.cli serve --config FILE`, started and stopped by the test."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log_path = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        self._log = self.log_path.open("ab")
        # Popen only forks and returns: it does not block the loop the way run() would.
        self.proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own interpreter and module
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        end = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, f"gateway exited: {self.log_path.read_text()[-2000:]}"
            try:
                async with session.get(f"{self.base}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < end, "the gateway did not start"
            await asyncio.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.wait()

    def wait(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


@pytest.fixture
def gateway_process(tmp_path: Path) -> Callable[[Path, int], GatewayProcess]:
    started: list[GatewayProcess] = []

    def make(config: Path, port: int) -> GatewayProcess:
        gp = GatewayProcess(config, port, tmp_path / "gateway.log")
        started.append(gp)
        return gp

    yield make  # type: ignore[misc]
    for gp in started:
        gp.kill(signal.SIGTERM)


async def test_every_accepted_event_is_delivered_after_a_sigkill(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    make_receiver: Any,
    gateway_process: Callable[[Path, int], GatewayProcess],
) -> None:
    delivered: set[str] = set()

    async def slow(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        await asyncio.sleep(0.02)  # slow enough that some attempts are in flight at the kill
        delivered.add(json.loads(received.body)["user"]["id"])
        return web.json_response({"status": "success", "data": {}})

    rx = await make_receiver(slow)
    port = free_port()
    config = write_config(tmp_path, port)
    settings = settings_mod.load(config, environ={})
    operator = {"Authorization": f"Bearer {mint(settings, tenant=None, scopes=(SCOPE_ADMIN,), ttl_s=600)}"}
    tenant = {
        "Authorization": "Bearer "
        + mint(
            settings, tenant="acme", scopes=(SCOPE_READ, SCOPE_CREATE, SCOPE_UPDATE, SCOPE_FORWARD), ttl_s=600
        )
    }

    gw = gateway_process(config, port)
    await gw.start(session)
    async with session.post(
        f"{gw.base}/api/v2/tenants", json={"id": "acme", "name": "Acme"}, headers=operator
    ) as resp:
        assert resp.status == 201, await resp.text()
    hook = {"name": "crm", "triggerId": "post-user-registration", "url": rx.url(), "enabled": True}
    async with session.post(f"{gw.base}/api/v2/hooks", json=hook, headers=tenant) as resp:
        assert resp.status == 201, await resp.text()

    accepted: set[str] = set()

    async def send(base: str, user_ids: list[str]) -> None:
        gate = asyncio.Semaphore(SENDERS)

        async def one(user_id: str) -> None:
            async with gate:
                body = {"user": {"id": user_id}, "context": {"connection": {"id": "con_1", "name": "db"}}}
                try:
                    async with session.post(
                        f"{base}/v1/tenants/acme/triggers/post-user-registration", json=body, headers=tenant
                    ) as resp:
                        if resp.status == 202:
                            accepted.add(user_id)
                except (TimeoutError, aiohttp.ClientError):
                    pass  # the gateway died under this request: not accepted

        await asyncio.gather(*(one(u) for u in user_ids))

    async def kill_mid_flow() -> None:
        end = time.monotonic() + DELIVERY_TIMEOUT_S
        while len(rx.requests) < KILL_AFTER or len(accepted) < KILL_AT_ACCEPTED:
            assert time.monotonic() < end, "deliveries did not start"
            await asyncio.sleep(0.005)
        gw.kill(signal.SIGKILL)

    users = [f"user-{i}" for i in range(EVENTS)]
    await asyncio.gather(send(gw.base, users), kill_mid_flow())
    accepted_before_kill = len(accepted)
    assert accepted_before_kill >= KILL_AT_ACCEPTED
    assert not accepted <= delivered, "the kill came too late to test anything"

    restarted = gateway_process(config, port)
    await restarted.start(session)
    await send(restarted.base, [u for u in users if u not in accepted])  # the auth server retries

    end = time.monotonic() + DELIVERY_TIMEOUT_S
    while not accepted <= delivered:
        assert time.monotonic() < end, f"{len(accepted - delivered)} accepted events were never delivered"
        await asyncio.sleep(0.05)
    assert len(accepted) == EVENTS
    print(f"accepted {accepted_before_kill} before the kill, {len(rx.requests)} requests for {EVENTS} events")
