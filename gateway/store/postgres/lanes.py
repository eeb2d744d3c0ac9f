"""Lanes on PostgreSQL: the claim that shares delivery work fairly across hooks and tenants, with
the same rules as SQLite's (gateway/store/sqlite/lanes.py says them in full).

Several instances claim from one database at once, so a claim locks what it serves:

- the lanes (hook rows) it takes, `FOR NO KEY UPDATE SKIP LOCKED` (a secret being added to the
  hook, whose foreign key shares the row, does not make a claim skip it): two claims never
  serve one lane at once, so a hook's in-flight count, its rate's turns and its due time are
  read and written by one claim at a time; a lane another claim holds is skipped, not waited
  for;
- the deliveries it picks (their rows of `delivery_queue`, the narrow table of pending
  deliveries that claims and leases write: migration 006), `FOR UPDATE SKIP LOCKED`, so a row
  another transaction is changing is left for the next claim.

A wake (an ingest's, a retry's, ...) adds a row to `lane_wakes` instead of updating the hook's
row, which a claim may hold: it never waits for a claim, and a claim that settles the lane
without seeing the new deliveries (their transaction not yet committed) cannot erase it, since
the claim deletes only the wake rows it sees. A lane with a due wake row is claimed like a due
lane (not before its `hold_until`).

A claim never waits for a lock, so it takes part in no deadlock. A lane named in `recheck`
that another claim holds is handed back to the caller, which names it to its next claim: the
claim holding it may have counted the finished delivery as in flight.

A tenant's in-flight count is read, not locked: claims running at the same moment for different
hooks of one tenant see each other's leases only once committed. The tenant cap holds for each
claim, and with `n` claims running at once (delivery workers x instances) a tenant has at most
`n` x its cap in flight (plus, as on SQLite, one per hook that had none); a claim takes
milliseconds, so in practice the cap is passed rarely, briefly, and by little.

A claim costs a fixed number of round trips (the lanes with those rechecked, the counts, one per
pass, the lease with the bodies, the lanes settled), whatever the number of lanes or of
deliveries waiting in them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..models import PARKED_AT, RATE_AHEAD_S, Claimed, Outcome
from .rows import delivery_from_row

TENANT_RECHECK_S = 0.25  # a lane whose tenant is at its in-flight cap is looked at again this much later

_LANE_COLUMNS = (
    "id, tenant_id, enabled, max_concurrency, rate_limit_per_second, rate_next_at, throttled, hold_until"
)
# Due lanes, then lanes a wake row (`lane_wakes`) says are due though their `next_due` does not
# yet (an ingest's, which adds a row rather than wait for the hook's row a claim may hold). A
# woken lane on hold is only settled (its wake rows spent, due when the hold ends), not served.
_LANES_SQL = (
    f"SELECT * FROM (SELECT {_LANE_COLUMNS} FROM hooks WHERE next_due <= $1 ORDER BY next_due, id"  # noqa: S608
    " LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED) a"
    f" UNION ALL SELECT * FROM (SELECT {_LANE_COLUMNS} FROM hooks"  # noqa: S608
    " WHERE id IN (SELECT hook_id FROM lane_wakes WHERE due <= $1) AND (next_due IS NULL OR next_due > $1)"
    " ORDER BY id LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED) b"
)
# Lanes a finished delivery may have unblocked (at their cap until then), unless on hold ($n:
# the ids, $m: now).
_RECHECK_WHERE = (
    "id = ANY(${n}::text[]) AND next_due IS NOT NULL AND next_due > ${m}"
    " AND (hold_until IS NULL OR hold_until <= ${m})"
)
# The due lanes and those, in one round trip (a lane may come twice: rows are kept once).
_LANES_RECHECK_SQL = (
    f"{_LANES_SQL} UNION ALL SELECT * FROM (SELECT {_LANE_COLUMNS} FROM hooks"  # noqa: S608
    f" WHERE {_RECHECK_WHERE.format(n=3, m=1)} ORDER BY id FOR NO KEY UPDATE SKIP LOCKED) c"
)
# Of those, the ones another transaction holds (a claim elsewhere, whose count of the lane's
# deliveries in flight may predate the finish): to be looked at by a later claim.
_RECHECK_LOCKED_SQL = f"SELECT id FROM hooks WHERE {_RECHECK_WHERE.format(n=1, m=2)}"  # noqa: S608
# A lane's due deliveries, in due order then insertion order, through `delivery_queue_lane`.
LANE_DUE_SQL = (
    "SELECT delivery_id FROM delivery_queue WHERE hook_id = $1 AND due <= $2 ORDER BY due, seq LIMIT $3"
)
# The due deliveries of several lanes at once, at most `n` of each, locked for this claim; not
# those an earlier pass of the claim picked ($4: they are leased only at its end, and a row
# locked by its own transaction is not skipped).
_PICK_SQL = (
    "SELECT l.hook_id, d.delivery_id"
    " FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS l(hook_id, n, ord)"
    " CROSS JOIN LATERAL (SELECT delivery_id, due, seq FROM delivery_queue"
    "  WHERE hook_id = l.hook_id AND due <= $3 AND NOT (delivery_id = ANY($4::text[]))"
    "  ORDER BY due, seq LIMIT l.n FOR UPDATE SKIP LOCKED) d"
    " ORDER BY l.ord, d.due, d.seq"
)
# A disabled lane's due deliveries are parked (the queue row and the record), none waited for.
_PARK_SQL = (
    "WITH q AS (SELECT delivery_id FROM delivery_queue WHERE hook_id = ANY($2::text[]) AND due <= $3"
    "  FOR UPDATE SKIP LOCKED),"
    " d AS (SELECT id FROM deliveries WHERE id IN (SELECT delivery_id FROM q) FOR UPDATE SKIP LOCKED),"
    " r AS (UPDATE deliveries SET next_attempt_at = $1 WHERE id IN (SELECT id FROM d))"
    " UPDATE delivery_queue SET due = $1, lease_owner = NULL WHERE delivery_id IN (SELECT id FROM d)"
)
# A hook disabled: its pending deliveries are parked ($1), records and queue rows (the records
# first, as every writer of both), until it is enabled again. One in flight keeps its lease
# (its outcome moves it on): parked, an enable would make it due while it is still being sent,
# and it would stop counting against the cap.
PARK_HOOK_SQL = (
    "WITH d AS (UPDATE deliveries SET next_attempt_at = $1 WHERE id IN"
    "  (SELECT delivery_id FROM delivery_queue WHERE hook_id = $2 AND (lease_owner IS NULL OR due <= $3))"
    "  AND status = 'pending' RETURNING id)"
    " UPDATE delivery_queue SET due = $1 WHERE delivery_id IN (SELECT id FROM d)"
)
# A hook enabled: its parked deliveries are due at $1.
UNPARK_HOOK_SQL = (
    "WITH d AS (UPDATE deliveries SET next_attempt_at = $1 WHERE id IN"
    "  (SELECT delivery_id FROM delivery_queue WHERE hook_id = $2 AND due >= $3)"
    "  AND status = 'pending' RETURNING id)"
    " UPDATE delivery_queue SET due = $1 WHERE delivery_id IN (SELECT id FROM d) AND due >= $3"
)
# In flight: leased, lease not run out (a dead worker's rows stop counting when they come due),
# not parked (a hook disabled mid-attempt parks the row it is sending). Per hook ($1) and, where
# a cap reads it, per tenant ($4), in one round trip: `false` rows are hooks (with their first
# lease's end), `true` rows tenants.
_BUSY_SQL = (
    "SELECT false, hook_id, COUNT(*), MIN(due) FROM delivery_queue WHERE hook_id = ANY($1::text[])"
    " AND lease_owner IS NOT NULL AND due > $2 AND due < $3 GROUP BY hook_id"
    " UNION ALL SELECT true, tenant_id, COUNT(*), NULL::float8 FROM delivery_queue"
    " WHERE tenant_id = ANY($4::text[]) AND lease_owner IS NOT NULL AND due > $2 AND due < $3"
    " GROUP BY tenant_id"
)
# The lease, and what the worker needs of each leased delivery (its record, the lease's end as
# its due time, its event's body and trace context), in one statement.
_LEASE_SQL = (
    "WITH q AS (UPDATE delivery_queue SET due = $1, lease_owner = $2 WHERE delivery_id = ANY($3::text[])"
    "  RETURNING delivery_id, due)"
    " SELECT d.id, d.tenant_id, d.event_id, d.hook_id, d.trigger_id, d.kind, d.status, d.attempt_count,"
    " q.due, d.last_error, d.created_at, d.updated_at, e.body, e.traceparent"
    " FROM q JOIN deliveries d ON d.id = q.delivery_id LEFT JOIN events e ON e.id = d.event_id"
)
# Each served lane's rate turn and next due time, in one statement. `back`: the lane took all it
# was offered and nothing holds it: due now, at the back of the line. Otherwise its earliest
# pending delivery (leases included, so a dead worker's rows are found again), not before `hold`
# or its `hold_until`; nothing pending: NULL. The lanes' wake rows are spent: those this
# statement sees belong to committed transactions, whose deliveries the same snapshot sees;
# one it does not see yet stays for the next claim. (After the lease, a statement of its own:
# the lease moves the leased rows out of the way of the earliest pending one.)
_SETTLE_SQL = (
    "WITH spent AS (DELETE FROM lane_wakes WHERE hook_id = ANY($2::text[]) AND due <= $1)"
    " UPDATE hooks h SET"
    " rate_next_at = CASE WHEN u.rated THEN u.tat ELSE h.rate_next_at END,"
    " next_due = CASE WHEN u.back THEN GREATEST($1, COALESCE(h.hold_until, 0))"
    "  ELSE (SELECT CASE WHEN m.at IS NULL THEN NULL"
    "        ELSE GREATEST(m.at, $1, COALESCE(u.hold, 0), COALESCE(h.hold_until, 0)) END"
    "        FROM (SELECT MIN(q.due) AS at FROM delivery_queue q WHERE q.hook_id = h.id) m) END"
    " FROM unnest($2::text[], $3::boolean[], $4::float8[], $5::boolean[], $6::float8[])"
    "  AS u(id, rated, tat, back, hold)"
    " WHERE h.id = u.id"
)
# After an outcome: the lane waits until `until` ($1: a pause, a 429), or may go on now (a slot
# freed); its run of 429s grows (1), ends (0) or stays (NULL). Only when something changes. The
# lane is the outcome's hook ($4), else its delivery's ($5).
_AFTER_OUTCOME_SQL = (
    "UPDATE hooks SET"
    " next_due = CASE WHEN $1::float8 IS NOT NULL THEN $1"
    "  WHEN next_due IS NULL OR next_due > GREATEST($2::float8, COALESCE(hold_until, 0))"
    "  THEN GREATEST($2, COALESCE(hold_until, 0)) ELSE next_due END,"
    " hold_until = COALESCE($1, hold_until),"
    # A 429 to a request claimed when the run was n-1 makes it n; the other 429s of the same
    # round (requests already in flight) do not lengthen it again.
    " throttled = CASE WHEN $3::bigint IS NULL THEN throttled WHEN $3 = 0 THEN 0"
    "  WHEN throttled = $3 - 1 THEN $3 ELSE throttled END"
    " WHERE id = {which}"
    # (Casts here too: PostgreSQL types the parameters of the WHERE clause before the SET list.)
    " AND ($1::float8 IS NOT NULL OR $3::bigint > 0 OR ($3::bigint = 0 AND throttled != 0)"
    "  OR next_due IS NULL OR next_due > GREATEST($2::float8, COALESCE(hold_until, 0)))"
)
_AFTER_OUTCOME = _AFTER_OUTCOME_SQL.format(
    which="COALESCE($4::text, (SELECT hook_id FROM deliveries WHERE id = $5::text))"
)
# A wake: the lanes are due no later than `at` (not before their hold: the claim and `next_due`
# read the hold). A row added, never the hook's row updated: see `lane_wakes` in migration 006.
_WAKE_SQL = "INSERT INTO lane_wakes (hook_id, due) SELECT * FROM unnest($1::text[], $2::float8[])"
_WAKE_DELIVERIES_SQL = (
    "INSERT INTO lane_wakes (hook_id, due) SELECT DISTINCT hook_id, $1::float8 FROM deliveries"
    " WHERE id = ANY($2::text[])"
)


# A claimed delivery: its id, its lane's 429s in a row, its rate turn.
_Picked = tuple[str, int, float | None]


@dataclass(slots=True)
class _Lane:
    hook_id: str
    tenant_id: str
    cap: int
    rate: float | None
    throttled: int
    busy: int  # in flight now, this claim's included
    first_lease_end: float | None
    tat: float  # the rate's next turn
    tokens: int  # turns of the rate this claim may still hand out
    full: bool = False  # took all it was offered in the last pass: may take more


async def claim(
    c: Any, *, now: float, limit: int, lease_s: float, owner: str, tenant_cap: int | None,
    recheck: Sequence[str] = (),
) -> tuple[list[Claimed], list[str]]:
    """Lease up to `limit` deliveries from the due lanes, shared out in passes (each lane an
    equal part of what is left) until the claim is full or no lane can take more. Runs in the
    caller's transaction; the lanes and deliveries it serves stay locked until it commits.

    Returns the claimed deliveries, and the lanes of `recheck` that another transaction held:
    the claim holding one may have counted the finished delivery as still in flight and left
    the lane at its cap, so the caller names them again to its next claim (else the lane would
    wait for the first lease to run out)."""
    held_elsewhere: list[str] = []
    if recheck:
        rows = _once(await c.fetch(_LANES_RECHECK_SQL, now, limit, sorted(set(recheck))))
        rest = sorted(set(recheck) - {r[0] for r in rows})
        if rest:  # not served: no longer waiting for a slot, or held by another transaction
            held_elsewhere = [r[0] for r in await c.fetch(_RECHECK_LOCKED_SQL, rest, now)]
    else:
        rows = list(await c.fetch(_LANES_SQL, now, limit))
    disabled = [r[0] for r in rows if not r[2]]
    if disabled:
        await c.execute(_PARK_SQL, PARKED_AT, disabled, now)
    held = [r[0] for r in rows if r[2] and r[7] is not None and r[7] > now]  # woken, but on hold
    enabled = [r for r in rows if r[2] and not (r[7] is not None and r[7] > now)]
    tenant_busy: dict[str, int] = {}
    hook_busy: dict[str, tuple[int, float | None]] = {}
    if enabled:
        tenants = sorted({r[1] for r in enabled})
        tenant_busy = {t: 0 for t in tenants}
        counted = tenants if tenant_cap is not None else []  # counted only where a cap reads it
        for is_tenant, key, n, first in await c.fetch(_BUSY_SQL, [r[0] for r in enabled], now, PARKED_AT,
                                                      counted):
            if is_tenant:
                tenant_busy[key] = int(n)
            else:
                hook_busy[key] = (int(n), first)
    lanes: list[_Lane] = []
    for hook_id, tenant_id, _enabled, cap, rate, rate_next, throttled, _hold in enabled:
        busy, first_lease_end = hook_busy.get(hook_id, (0, None))
        tat = max(rate_next or now, now)
        tokens = _tokens(tat, now, 1.0 / rate) if rate else limit
        lanes.append(_Lane(hook_id, tenant_id, cap, rate, throttled, busy, first_lease_end, tat, tokens,
                           full=True))
    picked = await _passes(c, lanes, tenant_busy, now=now, limit=limit, tenant_cap=tenant_cap)
    leased: dict[str, Any] = {}
    if picked:
        leased = {r[0]: r for r in await c.fetch(_LEASE_SQL, now + lease_s, owner, [p[0] for p in picked])}
        for lane in lanes:
            if lane.first_lease_end is None and lane.busy > hook_busy.get(lane.hook_id, (0, None))[0]:
                lane.first_lease_end = now + lease_s
    await _settle_all(c, lanes, disabled + held, tenant_busy, now=now, tenant_cap=tenant_cap)
    claimed = [_claimed(leased[did], throttled, nb) for did, throttled, nb in picked if did in leased]
    return claimed, held_elsewhere


def _once(rows: Iterable[Any]) -> list[Any]:
    """Rows of lanes, each lane once (the first)."""
    seen: set[str] = set()
    out = []
    for r in rows:
        if r[0] not in seen:
            seen.add(r[0])
            out.append(r)
    return out


async def _passes(
    c: Any, lanes: list[_Lane], tenant_busy: dict[str, int], *, now: float, limit: int, tenant_cap: int | None
) -> list[_Picked]:
    """Share `limit` out between the lanes, pass after pass, exactly as SQLite's claim does lane
    by lane: each pass fetches (and locks) at most what each lane could be offered in it, then
    hands out in lane order from what was found."""
    picked: list[_Picked] = []
    left = limit
    while left > 0:
        hungry = [lane for lane in lanes if lane.full]
        if not hungry:
            break
        share = -(-left // len(hungry))
        # At most what each lane could be offered: `left` and its tenant's room only shrink
        # while the pass goes on.
        bounds = [max(0, _room(lane, share, left, tenant_busy, tenant_cap)) for lane in hungry]
        asking = [(lane.hook_id, n) for lane, n in zip(hungry, bounds, strict=True) if n > 0]
        found: dict[str, list[str]] = {}
        if asking:
            taken_ids = [p[0] for p in picked]
            hooks, counts = [a[0] for a in asking], [a[1] for a in asking]
            for hook_id, did in await c.fetch(_PICK_SQL, hooks, counts, now, taken_ids):
                found.setdefault(hook_id, []).append(did)
        for lane in hungry:
            room = _room(lane, share, left, tenant_busy, tenant_cap)
            taken = found.get(lane.hook_id, [])[:room] if room > 0 else []
            lane.full = room > 0 and len(taken) == room
            if not taken:
                continue
            for did in taken:
                turn = lane.tat if lane.rate else now
                picked.append((did, lane.throttled, turn if turn > now else None))
                if lane.rate:
                    lane.tat += 1.0 / lane.rate  # a rate-limited lane's turns are 1/rate apart
            left -= len(taken)
            lane.busy += len(taken)
            lane.tokens -= len(taken)
            tenant_busy[lane.tenant_id] += len(taken)
    return picked


def _room(lane: _Lane, share: int, left: int, tenant_busy: dict[str, int], tenant_cap: int | None) -> int:
    room = min(share, left, lane.cap - lane.busy, lane.tokens)
    if tenant_cap is not None:
        # A hook with nothing in flight may send one even past its tenant's cap: one hook that
        # hangs cannot starve the tenant's others (at most `tenant_cap` plus one per hook).
        room = min(room, max(tenant_cap - tenant_busy[lane.tenant_id], 1 if lane.busy == 0 else 0))
    return room


async def _settle_all(
    c: Any, lanes: list[_Lane], unserved: list[str], tenant_busy: dict[str, int], *, now: float,
    tenant_cap: int | None,
) -> None:
    """When each lane looked at may send again, by what holds it back (one statement). The
    `unserved` lanes (disabled, or woken while on hold) get their earliest due time."""
    ids: list[str] = []
    rated: list[bool] = []
    tats: list[float | None] = []
    back: list[bool] = []
    holds_at: list[float | None] = []
    for lane in lanes:
        holds: list[float] = []
        if lane.rate and lane.tat > now + RATE_AHEAD_S:
            holds.append(lane.tat - RATE_AHEAD_S)
        if lane.busy >= lane.cap and lane.first_lease_end is not None:
            holds.append(lane.first_lease_end)  # or sooner: a finished delivery wakes the lane
        if tenant_cap is not None and tenant_busy[lane.tenant_id] >= tenant_cap and lane.busy > 0:
            holds.append(now + TENANT_RECHECK_S)
        ids.append(lane.hook_id)
        rated.append(bool(lane.rate))
        tats.append(lane.tat if lane.rate else None)
        back.append(lane.full and not holds)
        holds_at.append(max(holds) if holds else None)
    for hook_id in unserved:
        ids.append(hook_id)
        rated.append(False)
        tats.append(None)
        back.append(False)
        holds_at.append(None)
    if ids:
        await c.execute(_SETTLE_SQL, now, ids, rated, tats, back, holds_at)


def _claimed(row: Any, throttled: int, not_before: float | None) -> Claimed:
    """A leased delivery (a row of `_LEASE_SQL`) with its event's body and trace context."""
    body = row[12]
    return Claimed(delivery=delivery_from_row(row[:12]), body=bytes(body) if body is not None else b"{}",
                   throttled=throttled, not_before=not_before, traceparent=row[13])


def _tokens(tat: float, now: float, interval: float) -> int:
    """How many sends a rate-limited lane may make now (GCRA with `RATE_AHEAD_S` of slack)."""
    if tat > now + RATE_AHEAD_S:
        return 0
    return int((now + RATE_AHEAD_S - tat) / interval + 1e-3) + 1  # 1e-3: float error of unix times


async def wake(c: Any, hook_ids: Iterable[str], at: float) -> None:
    """Deliveries of these hooks are due at `at`: their lanes are due no later."""
    ids = sorted(set(hook_ids))
    if ids:
        await c.execute(_WAKE_SQL, ids, [float(at)] * len(ids))


async def wake_deliveries(c: Any, delivery_ids: Sequence[str], at: float) -> None:
    """The lanes of these deliveries are due no later than `at`."""
    if delivery_ids:
        await c.execute(_WAKE_DELIVERIES_SQL, float(at), list(delivery_ids))


def lane_news(o: Outcome) -> bool:
    """Whether `after_outcomes` writes for this outcome: a wait for its lane, an answer that
    counts in its run of 429s, or an outcome whose hook is not known."""
    return not (o.hook_id and o.lane_until is None and o.throttled is None)


async def after_outcomes(c: Any, outcomes: Sequence[tuple[Outcome, float]]) -> None:
    """Deliveries of these lanes are no longer in flight: each lane may go on (or waits as told),
    in the order of the outcomes. An outcome with no news for its lane (no wait, no answer that
    counts in its run of 429s) and a known hook writes nothing: the claim that follows re-checks the hook
    (`claim(recheck=...)`)."""
    rows: list[tuple[Any, ...]] = []
    for o, now in outcomes:
        if not lane_news(o):
            continue
        throttled = None if o.throttled is None else int(o.throttled)
        until = None if o.lane_until is None else float(o.lane_until)
        rows.append((until, float(now), throttled, o.hook_id or None, o.delivery_id))
    if rows:
        # Lanes in one order in every transaction (fewer deadlocks between concurrent batches);
        # the sort is stable, so each lane's outcomes keep their order.
        rows.sort(key=lambda r: r[3] or "")
        await c.executemany(_AFTER_OUTCOME, rows)


async def next_due(c: Any) -> float | None:
    """When the first lane is due (to sleep until then, not a fixed poll): a wake row counts from
    the end of its lane's hold."""
    value = await c.fetchval(
        "SELECT LEAST((SELECT MIN(next_due) FROM hooks),"
        " (SELECT MIN(GREATEST(w.due, COALESCE(h.hold_until, 0)))"
        "  FROM lane_wakes w JOIN hooks h ON h.id = w.hook_id))"
    )
    return float(value) if value is not None else None


async def repair(c: Any) -> int:
    """Make due every lane that has pending deliveries but no due time (rows written by hand, or
    a bug): a safety net, so that no accepted delivery can be forgotten. Returns how many. Wake
    rows of deleted hooks go too."""
    await c.execute(
        "DELETE FROM lane_wakes w WHERE NOT EXISTS (SELECT 1 FROM hooks h WHERE h.id = w.hook_id)"
    )
    status = await c.execute(
        "UPDATE hooks SET next_due = (SELECT MIN(q.due) FROM delivery_queue q WHERE q.hook_id = hooks.id)"
        " WHERE next_due IS NULL AND EXISTS (SELECT 1 FROM delivery_queue q WHERE q.hook_id = hooks.id)"
    )
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
