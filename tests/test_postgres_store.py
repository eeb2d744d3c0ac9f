"""The PostgreSQL store where several instances share one database: claims made at the same
moment never hand out one delivery twice nor pass a hook's `maxConcurrency`, a quota holds
under concurrent creates, one idempotency key stores one event, concurrent replays queue an
event once; and what PostgreSQL does differently from SQLite is made not to show (text it
cannot store, its default collation, its schema versions)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from backends import make_store, sql
from pgserver import PostgresServer

from gateway.errors import BadRequest, Conflict, Forbidden
from gateway.store.base import Store
from gateway.store.models import Attempt, Hook, Outcome, Tenant
from gateway.store.postgres import LANE_DUE_SQL, PostgresStore, SchemaNotReady

T0 = 1_700_000_000.0
PUR = "post-user-registration"
SIGNING = "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q="

# The newest schema version: one migration file each (gateway/store/postgres/migrations/).
LATEST = len(list((Path(__file__).parent.parent / "gateway/store/postgres/migrations").glob("*.sql")))


def hook(hook_id: str, *, cap: int = 100, tenant: str = "acme", enabled: bool = True) -> Hook:
    name = hook_id.replace("_", "-")
    return Hook(id=hook_id, tenant_id=tenant, name=name, trigger_id=PUR, url=f"https://{name}.example.com/",
                enabled=enabled, order=0, timeout_ms=1000, failure_policy="fail", max_concurrency=cap,
                rate_limit_per_second=None, format="auth0", disabled_reason=None, created_at=T0,
                updated_at=T0)


async def queue(store: Store, hook_id: str, n: int, *, now: float = T0) -> list[str]:
    ids = [f"dlv_{hook_id}_{i}" for i in range(n)]
    await asyncio.gather(*(
        store.ingest(tenant_id="acme", trigger_id=PUR, event_id=f"evt_{hook_id}_{i}", body=b'{"user":{}}',
                     deliveries=[(did, hook_id)], kind="async", now=now)
        for i, did in enumerate(ids)
    ))
    return ids


@pytest.fixture
async def instances(pg_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, each with a pool of its own: two instances of the gateway."""
    a, b = PostgresStore(pg_url, pool_max=6), PostgresStore(pg_url, pool_max=6)
    await a.open()
    await b.open()
    await a.create_tenant(Tenant(id="acme", name="Acme", created_at=T0, updated_at=T0))
    yield a, b
    await a.close()
    await b.close()


def done(delivery_id: str, hook_id: str) -> Outcome:
    return Outcome(delivery_id, Attempt(0, T0, 1.0, 200, None, None), "succeeded", None, True, None,
                   hook_id=hook_id)


async def test_claims_from_two_instances_at_once_never_share_a_delivery_nor_pass_a_cap(
    instances: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = instances
    caps = {"hk_1": 3, "hk_2": 2, "hk_3": 5}
    for hook_id, cap in caps.items():
        await a.create_hook(hook(hook_id, cap=cap), SIGNING)
    queued = set()
    for hook_id in caps:
        queued |= set(await queue(a, hook_id, 60))
    in_flight: dict[str, set[str]] = {h: set() for h in caps}
    most = dict.fromkeys(caps, 0)
    claimed_by: dict[str, str] = {}
    twice: list[str] = []
    rng = random.Random(7)

    async def worker(store: PostgresStore, owner: str) -> None:
        finished: set[str] = set()
        for _ in range(400):  # bounded: far more rounds than 180 deliveries need
            if len(claimed_by) == len(queued):
                return
            recheck, finished = sorted(finished), set()
            got = await store.claim_due(now=T0 + 1, limit=4, lease_s=600, owner=owner, tenant_cap=1000,
                                        recheck=recheck)
            for c in got:
                did, hook_id = c.delivery.id, c.delivery.hook_id
                if did in claimed_by:
                    twice.append(did)
                claimed_by[did] = owner
                in_flight[hook_id].add(did)
                most[hook_id] = max(most[hook_id], len(in_flight[hook_id]))
            await asyncio.sleep(rng.uniform(0, 0.003))
            for c in got:
                # Out of the count before the outcome commits: what is counted here is never
                # more than what the database holds leased.
                in_flight[c.delivery.hook_id].discard(c.delivery.id)
            if got:
                await store.record_outcomes([done(c.delivery.id, c.delivery.hook_id) for c in got], T0 + 1,
                                            owner=owner)
                finished |= {c.delivery.hook_id for c in got}
            else:
                await asyncio.sleep(0.002)

    await asyncio.gather(*(worker(store, f"{name}-{i}") for name, store in (("a", a), ("b", b))
                           for i in range(3)))

    assert twice == []
    assert set(claimed_by) == queued  # every delivery, once
    assert {owner[0] for owner in claimed_by.values()} == {"a", "b"}  # both instances took part
    for hook_id, cap in caps.items():
        assert most[hook_id] <= cap, (hook_id, most)
    assert await a.backlog() == 0


async def test_a_finish_whose_lane_another_claim_holds_is_rechecked_by_the_next_claim(
    instances: tuple[PostgresStore, PostgresStore],
) -> None:
    a, _ = instances
    await a.create_hook(hook("hk_1", cap=1), SIGNING)
    await queue(a, "hk_1", 2)
    (first,) = await a.claim_due(now=T0, limit=10, lease_s=600, owner="a")
    await a.record_outcomes([done(first.delivery.id, "hk_1")], T0 + 1, owner="a")
    other = await asyncpg.connect(a.db.dsn)  # another instance's claim, holding the lane
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM hooks WHERE id = 'hk_1' FOR UPDATE")
            during = await a.claim_due(now=T0 + 1, limit=10, lease_s=600, owner="a", recheck=["hk_1"])
    finally:
        await other.close()

    after = await a.claim_due(now=T0 + 1, limit=10, lease_s=600, owner="a")

    assert during == []
    assert len(after) == 1  # not left at its cap until the first lease (600 s) runs out


async def test_a_hook_quota_holds_when_two_instances_create_at_once(
    instances: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = instances

    async def create(store: PostgresStore, i: int) -> str:
        try:
            await store.create_hook(hook(f"hk_{i}"), SIGNING, max_per_point=3, max_hooks=50)
        except Forbidden:
            return "refused"
        return "created"

    results = await asyncio.gather(*(create(a if i % 2 else b, i) for i in range(12)))

    assert results.count("created") == 3
    assert (await a.list_hooks("acme")).total == 3


async def test_one_idempotency_key_used_on_two_instances_at_once_stores_one_event(
    instances: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = instances
    await a.create_hook(hook("hk_1"), SIGNING)

    async def send(store: PostgresStore, i: int) -> str | None:
        return await store.ingest(tenant_id="acme", trigger_id=PUR, event_id=f"evt_{i}", body=b"{}",
                                  deliveries=[(f"dlv_{i}", "hk_1")], kind="async", now=T0,
                                  idempotency_key="key-1", response=f"first was {i}")

    answers = await asyncio.gather(*(send(a if i % 2 else b, i) for i in range(10)))

    assert answers.count(None) == 1  # one request stored its event ...
    first = answers.index(None)
    assert set(answers) - {None} == {f"first was {first}"}  # ... the others got its answer
    assert await sql(a, "SELECT COUNT(*) FROM events") == [(1,)]
    with pytest.raises(Conflict, match="different request body"):
        await a.ingest(tenant_id="acme", trigger_id=PUR, event_id="evt_x", body=b'{"other":1}',
                       deliveries=[], kind="async", now=T0, idempotency_key="key-1")


async def test_two_replays_at_once_queue_each_event_once(
    instances: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = instances
    await a.create_hook(hook("hk_1"), SIGNING)
    ids = await queue(a, "hk_1", 5)
    await a.record_outcomes([Outcome(d, None, "failed", None, True, "HTTP 500") for d in ids], T0 + 1)
    counter = iter(range(1000))

    async def replay(store: PostgresStore) -> tuple[list[str], int]:
        return await store.replay("acme", "hk_1", since=T0 - 1, until=T0 + 1, statuses=["failed"],
                                  new_id=lambda: f"dlv_r{next(counter)}", limit=100, now=T0 + 2, per_hour=20)

    results = await asyncio.gather(replay(a), replay(b), replay(a), replay(b))

    assert sorted(len(created) for created, _ in results) == [0, 0, 0, 5]
    assert await a.backlog() == 5


async def test_the_replays_per_hour_quota_holds_across_instances(
    instances: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = instances
    await a.create_hook(hook("hk_1"), SIGNING)

    async def replay(store: PostgresStore) -> str:
        try:
            await store.replay("acme", "hk_1", since=T0, until=T0 + 1, statuses=["failed"],
                               new_id=lambda: "x", limit=10, now=T0 + 2, per_hour=3)
        except Exception as exc:  # noqa: BLE001 - the quota's refusal is what is counted
            return type(exc).__name__
        return "ok"

    results = await asyncio.gather(*(replay(a if i % 2 else b) for i in range(8)))

    assert results.count("ok") == 3
    assert results.count("TooManyRequests") == 5


async def test_lanes_due_at_once_are_served_in_byte_order_of_their_hook_ids(backend_url: str) -> None:
    """As SQLite compares: the test server's default collation is ICU's English, which would put
    `hk_a` first; the store's keys are COLLATE "C"."""
    store = make_store(backend_url)
    await store.open()
    try:
        await store.create_tenant(Tenant(id="acme", name="Acme", created_at=T0, updated_at=T0))
        for hook_id in ("hk_a", "hk_B"):
            await store.create_hook(hook(hook_id), SIGNING)
            await queue(store, hook_id, 1)

        (first,) = await store.claim_due(now=T0, limit=1, lease_s=60, owner="w")

        assert first.delivery.hook_id == "hk_B"  # "B" (0x42) sorts before "a" (0x61)
    finally:
        await store.close()


async def test_text_postgresql_cannot_store_is_a_bad_request_or_cleaned(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        with pytest.raises(BadRequest, match="NUL"):
            await store.create_tenant(Tenant(id="acme", name="a\x00b", created_at=T0, updated_at=T0))
        await store.create_tenant(Tenant(id="acme", name="Acme", created_at=T0, updated_at=T0))
        await store.create_hook(hook("hk_1"), SIGNING)
        (did,) = await queue(store, "hk_1", 1)
        answer = Attempt(0, T0, 1.0, 500, "HTTP 500 \x00", "binary\x00answer")

        await store.record_outcomes([Outcome(did, answer, "failed", None, True, "HTTP 500\x00")], T0)

        found = await store.get_delivery("acme", did)
        assert found is not None
        delivery, (attempt,) = found
        assert attempt.response_body == "binary\ufffdanswer"  # as undecodable bytes already are
        assert delivery.status == "failed" and delivery.last_error == "HTTP 500\ufffd"
    finally:
        await store.close()


async def test_the_claim_reads_a_lane_through_its_index(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        await store.create_tenant(Tenant(id="acme", name="Acme", created_at=T0, updated_at=T0))
        for hook_id in ("hk_1", "hk_2"):
            await store.create_hook(hook(hook_id), SIGNING)
        await sql(store, "INSERT INTO deliveries (id, tenant_id, event_id, hook_id, trigger_id, kind, status,"
                         " next_attempt_at, created_at, updated_at) SELECT 'd' || i, 'acme', 'e' || i,"
                         " CASE WHEN i % 2 = 0 THEN 'hk_1' ELSE 'hk_2' END, 'p', 'async',"
                         " CASE WHEN i % 10 = 0 THEN 'pending' ELSE 'succeeded' END, i, i, i"
                         " FROM generate_series(1, 20000) AS i")
        await sql(store, "INSERT INTO delivery_queue (delivery_id, hook_id, tenant_id, due, seq)"
                         " SELECT id, hook_id, tenant_id, next_attempt_at, seq FROM deliveries"
                         " WHERE status = 'pending'")
        await sql(store, "ANALYZE deliveries")
        await sql(store, "ANALYZE delivery_queue")

        async def plan(c: Any) -> str:
            rows = await c.fetch("EXPLAIN " + LANE_DUE_SQL, "hk_1", T0, 10)
            return "\n".join(r[0] for r in rows)

        text = await store.db.read(plan)
        assert "delivery_queue_lane" in text, text
        assert "Seq Scan" not in text and "Sort" not in text, text
    finally:
        await store.close()


async def test_an_unmigrated_database_is_refused_naming_the_command(postgres_server: PostgresServer) -> None:
    url = await postgres_server.create_database(prefix="bare")
    store = PostgresStore(url)

    with pytest.raises(SchemaNotReady, match="gateway migrate"):
        await store.open()

    assert await store.migrate() == (0, LATEST)
    assert await store.migrate() == (LATEST, LATEST)
    await store.open()  # now it opens
    await store.close()


async def test_migrations_from_two_instances_at_once_apply_once(postgres_server: PostgresServer) -> None:
    url = await postgres_server.create_database(prefix="race")

    results = await asyncio.gather(*(PostgresStore(url).migrate() for _ in range(3)))

    assert sorted(results) == [(0, LATEST), (LATEST, LATEST), (LATEST, LATEST)]
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT COUNT(*) FROM schema_version") == LATEST
    finally:
        await conn.close()
