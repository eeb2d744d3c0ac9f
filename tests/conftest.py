"""Fixtures: settings on a real SQLite file, the gateway app, tokens, real loopback receivers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pgserver import PostgresServer, running_server
from sockets import blackhole

from gateway import settings as settings_mod
from gateway.app import create_app
from gateway.auth import (
    SCOPE_ADMIN,
    SCOPE_CREATE,
    SCOPE_DELETE,
    SCOPE_FORWARD,
    SCOPE_READ,
    SCOPE_UPDATE,
    mint,
)
from gateway.context import SERVICES, Services
from gateway.crypto import new_key
from gateway.delivery import ENGINE, DeliveryEngine
from gateway.invoke import INVOKER, Invoker
from gateway.settings import Settings

pytest_plugins = ["netguard", "secretguard"]

HS256_SECRET = "test-secret-that-is-long-enough-for-hs256"
HOOK_SCOPES = (SCOPE_READ, SCOPE_CREATE, SCOPE_UPDATE, SCOPE_DELETE)
ALL_SCOPES = (*HOOK_SCOPES, SCOPE_FORWARD)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


BACKENDS = ("sqlite", "postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend", choices=(*BACKENDS, "both"), default="both",
        help="the database of the gateways the tests make (make_settings): each test runs on a SQLite"
             " file and on a new database of the test PostgreSQL server (tests/pgserver.py) by default;"
             " `sqlite` or `postgres` runs only that one",
    )


# Run alone by `make test`, after the rest: several gateway processes killed or timed against each
# other, whose windows a busy machine would blur.
SERIAL_MODULES = frozenset({
    "test_crash_loop", "test_crash_recovery", "test_failover", "test_load_balancer", "test_instances",
    "test_receiver_faults_memory", "test_graceful_shutdown",
})


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rpartition(".")[2] in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "serial: run alone (`make test` runs these after the others, in one process)")
    config.addinivalue_line(
        "markers", "sqlite_only: on SQLite only: the test reads the SQLite file itself, or what it tests"
        " never reaches the store (its PostgreSQL twin, if any, is elsewhere)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that makes a gateway (`make_settings`) runs once per backend."""
    if "database_backend" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("backend")
    backends = list(BACKENDS) if chosen == "both" else [chosen]
    if metafunc.definition.get_closest_marker("sqlite_only") is not None:
        backends = ["sqlite"]
    if backends:
        metafunc.parametrize("database_backend", backends, indirect=True)


@pytest.fixture
def database_backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def make_settings(
    tmp_path: Path, request: pytest.FixtureRequest, database_backend: str
) -> Callable[..., Settings]:
    """Settings for tests: a SQLite file under tmp_path, or a PostgreSQL database of the test's
    own (the test runs once on each: `database_backend`), loopback allowed, short schedules."""
    key = new_key()
    database_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    if database_backend == "postgres":
        database_url = str(request.getfixturevalue("pg_url"))

    def make(**sections: dict[str, Any]) -> Settings:
        raw: dict[str, Any] = {
            "database": {"url": database_url},
            "auth": {"hs256_secret": HS256_SECRET},
            "security": {"encryption_key": key},
            "egress": {"allow_http": True, "allow_cidrs": ["127.0.0.0/8", "::1/128"]},
            "delivery": {"retry_schedule": ["1s", "2s", "3s"], "poll_interval": "50ms", "jitter": 0.0},
        }
        raw = _deep_merge(raw, sections)
        toml_path = tmp_path / "settings.toml"
        toml_path.write_text(_to_toml(raw))
        return settings_mod.load(toml_path, environ={})

    return make


def _to_toml(raw: dict[str, Any]) -> str:
    lines: list[str] = []

    def table(prefix: str, values: dict[str, Any]) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in values.items() if isinstance(v, dict)}
        lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {json.dumps(v)}")
        for k, v in subs.items():
            table(f"{prefix}.{k}", v)

    for section, values in raw.items():
        table(section, values)
    return "\n".join(lines) + "\n"


@dataclass
class Gateway:
    """The app under test, driven over real HTTP by an aiohttp TestClient."""

    client: TestClient[web.Request, web.Application]
    settings: Settings
    created_tenants: list[str] = field(default_factory=list)

    @property
    def app(self) -> web.Application:
        return self.client.app  # type: ignore[return-value]

    @property
    def svc(self) -> Services:
        return self.app[SERVICES]

    @property
    def engine(self) -> DeliveryEngine:
        return self.app[ENGINE]

    @property
    def invoker(self) -> Invoker:
        return self.app[INVOKER]

    def token(
        self, tenant: str | None = "acme", scopes: tuple[str, ...] = ALL_SCOPES, ttl: float = 3600
    ) -> str:
        return mint(self.settings, tenant=tenant, scopes=scopes, ttl_s=ttl)

    def operator_token(self) -> str:
        return mint(self.settings, tenant=None, scopes=(SCOPE_ADMIN,), ttl_s=3600)

    def auth(self, tenant: str | None = "acme", scopes: tuple[str, ...] = ALL_SCOPES) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, scopes)}"}

    async def create_tenant(self, tenant_id: str = "acme", **fields: Any) -> dict[str, Any]:
        resp = await self.client.post(
            "/api/v2/tenants",
            json={"id": tenant_id, **fields},
            headers={"Authorization": f"Bearer {self.operator_token()}"},
        )
        assert resp.status == 201, await resp.text()
        return await resp.json()  # type: ignore[no-any-return]

    async def create_hook(self, tenant: str = "acme", **fields: Any) -> dict[str, Any]:
        body = {"name": "hook", "triggerId": "post-user-registration", "url": "http://127.0.0.1:9/", **fields}
        resp = await self.client.post("/api/v2/hooks", json=body, headers=self.auth(tenant))
        assert resp.status == 201, await resp.text()
        return await resp.json()  # type: ignore[no-any-return]

    async def add_secrets(self, hook_id: str, secrets: dict[str, str], tenant: str = "acme") -> None:
        resp = await self.client.post(
            f"/api/v2/hooks/{hook_id}/secrets", json=secrets, headers=self.auth(tenant)
        )
        assert resp.status == 201, await resp.text()

    async def signing_secret(self, hook_id: str, tenant: str = "acme") -> str:
        resp = await self.client.get(f"/api/v2/hooks/{hook_id}/signing-secret", headers=self.auth(tenant))
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["secret"])

    async def forward(
        self, trigger: str, event: dict[str, Any], tenant: str = "acme", headers: dict[str, str] | None = None
    ) -> Any:
        return await self.client.post(
            f"/v1/tenants/{tenant}/triggers/{trigger}",
            json=event,
            headers={**self.auth(tenant, (SCOPE_FORWARD,)), **(headers or {})},
        )

    async def delivery(self, delivery_id: str, tenant: str = "acme") -> dict[str, Any]:
        resp = await self.client.get(f"/api/v2/deliveries/{delivery_id}", headers=self.auth(tenant))
        assert resp.status == 200, await resp.text()
        return await resp.json()  # type: ignore[no-any-return]

    async def only_delivery(self, hook_id: str, tenant: str = "acme") -> dict[str, Any]:
        """The hook's one recorded delivery, with its attempts (blocking calls' records written
        first), through the Management API."""
        await self.invoker.drain()
        resp = await self.client.get(f"/api/v2/deliveries?hookId={hook_id}", headers=self.auth(tenant))
        assert resp.status == 200, await resp.text()
        listed = await resp.json()
        assert len(listed) == 1, listed
        return await self.delivery(listed[0]["id"], tenant)

    async def wait_delivery(
        self,
        delivery_id: str,
        *,
        status: str | None = None,
        attempts: int | None = None,
        tenant: str = "acme",
        timeout: float = 20.0,
    ) -> dict[str, Any]:
        """Poll until the delivery reaches `status` (and `attempts` attempts), bounded in time."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            d = await self.delivery(delivery_id, tenant)
            if (status is None or d["status"] == status) and (
                attempts is None or len(d["attempts"]) >= attempts
            ):
                return d
            if loop.time() > end:
                raise AssertionError(f"delivery did not reach status={status} attempts={attempts}: {d}")
            await asyncio.sleep(0.02)


@pytest.fixture
async def make_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    async def make(settings: Settings | None = None, **seams: Any) -> Gateway:
        s = settings or make_settings()
        client = await aiohttp_client(create_app(s, **seams))
        return Gateway(client=client, settings=s)

    yield make


@pytest.fixture
async def gateway(make_gateway: Callable[..., Awaitable[Gateway]]) -> Gateway:
    """A gateway with tenant `acme` created."""
    gw = await make_gateway()
    await gw.create_tenant("acme")
    return gw


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    remote: str | None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real aiohttp server on 127.0.0.1 that records what it gets."""

    server: TestServer
    requests: list[Received]
    state: dict[str, Any]

    def url(self, path: str = "/hook") -> str:
        return str(self.server.make_url(path))

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self.requests) < count:
            if loop.time() > end:
                raise AssertionError(f"receiver got {len(self.requests)} requests, expected {count}")
            await asyncio.sleep(0.01)
        return self.requests


Responder = Callable[[web.Request, Received, dict[str, Any]], Awaitable[web.StreamResponse]]


async def _ok(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
    return web.json_response({"status": "success", "data": {}})


@pytest.fixture
async def make_receiver(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Callable[..., Awaitable[Receiver]]:
    async def make(responder: Responder = _ok) -> Receiver:
        requests: list[Received] = []
        state: dict[str, Any] = {"active": 0, "max_active": 0}

        async def handler(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            received = Received(request.method, request.path_qs, dict(request.headers), body, request.remote)
            requests.append(received)
            state["active"] += 1
            state["max_active"] = max(state["max_active"], state["active"])
            try:
                return await responder(request, received, state)
            finally:
                state["active"] -= 1

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = await aiohttp_server(app, host="127.0.0.1")
        return Receiver(server=server, requests=requests, state=state)

    return make


@pytest.fixture
def unaccepted_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a new connect hangs until it times out."""
    with blackhole() as port:
        yield port


# -- PostgreSQL (tests/pgserver.py) --------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the whole session, on a Unix socket in a temporary
    directory. Where PostgreSQL is not installed the tests that need it are skipped, or fail
    when `TEST_POSTGRES=required` (CI installs it, so a skip there would hide a gap)."""
    with running_server() as server:
        try:
            server.migrated_template()
        except Exception as exc:
            pytest.fail(f"the test PostgreSQL database did not migrate: {exc}", pytrace=False)
        yield server


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """The URL of a new PostgreSQL database of its own for this test, already migrated."""
    return postgres_server.create_database_sync(template=postgres_server.migrated_template())


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database of each backend in turn (a test using it runs once per backend)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))
