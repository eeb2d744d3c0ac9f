"""Dashboard sessions in the store, on SQLite and on PostgreSQL alike: what one instance
writes, another reads; touch, delete, and expired sessions removed by the next sign-in; the
queries of the health views (attempts of a hook, pauses, backlog per tenant)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from backends import make_store

from gateway.store.base import Store
from gateway.store.models import Attempt, DashboardSession, Hook, Outcome, Tenant

T0 = 1_700_000_000.0
SIGNING = "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q="


def session(
    token_hash: str, *, tenant: str | None = "acme", expires_at: float = T0 + 3600
) -> DashboardSession:
    return DashboardSession(token_hash=token_hash, tenant_id=tenant, subject="u-1", display_name="Ada",
                            scopes=frozenset({"read:hooks", "update:hooks"}), method="oidc", created_at=T0,
                            last_seen_at=T0, expires_at=expires_at)


@pytest.fixture
async def stores(backend_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database: two instances of the gateway."""
    a, b = make_store(backend_url), make_store(backend_url)
    await a.open()
    await b.open()
    await a.create_tenant(Tenant(id="acme", name="Acme", created_at=T0, updated_at=T0))
    yield a, b
    await b.close()
    await a.close()


async def test_a_session_written_by_one_instance_is_read_by_another(stores: tuple[Store, Store]) -> None:
    a, b = stores
    await a.create_session(session("h1"))
    found = await b.get_session("h1")
    assert found == session("h1")
    await b.touch_session("h1", T0 + 60)
    touched = await a.get_session("h1")
    assert touched is not None and touched.last_seen_at == T0 + 60
    await b.touch_session("h1", T0 + 30)  # an older touch never moves it back
    assert (await a.get_session("h1")).last_seen_at == T0 + 60  # type: ignore[union-attr]
    await a.delete_session("h1")
    assert await b.get_session("h1") is None


async def test_an_operator_session_has_no_tenant(stores: tuple[Store, Store]) -> None:
    a, _ = stores
    await a.create_session(session("op", tenant=None))
    found = await a.get_session("op")
    assert found is not None and found.tenant_id is None


async def test_ended_sessions_go_when_the_next_one_starts(stores: tuple[Store, Store]) -> None:
    a, b = stores
    await a.create_session(session("old", expires_at=T0 - 1))
    await a.create_session(session("live", expires_at=T0 + 10))
    assert await b.get_session("old") is None
    assert await b.get_session("live") is not None


async def test_deleting_a_tenant_ends_its_sessions(stores: tuple[Store, Store]) -> None:
    a, b = stores
    await a.create_session(session("s"))
    await a.delete_tenant("acme")
    assert await b.get_session("s") is None


async def test_the_health_queries_read_attempts_pauses_and_backlogs(stores: tuple[Store, Store]) -> None:
    a, b = stores
    hook = Hook(id="hk_1", tenant_id="acme", name="h", trigger_id="post-user-registration",
                url="https://h.example.com/", enabled=True, order=0, timeout_ms=1000, failure_policy="fail",
                max_concurrency=10, rate_limit_per_second=None, format="auth0", disabled_reason=None,
                created_at=T0, updated_at=T0)
    await a.create_hook(hook, SIGNING)
    for i in range(3):
        await a.ingest(tenant_id="acme", trigger_id="post-user-registration", event_id=f"evt_{i}",
                       body=b"{}", deliveries=[(f"dlv_{i}", "hk_1")], kind="async", now=T0)
    await a.record_outcomes([
        Outcome("dlv_0", Attempt(0, T0 + 5, 12.5, 200, None, "ok"), "succeeded", None, True, None,
                hook_id="hk_1"),
        Outcome("dlv_1", Attempt(0, T0 + 6, 30.0, 503, "receiver answered HTTP 503", None), "pending",
                T0 + 60, True, "receiver answered HTTP 503", hook_id="hk_1"),
    ], T0 + 7)
    samples = await b.attempt_samples("acme", "hk_1", since=T0, created_since=T0 - 10, limit=100)
    assert sorted((s.started_at, s.duration_ms, s.status_code) for s in samples) == [
        (T0 + 5, 12.5, 200), (T0 + 6, 30.0, 503)]
    assert await b.attempt_samples("globex", "hk_1", since=T0, created_since=T0 - 10, limit=100) == []
    assert len(await b.attempt_samples("acme", "hk_1", since=T0, created_since=T0 - 10, limit=1)) == 1
    await a.set_pause("acme", "https://h.example.com:443", T0 + 100)
    pauses = await b.list_pauses(T0)
    assert [(p.tenant_id, p.destination, p.until) for p in pauses] == [
        ("acme", "https://h.example.com:443", T0 + 100)]
    assert await b.list_pauses(T0 + 200) == []
    assert await b.list_pauses(T0, tenant_id="globex") == []
    backlog = await b.backlog_by_tenant()
    assert [(x.tenant_id, x.pending) for x in backlog] == [("acme", 2)]
