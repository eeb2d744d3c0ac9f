"""Schemathesis against the gateway's own `/api/v2/openapi.json`: the Management API and ingest,
with valid tenant, operator and service tokens, one operation at a time and in chains that
follow the document's links. No answer is a 5xx, and every answer matches the document: its
status code, content type, headers and body schema.

The gateway runs on a real loopback port in a thread of its own (schemathesis calls it over
HTTP with `requests`), on SQLite only: what is fuzzed is the HTTP layer and the document, which
do not depend on the database (the PostgreSQL store has its own tests). Its egress allows only
127.0.0.0/8, and its resolver seam answers `localhost` alone: every other name a fuzzed hook URL
holds is refused without any lookup, and the tests check that no name left the process.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from conftest import ALL_SCOPES, HS256_SECRET, _to_toml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

from gateway import settings as settings_mod
from gateway.api.openapi import document
from gateway.app import create_app
from gateway.auth import SCOPE_ADMIN, mint
from gateway.crypto import new_key
from gateway.settings import Settings

pytestmark = pytest.mark.sqlite_only

TENANT = "acme"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXAMPLES = 25  # per operation; the whole file stays well under 3 minutes
STATEFUL_EXAMPLES = 40  # scenarios, each of up to 8 calls


class LoopbackOnlyResolver(AbstractResolver):
    """The gateway's DNS during the fuzz: `localhost` is 127.0.0.1, every other name is refused
    here, before any lookup. Records every name it is asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._lock = threading.Lock()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        with self._lock:
            self.asked.append(host)
        if host.lower().rstrip(".") != "localhost":
            raise OSError(f"the fuzz resolver answers only localhost, not {host!r}")
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)]

    async def close(self) -> None:
        return None


@dataclass
class Served:
    """The gateway on 127.0.0.1:`port`, its event loop running in a thread."""

    settings: Settings
    resolver: LoopbackOnlyResolver
    base_url: str = ""
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def tenant_headers(self, tenant: str = TENANT) -> dict[str, str]:
        """A tenant token with the hook scopes and forward:events (a service token's scope)."""
        token = mint(self.settings, tenant=tenant, scopes=ALL_SCOPES, ttl_s=3600)
        return {"Authorization": f"Bearer {token}"}

    def operator_headers(self) -> dict[str, str]:
        token = mint(self.settings, tenant=None, scopes=(SCOPE_ADMIN,), ttl_s=3600)
        return {"Authorization": f"Bearer {token}"}


def _fuzz_settings(tmp: Path) -> Settings:
    raw: dict[str, Any] = {
        "database": {"url": f"sqlite:///{tmp / 'gateway.db'}"},
        "auth": {"hs256_secret": HS256_SECRET},
        "security": {"encryption_key": new_key()},
        "egress": {"allow_http": True, "allow_cidrs": ["127.0.0.0/8"], "connect_timeout": "1s"},
        "delivery": {"retry_schedule": ["1s", "2s"], "poll_interval": "100ms", "jitter": 0.0,
                     "timeout": "2s"},
        "sync": {"deadline": "3s", "default_timeout": "2s"},
        "ratelimit": {"management_rate": 100000.0, "management_burst": 100000,
                      "ingest_rate": 100000.0, "ingest_burst": 100000},
        "quotas": {"hooks_per_point": 100000, "hooks_per_tenant": 100000, "replays_per_hour": 100000},
    }
    path = tmp / "settings.toml"
    path.write_text(_to_toml(raw))
    return settings_mod.load(path, environ={})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    resolver = LoopbackOnlyResolver()
    gw = Served(settings=_fuzz_settings(tmp_path_factory.mktemp("fuzz")), resolver=resolver)
    runner_box: list[web.AppRunner] = []

    async def start() -> int:
        runner = web.AppRunner(create_app(gw.settings, resolver=resolver))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runner_box.append(runner)
        server = site._server  # noqa: SLF001 - the bound port of port 0
        assert isinstance(server, asyncio.base_events.Server)
        return int(server.sockets[0].getsockname()[1])

    thread = threading.Thread(target=gw.loop.run_forever, name="fuzzed-gateway", daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(start(), gw.loop).result(timeout=30)
    gw.base_url = f"http://127.0.0.1:{port}"
    created = requests.post(f"{gw.base_url}/api/v2/tenants", json={"id": TENANT},
                            headers=gw.operator_headers(), timeout=10)
    assert created.status_code == 201, created.text
    try:
        yield gw
    finally:
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), gw.loop).result(timeout=30)
        gw.loop.call_soon_threadsafe(gw.loop.stop)
        thread.join(timeout=30)
        gw.loop.close()


# The document the gateway serves (test_the_fuzzed_document_is_the_served_one): loaded when the
# module is, as schemathesis' lazy `from_fixture` does not run on this pytest.
schema = schemathesis.openapi.from_dict(document())
# The tests send the tokens themselves; unknown query parameters are ignored by the gateway, as by
# Auth0's API (docs/DECISIONS.md), so requests that add some are not "invalid".
schema.config.generation.update(with_security_parameters=False, allow_extra_parameters=False)
# Chains follow the document's own links only (no links schemathesis infers by itself).
schema.config.phases.stateful.inference.algorithms = []


def test_the_fuzzed_document_is_the_served_one(served: Served) -> None:
    answer = requests.get(f"{served.base_url}/api/v2/openapi.json", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == json.loads(json.dumps(document()))


def _auth_for(served: Served, path: str) -> dict[str, str]:
    if path.startswith("/api/v2/tenants"):
        return served.operator_headers()
    return served.tenant_headers()


def _pin(case: Any) -> None:
    """Keep the fuzz on the tenant the tokens are for, and never delete or re-shape it."""
    params = case.path_parameters or {}
    if "tenant" in params:
        params["tenant"] = TENANT
    if case.operation.path == "/api/v2/tenants/{id}" and params.get("id") == TENANT:
        params["id"] = "not-" + TENANT


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: Any, served: Served) -> None:
    _pin(case)
    case.call_and_validate(base_url=served.base_url, headers=_auth_for(served, case.operation.path),
                           checks=CHECKS, timeout=30)


STATEFUL_CHECKS = [*CHECKS, use_after_free, ensure_resource_availability]


def _reset(served: Served) -> None:
    """Delete every hook of the tenant, its operational events endpoint, and every other tenant."""
    base = served.base_url
    for _ in range(100):  # bounded: at most 100 pages of hooks
        hooks = requests.get(f"{base}/api/v2/hooks", params={"per_page": 100},
                             headers=served.tenant_headers(), timeout=10).json()
        if not hooks:
            break
        for hook in hooks:
            requests.delete(f"{base}/api/v2/hooks/{hook['id']}", headers=served.tenant_headers(), timeout=10)
    requests.delete(f"{base}/api/v2/operational-events", headers=served.tenant_headers(), timeout=10)
    for _ in range(100):
        tenants = [t for t in requests.get(f"{base}/api/v2/tenants", params={"per_page": 100},
                                           headers=served.operator_headers(), timeout=10).json()
                   if t["id"] != TENANT]
        if not tenants:
            break
        for tenant in tenants:
            requests.delete(f"{base}/api/v2/tenants/{tenant['id']}", headers=served.operator_headers(),
                            timeout=10)


def test_chains_of_operations_answer_as_documented(served: Served) -> None:
    """Scenarios along the document's links: a hook created, then read, changed, tested,
    given secrets, its signing secret rotated, replayed, deleted; a tenant created, read,
    changed, deleted; an event forwarded, its delivery read and retried."""

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            _pin(case)

        def teardown(self) -> None:
            _reset(served)  # each scenario starts from the same state: Hypothesis replays them
            super().teardown()

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            headers = _auth_for(served, case.operation.path)
            return {"base_url": served.base_url, "headers": headers, "timeout": 30}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None,
                              **kwargs: Any) -> None:
            case.validate_response(response, checks=STATEFUL_CHECKS, transport_kwargs=kwargs or None,
                                   recorder=self.recorder)

    Workflow.run(settings=settings(max_examples=STATEFUL_EXAMPLES, stateful_step_count=8, deadline=None,
                                   database=None, suppress_health_check=list(HealthCheck)))


def test_no_name_was_looked_up_beyond_loopback(served: Served, netguard_attempts: list[Any]) -> None:
    """After the fuzz: a hook URL with a host name reaches the gateway's resolver seam, which
    refuses it without a lookup; nothing else asked the network (netguard saw no attempt)."""
    base, headers = served.base_url, served.tenant_headers()
    hook = requests.post(f"{base}/api/v2/hooks", headers=headers, timeout=10, json={
        "name": "named-host", "triggerId": "post-user-registration", "url": "https://hooks.example.com/x"})
    assert hook.status_code == 201, hook.text
    tested = requests.post(f"{base}/api/v2/hooks/{hook.json()['id']}/test", headers=headers, timeout=30)
    assert tested.status_code == 200
    assert "answers only localhost" in tested.json()["error"]
    assert "hooks.example.com" in served.resolver.asked
    assert netguard_attempts == []
