"""What many concurrent calls do in one transaction (`GroupCommit`, gateway/store/postgres/
database.py): ingests, and the outcomes of attempts. A batch of ingests is a handful of
statements whatever its size; the rows several transactions may change at once are locked in
one order (delivery ids sorted) to keep deadlocks rare."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import Conflict
from ..models import PARKED_AT, Outcome
from . import lanes, operational
from .database import clean
from .rows import ATTEMPT_COLUMNS, DELIVERY_COLUMNS, attempt_values

INSERT_EVENTS = (
    "INSERT INTO events (id, tenant_id, trigger_id, body, created_at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::float8[])"
)
# Ingested events carry the ingest's trace context (gateway/tracing.py); recorded blocking ones do not.
_INSERT_TRACED_EVENTS = (
    "INSERT INTO events (id, tenant_id, trigger_id, body, created_at, traceparent)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::float8[], $6::text[])"
)
# Deliveries, and for the pending ones their queue rows (migration 006) and their lanes' wakes
# (a row per lane, never the hook's row, which a claim may hold): one statement. A parked
# delivery (a disabled hook's) wakes nothing; its hook's enable does.
INSERT_DELIVERIES = (
    f"WITH d AS (INSERT INTO deliveries ({DELIVERY_COLUMNS})"  # noqa: S608
    " SELECT id, t, e, h, tr, k, s, n, due, err, cr, cr FROM unnest($1::text[], $2::text[], $3::text[],"
    " $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::float8[], $10::text[], $11::float8[])"
    " WITH ORDINALITY AS u(id, t, e, h, tr, k, s, n, due, err, cr, ord) ORDER BY ord"
    " RETURNING id, hook_id, tenant_id, status, next_attempt_at, seq),"
    " q AS (INSERT INTO delivery_queue (delivery_id, hook_id, tenant_id, due, seq)"
    "  SELECT id, hook_id, tenant_id, next_attempt_at, seq FROM d WHERE status = 'pending')"
    " INSERT INTO lane_wakes (hook_id, due) SELECT hook_id, MIN(next_attempt_at) FROM d"
    f" WHERE status = 'pending' AND next_attempt_at < {PARKED_AT!r} GROUP BY hook_id"
)
# A batch of ingests: its events, then its deliveries as `INSERT_DELIVERIES` (parameters moved
# up by six), in one round trip (no foreign key joins the two tables).
_INGEST = (
    "WITH ev AS (" + _INSERT_TRACED_EVENTS + "), "
    + re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + 6}", INSERT_DELIVERIES.removeprefix("WITH "))
)
_USE_KEY = (
    "INSERT INTO idempotency_keys"
    " (tenant_id, key, trigger_id, response, created_at, expires_at, request_hash)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, key) DO UPDATE SET"
    " trigger_id = EXCLUDED.trigger_id, response = EXCLUDED.response, created_at = EXCLUDED.created_at,"
    " expires_at = EXCLUDED.expires_at, request_hash = EXCLUDED.request_hash"
    " WHERE idempotency_keys.expires_at <= EXCLUDED.created_at RETURNING 1"
)
# A delivery is parked (`PARKED_AT`) only while its hook is disabled in the database: the
# worker's view of the hook may be older than an enable (made just now, or on another instance),
# and a parked delivery of an enabled hook would wait forever.
#
# An outcome moves a delivery on only while it is pending and its queue row is leased by the
# worker's owner (or by nobody): its record is updated (no indexed column changes, so the update
# is HOT when the page has room), and its queue row is deleted (finished) or due again, unleased
# (a retry). The rows are locked first (`_LOCK`), so what the ownership check reads stays true.
_MOVE = (
    "WITH m AS (UPDATE deliveries SET status = u.status, next_attempt_at = CASE WHEN u.due >= $8::float8"
    " AND EXISTS (SELECT 1 FROM hooks h WHERE h.id = deliveries.hook_id AND h.enabled)"
    " THEN u.now ELSE u.due END,"
    " attempt_count = attempt_count + u.used,"
    " last_error = COALESCE(u.err, last_error), updated_at = u.now"
    " FROM unnest($1::text[], $2::float8[], $3::bigint[], $4::text[], $5::float8[], $6::text[], $7::text[])"
    "  AS u(status, due, used, err, now, id, owner)"
    # `= ANY`: the rows are found by their key, whatever the planner thinks of the join.
    " WHERE deliveries.id = ANY($6::text[]) AND deliveries.id = u.id AND deliveries.status = 'pending'"
    " AND EXISTS (SELECT 1 FROM delivery_queue q WHERE q.delivery_id = u.id"
    "  AND (u.owner IS NULL OR q.lease_owner = u.owner OR q.lease_owner IS NULL))"
    " RETURNING deliveries.id, deliveries.status, deliveries.next_attempt_at),"
    " gone AS (DELETE FROM delivery_queue q USING m WHERE q.delivery_id = m.id AND m.status != 'pending')"
    " UPDATE delivery_queue q SET due = m.next_attempt_at, lease_owner = NULL FROM m"
    " WHERE q.delivery_id = m.id AND m.status = 'pending'"
)
# Numbered after the last recorded attempt, and only while the delivery exists (it may have
# been purged meanwhile); its row is locked by then, so numbers never collide.
_ATTEMPT = (
    f"INSERT INTO attempts ({ATTEMPT_COLUMNS})"  # noqa: S608
    " SELECT $1, COALESCE((SELECT MAX(number) FROM attempts WHERE delivery_id = $1), 0) + 1,"
    " $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = $1)"
)
# The deliveries' records, then their queue rows, each in id order (every transaction that waits
# for a queue row holds the record's lock first; a claim waits for neither). One statement: the
# count makes the records' locks a one-time filter, taken before any queue row is read.
_LOCK = (
    "WITH d AS (SELECT id FROM deliveries WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE)"
    " SELECT 1 FROM delivery_queue WHERE delivery_id = ANY($1::text[]) AND (SELECT count(*) FROM d) >= 0"
    " ORDER BY delivery_id FOR UPDATE"
)
ATTEMPT_ARRAYS = 10  # the attempts' columns, as `unnest` takes them below
# `_LOCK`, `_MOVE` and the attempts of the whole batch as one statement (the common batch: each
# delivery once in it): one round trip instead of three. The locks are a CTE that the others read
# as a one-time filter (none of their columns in it: PostgreSQL runs it before either scans a
# row), so every row is locked, in order, before anything moves; the move and the attempts read
# one snapshot, as they did as two statements after the locks.
_LOCK_MOVE_RECORD = (
    "WITH lk AS (SELECT 1 FROM delivery_queue WHERE delivery_id = ANY($1::text[]) AND (SELECT count(*)"  # noqa: S608
    "  FROM (SELECT id FROM deliveries WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE) d) >= 0"
    "  ORDER BY delivery_id FOR UPDATE),"
    " locked AS (SELECT count(*) AS n FROM lk),"
    " m AS (UPDATE deliveries SET status = u.status, next_attempt_at = CASE WHEN u.due >= $9::float8"
    "  AND EXISTS (SELECT 1 FROM hooks h WHERE h.id = deliveries.hook_id AND h.enabled)"
    "  THEN u.now ELSE u.due END,"
    "  attempt_count = attempt_count + u.used, last_error = COALESCE(u.err, last_error), updated_at = u.now"
    "  FROM unnest($2::text[], $3::float8[], $4::bigint[], $5::text[], $6::float8[], $7::text[], $8::text[])"
    "   AS u(status, due, used, err, now, id, owner)"
    "  WHERE (SELECT n FROM locked) >= 0"
    "  AND deliveries.id = ANY($7::text[]) AND deliveries.id = u.id AND deliveries.status = 'pending'"
    "  AND EXISTS (SELECT 1 FROM delivery_queue q WHERE q.delivery_id = ANY($7::text[])"
    "   AND q.delivery_id = u.id AND (u.owner IS NULL OR q.lease_owner = u.owner OR q.lease_owner IS NULL))"
    "  RETURNING deliveries.id, deliveries.status, deliveries.next_attempt_at),"
    " gone AS (DELETE FROM delivery_queue q USING m WHERE q.delivery_id = m.id AND m.status != 'pending'),"
    f" a AS (INSERT INTO attempts ({ATTEMPT_COLUMNS})"
    "  SELECT u.id, COALESCE((SELECT MAX(x.number) FROM attempts x WHERE x.delivery_id = u.id), 0) + 1,"
    "  u.st, u.ms, u.code, u.err, u.body, u.lim, u.rem, u.reset, u.ra"
    "  FROM unnest($10::text[], $11::float8[], $12::float8[], $13::bigint[], $14::text[], $15::text[],"
    "   $16::bigint[], $17::bigint[], $18::float8[], $19::float8[]) WITH ORDINALITY"
    "   AS u(id, st, ms, code, err, body, lim, rem, reset, ra, ord)"
    "  WHERE (SELECT n FROM locked) >= 0 AND EXISTS (SELECT 1 FROM deliveries d WHERE d.id = u.id)"
    "  ORDER BY u.ord),"
    # The hooks whose run of failures a success ends ($20: `operational.failing_changes`), after
    # the locks like the rest.
    " cl AS (UPDATE hooks SET failing_since = NULL WHERE id = ANY($20::text[]) AND failing_since IS NOT NULL"
    "  AND (SELECT n FROM locked) >= 0)"
    " UPDATE delivery_queue q SET due = m.next_attempt_at, lease_owner = NULL FROM m"
    " WHERE q.delivery_id = m.id AND m.status = 'pending'"
)


@dataclass(slots=True)
class Ingest:
    tenant_id: str
    trigger_id: str
    event_id: str
    body: bytes
    deliveries: Sequence[tuple[str, str]]
    kind: str
    now: float
    idempotency_key: str | None
    idempotency_ttl_s: float
    response: str | None
    status: str
    traceparent: str | None = None


Outcomes = tuple[Sequence[Outcome], float, str | None]



def ingests_are_one_statement(items: list[Ingest]) -> bool:
    """Whether `run_ingests` stores these in one statement (none has an idempotency key), so
    that the statement is their transaction."""
    return all(it.idempotency_key is None for it in items)


async def run_ingests(c: Any, items: list[Ingest]) -> list[str | None]:
    """Many ingests in one transaction: idempotency keys one by one (a key used twice in the
    batch answers the second with the first's response), then the events, their deliveries
    and the lanes' wakes in one statement."""
    results: list[str | None] = []
    stored: list[Ingest] = []
    for it in items:
        if it.idempotency_key is not None:
            earlier = await _use_key(c, it)
            if earlier is not None:
                results.append(earlier)
                continue
        results.append(None)
        stored.append(it)
    if not stored:
        return results
    events = [
        [it.event_id for it in stored], [it.tenant_id for it in stored], [it.trigger_id for it in stored],
        [it.body for it in stored], [it.now for it in stored], [it.traceparent for it in stored],
    ]
    rows = [(it, did, hid) for it in stored for did, hid in it.deliveries]
    if not rows:
        await c.execute(_INSERT_TRACED_EVENTS, *events)
        return results
    await c.execute(
        _INGEST,
        *events,
        [did for _, did, _ in rows],
        [it.tenant_id for it, _, _ in rows],
        [it.event_id for it, _, _ in rows],
        [hid for _, _, hid in rows],
        [it.trigger_id for it, _, _ in rows],
        [it.kind for it, _, _ in rows],
        [it.status for it, _, _ in rows],
        [0] * len(rows),
        [it.now if it.status == "pending" else None for it, _, _ in rows], [None] * len(rows),
        [it.now for it, _, _ in rows],
    )
    return results


async def _use_key(c: Any, it: Ingest) -> str | None:
    """Take the idempotency key for this ingest (None), or the response of the request that
    holds it. A concurrent request with the same key waits for the first to commit, then sees
    its row."""
    assert it.idempotency_key is not None
    digest = hashlib.sha256(it.body).hexdigest()
    for _ in range(2):
        taken = await c.fetchval(
            _USE_KEY, it.tenant_id, it.idempotency_key, it.trigger_id, it.response or "", it.now,
            it.now + it.idempotency_ttl_s, digest,
        )
        if taken is not None:
            return None
        row = await c.fetchrow(
            "SELECT response, trigger_id, request_hash FROM idempotency_keys"
            " WHERE tenant_id = $1 AND key = $2",
            it.tenant_id,
            it.idempotency_key,
        )
        if row is None:  # purged between the two statements: take it again
            continue
        if row[1] != it.trigger_id:
            raise Conflict(f"this Idempotency-Key was used for an event of {row[1]!r}")
        if row[2] is not None and row[2] != digest:
            raise Conflict("this Idempotency-Key was used with a different request body")
        return str(row[0])
    raise Conflict("this Idempotency-Key is being used by another request; try again")


@dataclass(slots=True)
class _OutcomesPlan:
    """What `run_outcomes` writes for a batch."""

    flat: list[tuple[Outcome, float, str | None]]
    once: bool  # each delivery once in the batch: the locks, moves and attempts in one statement
    failing: operational.FailingChanges
    lanes_quiet: bool  # no lane to tell (`lanes.after_outcomes` writes nothing) and none parked

    @property
    def single(self) -> bool:
        """The whole batch is one statement (`_LOCK_MOVE_RECORD`), its own transaction."""
        return self.once and self.lanes_quiet and not self.failing.restarted and not self.failing.fresh


def _plan(items: list[Outcomes]) -> _OutcomesPlan:
    flat = [(o, now, owner) for outcomes, now, owner in items for o in outcomes]
    once = len({o.delivery_id for o, _, _ in flat}) == len(flat)
    quiet = all(not lanes.lane_news(o) and not _parked(o) for o, _, _ in flat)
    return _OutcomesPlan(flat, once, operational.failing_changes([(o, now) for o, now, _ in flat]), quiet)


def _parked(o: Outcome) -> bool:
    return o.next_attempt_at is not None and o.next_attempt_at >= PARKED_AT


def outcomes_are_one_statement(items: list[Outcomes]) -> bool:
    """Whether `run_outcomes` writes these in one statement (the common batch: successes and
    retries of deliveries once each, no lane held back, no run of failures starting), so that
    the statement is their transaction."""
    return _plan(items).single


async def run_outcomes(c: Any, items: list[Outcomes]) -> list[None]:
    """Outcomes of many calls in one transaction, in their order: the deliveries are locked
    first (sorted: concurrent batches do not deadlock), then moved on, their lanes told, and
    the attempts recorded."""
    plan = _plan(items)
    flat = plan.flat
    moves = [
        (
            o.status,
            None if o.next_attempt_at is None else float(o.next_attempt_at),
            1 if o.uses_attempt else 0,
            clean(o.last_error),
            now,
            o.delivery_id,
            owner,
        )
        for o, now, owner in flat
    ]
    ids = sorted({o.delivery_id for o, _, _ in flat})
    attempts = [(o.delivery_id, *attempt_values(o.attempt)) for o, _, _ in flat if o.attempt is not None]
    if plan.once:  # the locks, the moves, the attempts and the runs of failures ended: one round trip
        await c.execute(_LOCK_MOVE_RECORD, ids, *_columns(moves, len(moves[0])), PARKED_AT,
                        *_columns(attempts, ATTEMPT_ARRAYS), plan.failing.cleared)
    else:  # one statement per outcome, in order
        await c.execute(_LOCK, ids)
        await c.executemany(_MOVE, [(*([v] for v in m), PARKED_AT) for m in moves])
    # The lanes, in the order of the outcomes; a delivery its worker parked (it saw the hook
    # disabled) wakes its lane at once, in case the hook was enabled meanwhile.
    run: list[tuple[Outcome, float]] = []
    for o, now, _ in flat:
        run.append((o, now))
        if _parked(o):
            await lanes.after_outcomes(c, run)
            run = []
            await lanes.wake_deliveries(c, [o.delivery_id], now)
    await lanes.after_outcomes(c, run)
    await operational.note_attempts(c, plan.failing, cleared=not plan.once)  # the hooks' runs of failures
    if attempts and not plan.once:
        await c.executemany(_ATTEMPT, attempts)
    return [None] * len(items)


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """The columns of `rows` (each `width` wide) as lists, for `unnest` (none: empty lists)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]
