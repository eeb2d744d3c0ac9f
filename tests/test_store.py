"""The store's delivery queue, on SQLite and on PostgreSQL (each test runs on both, unless it is
about one backend): claims through the partial index, leases that expire and can be taken
over, attempt numbering, release on shutdown, and the purge."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator

import pytest
from backends import batches, make_store, sql

from gateway.store.base import Store
from gateway.store.database import WRITER_NICE
from gateway.store.models import Attempt, Hook, Outcome, Tenant
from gateway.store.sqlite import LANE_DUE_SQL, SqliteStore

T0 = 1_700_000_000.0


SQLITE_ONLY = pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)


@pytest.fixture
async def store(backend_url: str) -> AsyncIterator[Store]:
    s = make_store(backend_url)
    await s.open()
    await s.create_tenant(Tenant(id="acme", name="Acme", created_at=T0, updated_at=T0))
    await add_hook(s, "hk_1")
    yield s
    await s.close()


async def add_hook(
    store: Store, hook_id: str, *, max_concurrency: int = 100, rate: float | None = None, tenant: str = "acme"
) -> None:
    """A hook: the lane its deliveries are claimed from."""
    await store.create_hook(
        Hook(
            id=hook_id,
            tenant_id=tenant,
            name=hook_id.replace("_", "-"),
            trigger_id="post-user-registration",
            url=f"https://{hook_id.replace('_', '-')}.example.com/",
            enabled=True,
            order=0,
            timeout_ms=1000,
            failure_policy="fail",
            max_concurrency=max_concurrency,
            rate_limit_per_second=rate,
            format="auth0",
            disabled_reason=None,
            created_at=T0,
            updated_at=T0,
        ),
        "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=",
    )


async def ingest(store: Store, n: int, *, now: float = T0, hook: str = "hk_1") -> list[str]:
    ids = []
    for i in range(n):
        did = f"dlv_{now}_{i}"
        await store.ingest(
            tenant_id="acme",
            trigger_id="post-user-registration",
            event_id=f"evt_{now}_{i}",
            body=b'{"user":{"id":"u"}}',
            deliveries=[(did, hook)],
            kind="async",
            now=now,
        )
        ids.append(did)
    return ids


def attempt(at: float, status: int = 500) -> Attempt:
    return Attempt(
        number=0, started_at=at, duration_ms=1.0, status_code=status, error=None, response_body=None
    )


@SQLITE_ONLY
async def test_the_claim_query_uses_the_partial_lane_index(store: SqliteStore) -> None:
    await ingest(store, 50)

    def plan(c: sqlite3.Connection) -> list[str]:
        return [row[3] for row in c.execute("EXPLAIN QUERY PLAN " + LANE_DUE_SQL, ("hk_1", T0, 10))]

    details = await store.db.read(plan)

    assert any("USING INDEX deliveries_lane" in d for d in details), details
    assert not any(d.startswith("SCAN deliveries") for d in details), details


async def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_expires(store: Store) -> None:
    (did,) = await ingest(store, 1)

    first = await store.claim_due(now=T0, limit=10, lease_s=2.0, owner="worker-a")
    during = await store.claim_due(now=T0 + 1.9, limit=10, lease_s=2.0, owner="worker-b")
    after = await store.claim_due(now=T0 + 2.0, limit=10, lease_s=2.0, owner="worker-b")

    assert [c.delivery.id for c in first] == [did]
    assert first[0].body == b'{"user":{"id":"u"}}'
    assert during == []
    assert [c.delivery.id for c in after] == [did]


async def test_claims_take_the_oldest_due_first_and_respect_the_limit(store: Store) -> None:
    later = await ingest(store, 2, now=T0 + 10)
    earlier = await ingest(store, 2, now=T0)

    claimed = await store.claim_due(now=T0 + 20, limit=3, lease_s=60, owner="w")

    assert [c.delivery.id for c in claimed] == [*earlier, later[0]]


async def test_a_taken_over_lease_keeps_the_new_owners_state_but_records_both_attempts(
    store: Store,
) -> None:
    (did,) = await ingest(store, 1)
    await store.claim_due(now=T0, limit=1, lease_s=2.0, owner="dead")
    await store.claim_due(now=T0 + 3, limit=1, lease_s=2.0, owner="alive")

    late = Outcome(did, attempt(T0 + 1), "pending", T0 + 100, True, "slow failure")
    await store.record_outcomes([late], T0 + 3.5, owner="dead")
    done = Outcome(did, attempt(T0 + 3, 200), "succeeded", None, True, None)
    await store.record_outcomes([done], T0 + 3.6, owner="alive")

    found = await store.get_delivery("acme", did)
    assert found is not None
    delivery, attempts = found
    assert delivery.status == "succeeded"
    assert delivery.attempt_count == 1  # only the owner's outcome moved the delivery on
    assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 200)]


async def test_attempts_are_numbered_in_order_including_ones_that_use_no_attempt(store: Store) -> None:
    (did,) = await ingest(store, 1)
    outcomes = [
        Outcome(did, attempt(T0, 429), "pending", T0, False, None),
        Outcome(did, attempt(T0 + 1, 500), "pending", T0 + 1, True, "HTTP 500"),
        Outcome(did, attempt(T0 + 2, 200), "succeeded", None, True, None),
    ]
    for o in outcomes:
        await store.record_outcomes([o], o.attempt.started_at if o.attempt else T0)

    found = await store.get_delivery("acme", did)
    assert found is not None
    delivery, attempts = found
    assert [a.number for a in attempts] == [1, 2, 3]
    assert delivery.attempt_count == 2
    assert delivery.last_error == "HTTP 500"


async def test_release_gives_back_only_what_the_owner_still_holds(store: Store) -> None:
    held, recorded = await ingest(store, 2)
    await store.claim_due(now=T0, limit=2, lease_s=300, owner="w")
    outcome = Outcome(recorded, attempt(T0), "pending", T0 + 60, True, "x")
    await store.record_outcomes([outcome], T0, owner="w")

    await store.release([held, recorded], T0 + 1, owner="w")

    claimable = await store.claim_due(now=T0 + 1, limit=10, lease_s=300, owner="v")
    assert [c.delivery.id for c in claimable] == [held]  # the recorded one keeps its due time


async def test_extend_leases_keeps_in_flight_rows_out_of_reach(store: Store) -> None:
    (did,) = await ingest(store, 1)
    await store.claim_due(now=T0, limit=1, lease_s=2, owner="w")

    await store.extend_leases([did], T0 + 10, owner="w")
    await store.extend_leases([did], T0 + 1000, owner="someone-else")  # not theirs: no effect

    assert await store.claim_due(now=T0 + 5, limit=1, lease_s=2, owner="v") == []
    assert len(await store.claim_due(now=T0 + 10, limit=1, lease_s=2, owner="v")) == 1


async def test_purge_works_in_batches_and_keeps_pending_rows(store: Store) -> None:
    done = await ingest(store, 7)
    pending = await ingest(store, 2, now=T0 + 0.5)
    await store.record_outcomes(
        [Outcome(d, attempt(T0, 200), "succeeded", None, True, None) for d in done], T0
    )
    before = batches(store)

    removed = await store.purge(before=T0 + 86400, now=T0 + 86400, batch=3)

    assert removed == 7
    assert batches(store) - before >= 3  # 3 + 3 + 1, then the rest: several short transactions
    counts = await sql(
        store,
        "SELECT (SELECT COUNT(*) FROM deliveries), (SELECT COUNT(*) FROM attempts),"
        " (SELECT COUNT(*) FROM events)",
    )
    assert counts == [(len(pending), 0, len(pending))]


async def test_concurrent_writes_share_transactions(store: Store) -> None:
    before = batches(store)
    await asyncio.gather(*(ingest(store, 1, now=T0 + i) for i in range(100)))
    assert batches(store) - before < 25


@SQLITE_ONLY
@pytest.mark.skipif(sys.platform != "linux", reason="a nice value per thread is Linux's")
async def test_the_writer_thread_runs_below_the_event_loop(store: SqliteStore) -> None:
    """The writer shares a core with the event loop; a login request must not wait behind a
    batch of records, so the writer's scheduling priority is the lower one."""

    def niceness(_: sqlite3.Connection) -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    writer = await store.db.write(niceness)
    loop_thread = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert writer == min(19, loop_thread + WRITER_NICE) and writer > loop_thread
