"""The container image: the Dockerfile as `.ci/image` (`make image`) builds it, run with podman
and configured only through `GATEWAY_*` environment variables (production mode, an encryption
key, an HS256 secret), on a loopback port of the host's network. It starts, answers
`/healthz`, serves as a user other than root, and delivers a signed event to a receiver on
loopback through hooks created with the Management API.

The image is `TEST_CONTAINER_IMAGE` (default localhost/hooks-gateway:test). Without podman or
the image these tests skip, or fail when `TEST_CONTAINER=required` (CI builds the image first,
so a skip there would hide a gap)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from conftest import HS256_SECRET, Receiver
from instances import free_port
from standardwebhooks.webhooks import Webhook

from gateway import settings as settings_mod
from gateway.auth import SCOPE_ADMIN, SCOPE_CREATE, SCOPE_FORWARD, SCOPE_READ, mint
from gateway.crypto import new_key

IMAGE = os.environ.get("TEST_CONTAINER_IMAGE", "localhost/hooks-gateway:test")
REQUIRED = os.environ.get("TEST_CONTAINER") == "required"
WAIT_S = 60.0  # bound of every wait below: the container's start, a delivery
PODMAN_S = 120  # bound of one podman command
PUR = "post-user-registration"
EVENT = {"user": {"id": "u1", "email": "a@example.com"},
         "context": {"connection": {"id": "con_1", "name": "db"}}}
UID = 10001  # the Dockerfile's `gateway` user


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (TEST_CONTAINER=required)", pytrace=False)
    pytest.skip(reason)


@dataclass
class Container:
    podman: str
    name: str
    port: int
    env: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def podman_out(self, *args: str) -> str:
        done = subprocess.run(  # noqa: S603 - podman, found on PATH, with our own arguments
            [self.podman, *args], capture_output=True, text=True, timeout=PODMAN_S, check=False
        )
        assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    def logs(self) -> str:
        """The gateway's output (its log lines are on stderr), the last of it."""
        done = subprocess.run(  # noqa: S603 - podman with our own arguments
            [self.podman, "logs", self.name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=PODMAN_S, check=False,
        )
        return done.stdout[-3000:]

    def auth(self, tenant: str | None, scopes: tuple[str, ...]) -> dict[str, str]:
        """A token the gateway in the container accepts: minted from the same settings."""
        settings = settings_mod.load(None, environ=self.env)
        return {"Authorization": f"Bearer {mint(settings, tenant=tenant, scopes=scopes, ttl_s=600)}"}


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    podman = shutil.which("podman")
    if podman is None:
        _missing("podman is not installed")
        return
    found = subprocess.run(  # noqa: S603 - podman with our own arguments
        [podman, "image", "exists", IMAGE], capture_output=True, timeout=PODMAN_S, check=False
    )
    if found.returncode != 0:
        _missing(f"no image {IMAGE} (build it with `make image`)")
    port = free_port()
    env = {
        "GATEWAY_SERVER_HOST": "127.0.0.1",
        "GATEWAY_SERVER_PORT": str(port),
        "GATEWAY_SERVER_MODE": "production",
        "GATEWAY_AUTH_HS256_SECRET": HS256_SECRET,
        "GATEWAY_SECURITY_ENCRYPTION_KEY": new_key(),
        "GATEWAY_EGRESS_ALLOW_HTTP": "true",
        "GATEWAY_EGRESS_ALLOW_CIDRS": '["127.0.0.0/8"]',
    }
    name = f"hooks-gateway-test-{port}"
    # `--env NAME` takes the value from podman's environment: no secret on its command line.
    run = [podman, "run", "--detach", "--name", name, "--network", "host",
           *(f"--env={k}" for k in env), IMAGE]
    started = subprocess.run(  # noqa: S603 - podman with our own arguments
        run, env={**os.environ, **env}, capture_output=True, text=True, timeout=PODMAN_S, check=False
    )
    try:
        if started.returncode != 0:
            pytest.fail(f"podman run {IMAGE}: {started.stderr}", pytrace=False)
        yield Container(podman, name, port, env)
    finally:
        subprocess.run(  # noqa: S603 - podman with our own arguments
            [podman, "rm", "--force", "--volumes", "--time", "5", name],
            capture_output=True, timeout=PODMAN_S, check=False,
        )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:
        yield session


async def healthz(http: aiohttp.ClientSession, c: Container) -> dict[str, Any]:
    """`/healthz` once the gateway in the container answers it, polled for at most `WAIT_S`."""
    end = time.monotonic() + WAIT_S
    while True:
        try:
            async with http.get(f"{c.base}/healthz") as resp:
                assert resp.status == 200, await resp.text()
                answer: dict[str, Any] = await resp.json()
                return answer
        except aiohttp.ClientConnectionError:
            pass
        state = await asyncio.to_thread(c.podman_out, "inspect", "--format", "{{.State.Status}}", c.name)
        assert state == "running", f"the container is {state}: {await asyncio.to_thread(c.logs)}"
        assert time.monotonic() < end, f"no /healthz within {WAIT_S}s: {await asyncio.to_thread(c.logs)}"
        await asyncio.sleep(0.2)


async def test_the_container_starts_answers_healthz_and_serves_as_a_user_other_than_root(
    container: Container, http: aiohttp.ClientSession
) -> None:
    c = container
    assert await healthz(http, c) == {"status": "ok"}

    # Every process of the container, the serving one first, as podman sees it from the host.
    top = await asyncio.to_thread(c.podman_out, "top", c.name, "user", "args")
    processes = [tuple(line.strip().split(None, 1)) for line in top.splitlines()[1:]]
    assert processes[0] == ("gateway", "/opt/gateway/bin/python3 /opt/gateway/bin/gateway serve"), top
    assert all(user == "gateway" for user, _ in processes), top
    # What a command run in the container gets: the same user, not root.
    assert await asyncio.to_thread(c.podman_out, "exec", c.name, "id", "-u") == str(UID)
    assert await asyncio.to_thread(c.podman_out, "exec", c.name, "id", "-un") == "gateway"
    # The image's HEALTHCHECK passes (`podman healthcheck run` fails on an unhealthy answer).
    await asyncio.to_thread(c.podman_out, "healthcheck", "run", c.name)


async def test_the_container_delivers_a_signed_event_to_a_loopback_receiver(
    container: Container, http: aiohttp.ClientSession, make_receiver: Callable[..., Any]
) -> None:
    rx: Receiver = await make_receiver()
    await healthz(http, container)
    operator = container.auth(None, (SCOPE_ADMIN,))
    acme = container.auth("acme", (SCOPE_READ, SCOPE_CREATE, SCOPE_FORWARD))
    async with http.post(f"{container.base}/api/v2/tenants", json={"id": "acme", "name": "Acme"},
                         headers=operator) as resp:
        assert resp.status == 201, await resp.text()
    hook = {"name": "rx", "triggerId": PUR, "url": rx.url("/hook"), "enabled": True}
    async with http.post(f"{container.base}/api/v2/hooks", json=hook, headers=acme) as resp:
        assert resp.status == 201, await resp.text()
        hook_id = (await resp.json())["id"]
    async with http.get(f"{container.base}/api/v2/hooks/{hook_id}/signing-secret", headers=acme) as resp:
        assert resp.status == 200, await resp.text()
        secret = (await resp.json())["secret"]

    base = container.base
    async with http.post(f"{base}/v1/tenants/acme/triggers/{PUR}", json=EVENT, headers=acme) as resp:
        assert resp.status == 202, await resp.text()
        (accepted,) = (await resp.json())["deliveries"]

    (received,) = await rx.wait_for(1, timeout=WAIT_S)
    assert received.path == "/hook"
    assert Webhook(secret).verify(received.body, received.headers) == EVENT
    assert received.headers["webhook-id"] == accepted["deliveryId"]
    end = time.monotonic() + WAIT_S
    while True:  # the container's own record of it
        async with http.get(f"{base}/api/v2/deliveries/{accepted['deliveryId']}", headers=acme) as resp:
            assert resp.status == 200, await resp.text()
            delivery = await resp.json()
        if delivery["status"] == "succeeded":
            break
        assert time.monotonic() < end, f"delivery not succeeded: {delivery}"
        await asyncio.sleep(0.1)
    assert [a["statusCode"] for a in delivery["attempts"]] == [200]
