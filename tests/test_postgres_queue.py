"""PostgreSQL's queue of pending deliveries (migration 006): a wake made while another instance's
claim holds the hook's lane neither waits for that claim nor is lost to it, and a database at
the previous schema version keeps its pending deliveries, leases included, through the
migration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from pgserver import PostgresServer

from gateway.store.models import Attempt, Hook, Outcome, Tenant
from gateway.store.postgres import PostgresStore, schema

T0 = 1_700_000_000.0
PUR = "post-user-registration"
SIGNING = "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q="
BOUND_S = 10.0  # how long a step may take before the test calls it stuck (a bound, not a timing)


def hook(hook_id: str) -> Hook:
    return Hook(id=hook_id, tenant_id="acme", name=hook_id, trigger_id=PUR, url="https://rx.example.com/",
                enabled=True, order=0, timeout_ms=1000, failure_policy="fail", max_concurrency=10,
                rate_limit_per_second=None, format="auth0", disabled_reason=None, created_at=T0,
                updated_at=T0)


def done(delivery_id: str) -> Outcome:
    return Outcome(delivery_id, Attempt(0, T0, 1.0, 200, None, None), "succeeded", None, True, None)


async def ingest(store: PostgresStore, delivery_id: str, *, now: float) -> None:
    await store.ingest(tenant_id="acme", trigger_id=PUR, event_id=f"evt_{delivery_id}", body=b'{"user":{}}',
                       deliveries=[(delivery_id, "hk_1")], kind="async", now=now)


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(pg_url, pool_max=4)
    await s.open()
    await s.create_tenant(Tenant(id="acme", name="Acme", created_at=T0, updated_at=T0))
    await s.create_hook(hook("hk_1"), SIGNING)
    yield s
    await s.close()


@pytest.fixture
async def other_instance(pg_url: str) -> AsyncIterator[Any]:
    """A connection of its own, standing for another instance's claim in the middle of its
    transaction."""
    conn = await asyncpg.connect(pg_url)
    yield conn
    await conn.close()


async def test_an_ingest_does_not_wait_for_a_claim_holding_its_lane(
    store: PostgresStore, other_instance: Any
) -> None:
    await ingest(store, "dlv_1", now=T0)
    # The lane served and left at its cap: due again only when the first lease ends.
    claimed = await store.claim_due(now=T0, limit=10, lease_s=300, owner="a")
    assert [c.delivery.id for c in claimed] == ["dlv_1"]

    async with other_instance.transaction():
        await other_instance.execute("SELECT 1 FROM hooks WHERE id = 'hk_1' FOR NO KEY UPDATE")
        # Stored while another instance's claim holds the lane, without waiting for it.
        await asyncio.wait_for(ingest(store, "dlv_2", now=T0 + 1), BOUND_S)

    claimed = await store.claim_due(now=T0 + 1, limit=10, lease_s=300, owner="a")
    assert [c.delivery.id for c in claimed] == ["dlv_2"]


async def test_a_wake_during_a_claim_that_finds_its_lane_empty_is_not_lost(
    store: PostgresStore, other_instance: Any
) -> None:
    await ingest(store, "dlv_1", now=T0)
    (first,) = await store.claim_due(now=T0, limit=10, lease_s=300, owner="a")
    await store.record_outcomes([done(first.delivery.id)], T0 + 1, owner="a")
    assert await store.next_due() is not None  # the finished delivery woke its lane

    async with other_instance.transaction():
        # Another instance's claim takes the lane, sees nothing pending, and settles it empty...
        await other_instance.execute("SELECT 1 FROM hooks WHERE id = 'hk_1' FOR NO KEY UPDATE")
        await other_instance.execute("UPDATE hooks SET next_due = NULL WHERE id = 'hk_1'")
        # ... while a delivery to it is stored; the claim commits after it.
        await asyncio.wait_for(ingest(store, "dlv_2", now=T0 + 2), BOUND_S)

    # Due now, not after the repair that runs every third of a lease.
    assert await store.next_due() == pytest.approx(T0 + 2)
    claimed = await store.claim_due(now=T0 + 2, limit=10, lease_s=300, owner="b")
    assert [c.delivery.id for c in claimed] == ["dlv_2"]


async def test_wake_rows_are_spent_by_the_claim_that_serves_the_lane(store: PostgresStore) -> None:
    for i in range(5):
        await ingest(store, f"dlv_{i}", now=T0)

    claimed = await store.claim_due(now=T0, limit=10, lease_s=300, owner="a")
    assert len(claimed) == 5

    async def wakes(c: Any) -> int:
        return int(await c.fetchval("SELECT COUNT(*) FROM lane_wakes"))

    assert await store.db.read(wakes) == 0
    assert await store.next_due() == pytest.approx(T0 + 300)  # the first lease's end


async def test_wakes_of_a_lane_on_hold_neither_pile_up_nor_bring_it_forward(store: PostgresStore) -> None:
    await ingest(store, "dlv_0", now=T0)
    (first,) = await store.claim_due(now=T0, limit=10, lease_s=300, owner="a")
    paused = Outcome(first.delivery.id, Attempt(0, T0, 1.0, 429, None, None), "pending", T0 + 100, False,
                     "HTTP 429", throttled=1, lane_until=T0 + 100, hook_id="hk_1")  # "wait 100 s"
    await store.record_outcomes([paused], T0 + 1, owner="a")
    for i in range(1, 4):
        await ingest(store, f"dlv_{i}", now=T0 + 1 + i)

    assert await store.next_due() == pytest.approx(T0 + 100)
    assert await store.claim_due(now=T0 + 5, limit=10, lease_s=300, owner="a") == []

    async def wakes(c: Any) -> int:
        return int(await c.fetchval("SELECT COUNT(*) FROM lane_wakes"))

    assert await store.db.read(wakes) == 0  # the claim that looked at the lane spent them
    assert await store.next_due() == pytest.approx(T0 + 100)
    claimed = await store.claim_due(now=T0 + 100, limit=10, lease_s=300, owner="a")
    assert sorted(c.delivery.id for c in claimed) == ["dlv_0", "dlv_1", "dlv_2", "dlv_3"]


# -- the migration ------------------------------------------------------------------------------


async def migrate_to(conn: Any, version: int) -> None:
    """Apply the shipped migrations up to `version`, as an older gateway would have."""
    await conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY)")
    for m in schema.available():
        if m.version <= version:
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", m.version)


async def test_a_version_5_database_keeps_its_pending_deliveries_and_leases(
    postgres_server: PostgresServer,
) -> None:
    url = await postgres_server.create_database(prefix="v5")
    conn = await asyncpg.connect(url)
    try:
        await migrate_to(conn, 5)
        await conn.execute(
            "INSERT INTO tenants (id, name, created_at, updated_at) VALUES ('acme', 'Acme', $1, $1)", T0
        )
        await conn.execute(
            "INSERT INTO hooks (id, tenant_id, name, trigger_id, url, enabled, timeout_ms, max_concurrency,"
            " created_at, updated_at, next_due) VALUES ('hk_1', 'acme', 'hk', $1, 'https://rx.example.com/',"
            " true, 1000, 10, $2, $2, $2)",
            PUR, T0,
        )
        rows = [  # id, status, due (or lease end), lease owner
            ("dlv_due", "pending", T0, None),
            ("dlv_leased", "pending", T0 + 60, "dead-instance"),  # its instance crashed mid-attempt
            ("dlv_done", "succeeded", None, None),
        ]
        for did, status, due, owner in rows:
            await conn.execute("INSERT INTO events (id, tenant_id, trigger_id, body, created_at)"
                               " VALUES ($1, 'acme', $2, $3, $4)", f"evt_{did}", PUR, b"{}", T0)
            await conn.execute(
                "INSERT INTO deliveries (id, tenant_id, event_id, hook_id, trigger_id, kind, status,"
                " next_attempt_at, lease_owner, created_at, updated_at)"
                " VALUES ($1, 'acme', $2, 'hk_1', $3, 'async', $4, $5, $6, $7, $7)",
                did, f"evt_{did}", PUR, status, due, owner, T0,
            )
        assert [m.version for m in await schema.migrate(conn)] == [m.version for m in schema.available()
                                                                   if m.version > 5]
    finally:
        await conn.close()

    store = PostgresStore(url)
    await store.open()
    try:
        assert await store.backlog() == 2
        # The crashed instance's lease is honoured until it ends, then its delivery comes due.
        first = await store.claim_due(now=T0 + 1, limit=10, lease_s=300, owner="new")
        assert [c.delivery.id for c in first] == ["dlv_due"]
        later = await store.claim_due(now=T0 + 61, limit=10, lease_s=300, owner="new")
        assert [c.delivery.id for c in later] == ["dlv_leased"]

        await store.record_outcomes([done("dlv_due"), done("dlv_leased")], T0 + 62, owner="new")
        assert await store.backlog() == 0
        for did in ("dlv_due", "dlv_leased"):
            found = await store.get_delivery("acme", did)
            assert found is not None
            delivery, attempts = found
            assert (delivery.status, len(attempts)) == ("succeeded", 1)
    finally:
        await store.close()
