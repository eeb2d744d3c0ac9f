"""The harness of the Node integrations' tests (integrations/): real auth servers on Node
(integrations/*/example-server.mjs), a gateway process, and the hooks that point it at a test's
loopback receivers.

Where node or integrations/node_modules is missing (`make node` installs it) the tests are
skipped, or fail when `TEST_INTEGRATIONS=required` (CI), as tests/pgserver.py does for
PostgreSQL: a skip there would hide a gap.
"""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from instances import Deployment, Instance

from gateway.auth import SCOPE_FORWARD

ROOT = Path(__file__).resolve().parent.parent
INTEGRATIONS = ROOT / "integrations"
NODE_MODULES = INTEGRATIONS / "node_modules"
REQUIRED = os.environ.get("TEST_INTEGRATIONS") == "required"  # CI sets it
START_TIMEOUT_S = 30.0
TENANT = "acme"


def require_integrations(*packages: str) -> None:
    """Skip the test when node or an npm package of integrations/ is missing, or fail it when
    `TEST_INTEGRATIONS=required`."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node is not installed (apt-get install nodejs)")
    for package in (*packages, "@hooks-gateway/node-client") if packages else ():
        if not (NODE_MODULES / package).exists():
            missing.append(f"integrations/node_modules/{package} is missing (make node)")
    if not missing:
        return
    message = "; ".join(missing)
    if REQUIRED:
        pytest.fail(f"{message} (TEST_INTEGRATIONS=required)", pytrace=False)
    pytest.skip(f"{message} (set TEST_INTEGRATIONS=required to fail instead)")


@dataclass
class NodeServer:
    """A Node example server in a process of its own; it prints `READY <url>` once it listens."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, script: Path, env: dict[str, str], log: Path) -> NodeServer:
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        with open(log, "wb") as err:
            proc = subprocess.Popen(  # noqa: S603 - our own example server
                ["node", script.name], cwd=script.parent, env=full_env,  # noqa: S607 - node from PATH
                stdout=subprocess.PIPE, stderr=err,
            )
        assert proc.stdout is not None
        end = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < end and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline().decode(errors="replace").strip()
                if line.startswith("READY "):
                    return cls(url=line.split(" ", 1)[1], proc=proc, log=log)
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        raise AssertionError(f"{script.name} did not start: {log.read_text(errors='replace')[-3000:]}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def node_server(script: Path, env: dict[str, str], log: Path) -> Iterator[NodeServer]:
    server = NodeServer.start(script, env, log)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class GatewayProcess:
    """`gateway serve` on a SQLite file, with tenant `acme`; receivers on loopback are allowed."""

    deployment: Deployment
    instance: Instance

    @property
    def base(self) -> str:
        return self.instance.base

    def service_token(self) -> str:
        return self.deployment.token(TENANT, (SCOPE_FORWARD,))

    def auth(self) -> dict[str, str]:
        return self.deployment.auth(TENANT)

    def gateway_env(self) -> dict[str, str]:
        """What an example server needs to reach this gateway."""
        return {"GATEWAY_URL": self.base, "GATEWAY_TOKEN": self.service_token(), "GATEWAY_TENANT": TENANT}


@contextmanager
def gateway_process(workdir: Path, **overrides: dict[str, Any]) -> Iterator[GatewayProcess]:
    deployment = Deployment(database_url=f"sqlite:///{workdir / 'gateway.db'}", workdir=workdir,
                            overrides={"delivery": {"poll_interval": "200ms"}, **overrides})
    instance = asyncio.run(deployment.start())
    try:
        response = httpx.post(f"{instance.base}/api/v2/tenants", json={"id": TENANT, "name": "Acme"},
                              headers=deployment.operator())
        assert response.status_code == 201, response.text
        yield GatewayProcess(deployment=deployment, instance=instance)
    finally:
        deployment.stop_all()


@asynccontextmanager
async def hook(gw: GatewayProcess, trigger: str, url: str, **fields: Any) -> AsyncIterator[dict[str, Any]]:
    """An enabled hook of the point for the length of the block (the next test starts clean)."""
    body = {"name": f"test-{trigger}", "triggerId": trigger, "url": url, "enabled": True, **fields}
    async with httpx.AsyncClient(base_url=gw.base, headers=gw.auth()) as http:
        response = await http.post("/api/v2/hooks", json=body)
        assert response.status_code == 201, response.text
        created = response.json()
        signing = await http.get(f"/api/v2/hooks/{created['id']}/signing-secret")
        assert signing.status_code == 200, signing.text
        created["signingSecret"] = signing.json()["secret"]
        try:
            yield created
        finally:
            deleted = await http.delete(f"/api/v2/hooks/{created['id']}")
            assert deleted.status_code in (200, 204), deleted.text


async def deliveries_of(gw: GatewayProcess, hook_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=gw.base, headers=gw.auth()) as http:
        response = await http.get("/api/v2/deliveries", params={"hookId": hook_id})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


def envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": data}


def error_envelope(name: str, message: str, friendly: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"name": name, "message": message}
    if friendly is not None:
        data["friendlyMessage"] = friendly
    return {"status": "error", "data": data}
