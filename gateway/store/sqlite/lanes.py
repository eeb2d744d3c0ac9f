"""Lanes: the claim that shares delivery work fairly across hooks and tenants.

Each hook is a lane of its pending deliveries, and `hooks.next_due` is a lower bound of the
time the lane may send next. A claim takes the due lanes that have waited longest and gives
each an equal share, so no hook's backlog crowds out another hook's deliveries; a lane that
was served goes to the back of the line. A lane that may not send now is moved out of the due
range as a whole, instead of having its deliveries wait inside a worker:

- at its `maxConcurrency` (counted from the leases in the database, so across processes):
  due again when one of its deliveries finishes, or when the first of their leases runs out;
- out of `rateLimitPerSecond`: due at its next send time (GCRA over `hooks.rate_next_at`);
- its tenant has `tenant_max_in_flight` deliveries in flight: looked at again a moment later
  (a hook with nothing in flight may still send one, so one hanging hook cannot starve the
  tenant's other hooks);
- paused, or told to wait by a `429`: due when the wait ends (`Outcome.lane_until`);
- disabled: its due deliveries are parked and wait, using no attempt, until it is enabled.

Everything that makes a delivery due (ingest, a finished attempt, a retry, a replay, an edit
of the hook) lowers its lane's `next_due` with `wake`; the claim that finds the lane has
nothing due sets it exactly. The cost of a claim depends on how many lanes are due, not on how
many deliveries wait in them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..models import PARKED_AT, RATE_AHEAD_S, Claimed, Outcome
from .rows import DELIVERY_COLUMNS, delivery_from_row

TENANT_RECHECK_S = 0.25  # a lane whose tenant is at its in-flight cap is looked at again this much later

_LANE_COLUMNS = "id, tenant_id, enabled, max_concurrency, rate_limit_per_second, rate_next_at, throttled"
_LANES_SQL = f"SELECT {_LANE_COLUMNS} FROM hooks WHERE next_due <= ? ORDER BY next_due, id LIMIT ?"  # noqa: S608
# Lanes a finished delivery may have unblocked (at their cap until then), unless on hold.
_RECHECK_SQL = (
    f"SELECT {_LANE_COLUMNS} FROM hooks WHERE id IN ({{marks}}) AND next_due IS NOT NULL"  # noqa: S608
    " AND next_due > ? AND (hold_until IS NULL OR hold_until <= ?)"
)
LANE_DUE_SQL = (
    "SELECT id FROM deliveries WHERE hook_id = ? AND status = 'pending' AND next_attempt_at <= ?"
    " ORDER BY next_attempt_at LIMIT ?"
)
# In flight: leased, lease not run out (a dead worker's rows stop counting when they come due),
# not parked (a hook disabled mid-attempt parks the row it is sending).
_HOOK_BUSY_SQL = (
    "SELECT COUNT(*), MIN(next_attempt_at) FROM deliveries WHERE hook_id = ? AND status = 'pending'"
    " AND lease_owner IS NOT NULL AND next_attempt_at > ? AND next_attempt_at < ?"
)
_TENANT_BUSY_SQL = (
    "SELECT COUNT(*) FROM deliveries WHERE tenant_id = ? AND status = 'pending'"
    " AND lease_owner IS NOT NULL AND next_attempt_at > ? AND next_attempt_at < ?"
)
_LANE_MIN_SQL = "SELECT MIN(next_attempt_at) FROM deliveries WHERE hook_id = ? AND status = 'pending'"
# After an outcome: the lane waits until `until` (a pause, a 429), or may go on now (a slot freed);
# its run of 429s grows (1), ends (0) or stays (NULL). `until` replaces the lane's hold: the
# claim that finds the lane due checks its caps and rate again, and a later pause is in `Pauses`.
_AFTER_OUTCOME_SQL = (
    "UPDATE hooks SET"
    " next_due = CASE WHEN ?1 IS NOT NULL THEN ?1"
    "  WHEN next_due IS NULL OR next_due > MAX(?2, COALESCE(hold_until, 0))"
    "  THEN MAX(?2, COALESCE(hold_until, 0)) ELSE next_due END,"
    " hold_until = COALESCE(?1, hold_until),"
    # A 429 to a request claimed when the run was n-1 makes it n; the other 429s of the same
    # round (requests already in flight) do not lengthen it again.
    " throttled = CASE WHEN ?3 IS NULL THEN throttled WHEN ?3 = 0 THEN 0"
    "  WHEN throttled = ?3 - 1 THEN ?3 ELSE throttled END"
    " WHERE id = {which}"
    # Only when something changes: most outcomes find their lane due already (a write saved).
    " AND (?1 IS NOT NULL OR ?3 > 0 OR (?3 = 0 AND throttled != 0)"
    "  OR next_due IS NULL OR next_due > MAX(?2, COALESCE(hold_until, 0)))"
)
_AFTER_OUTCOME_BY_HOOK = _AFTER_OUTCOME_SQL.format(which="?4")
_AFTER_OUTCOME_BY_DELIVERY = _AFTER_OUTCOME_SQL.format(which="(SELECT hook_id FROM deliveries WHERE id = ?4)")
# A wake: the lane is due no later than `at`, but not before its hold.
_WAKE_SQL = (
    "UPDATE hooks SET next_due = MAX(?1, COALESCE(hold_until, 0))"
    " WHERE id = {which} AND (next_due IS NULL OR next_due > MAX(?1, COALESCE(hold_until, 0)))"
)


# A claimed delivery: its row (DELIVERY_COLUMNS), its lane's 429s in a row, its rate turn.
_Picked = tuple[tuple[Any, ...], int, float | None]


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


def claim(
    c: sqlite3.Connection, *, now: float, limit: int, lease_s: float, owner: str, tenant_cap: int | None,
    recheck: Sequence[str] = (),
) -> list[Claimed]:
    """Lease up to `limit` deliveries from the due lanes, shared out in passes (each lane an
    equal part of what is left) until the claim is full or no lane can take more.

    `recheck` names hooks whose deliveries the caller saw finish since its last claim: a lane
    that was at its cap may go on. Looking at them here, once per claim, costs less than a
    write per finished delivery (and the instance that finished them is the one that claims)."""
    rows = c.execute(_LANES_SQL, (now, limit)).fetchall()
    if recheck:
        seen = {r[0] for r in rows}
        extra = [h for h in set(recheck) if h not in seen]
        if extra:
            sql = _RECHECK_SQL.format(marks=",".join("?" * len(extra)))
            rows += c.execute(sql, (*extra, now, now)).fetchall()
    tenant_busy: dict[str, int] = {}
    lanes: list[_Lane] = []
    for hook_id, tenant_id, enabled, cap, rate, rate_next, throttled in rows:
        if not enabled:
            c.execute(
                "UPDATE deliveries SET next_attempt_at = ?, lease_owner = NULL"
                " WHERE hook_id = ? AND status = 'pending' AND next_attempt_at <= ?",
                (PARKED_AT, hook_id, now),
            )
            _settle(c, hook_id, now, None)
            continue
        if tenant_id not in tenant_busy:
            tenant_busy[tenant_id] = c.execute(_TENANT_BUSY_SQL, (tenant_id, now, PARKED_AT)).fetchone()[0]
        busy, first_lease_end = c.execute(_HOOK_BUSY_SQL, (hook_id, now, PARKED_AT)).fetchone()
        tat = max(rate_next or now, now)
        tokens = _tokens(tat, now, 1.0 / rate) if rate else limit
        lanes.append(_Lane(hook_id, tenant_id, cap, rate, throttled, busy, first_lease_end, tat, tokens,
                           full=True))
    picked: list[_Picked] = []
    left = limit
    while left > 0:
        hungry = [lane for lane in lanes if lane.full]
        if not hungry:
            break
        share = -(-left // len(hungry))
        for lane in hungry:
            room = min(share, left, lane.cap - lane.busy, lane.tokens)
            if tenant_cap is not None:
                # A hook with nothing in flight may send one even past its tenant's cap: one
                # hook that hangs cannot starve the tenant's others (at most `tenant_cap` plus
                # one per hook in flight).
                room = min(room, max(tenant_cap - tenant_busy[lane.tenant_id], 1 if lane.busy == 0 else 0))
            taken = [r[0] for r in c.execute(LANE_DUE_SQL, (lane.hook_id, now, room))] if room > 0 else []
            lane.full = room > 0 and len(taken) == room
            if not taken:
                continue
            marks = ",".join("?" * len(taken))
            leased = c.execute(
                f"UPDATE deliveries SET next_attempt_at = ?, lease_owner = ? WHERE id IN ({marks})"  # noqa: S608
                f" RETURNING {DELIVERY_COLUMNS}",
                (now + lease_s, owner, *taken),
            ).fetchall()
            by_id = {row[0]: row for row in leased}
            for did in taken:
                turn = lane.tat if lane.rate else now
                picked.append((by_id[did], lane.throttled, turn if turn > now else None))
                if lane.rate:
                    lane.tat += 1.0 / lane.rate  # a rate-limited lane's turns are 1/rate apart
            left -= len(taken)
            lane.busy += len(taken)
            lane.tokens -= len(taken)
            tenant_busy[lane.tenant_id] += len(taken)
            if lane.first_lease_end is None:
                lane.first_lease_end = now + lease_s
    for lane in lanes:
        # When the lane may send again, by what holds it back.
        holds: list[float] = []
        if lane.rate:
            c.execute("UPDATE hooks SET rate_next_at = ? WHERE id = ?", (lane.tat, lane.hook_id))
            if lane.tat > now + RATE_AHEAD_S:
                holds.append(lane.tat - RATE_AHEAD_S)
        if lane.busy >= lane.cap and lane.first_lease_end is not None:
            holds.append(lane.first_lease_end)  # or sooner: a finished delivery wakes the lane
        if tenant_cap is not None and tenant_busy[lane.tenant_id] >= tenant_cap and lane.busy > 0:
            holds.append(now + TENANT_RECHECK_S)
        if lane.full and not holds:  # more due work, most likely: to the back of the line
            c.execute("UPDATE hooks SET next_due = MAX(?, COALESCE(hold_until, 0)) WHERE id = ?",
                      (now, lane.hook_id))
        else:
            _settle(c, lane.hook_id, now, max(holds) if holds else None)
    return _load(c, picked)


def _load(c: sqlite3.Connection, picked: list[_Picked]) -> list[Claimed]:
    """The claimed deliveries with their event bodies (and trace contexts), in the order they
    were picked."""
    if not picked:
        return []
    event_ids = list({row[2] for row, _, _ in picked})
    marks = ",".join("?" * len(event_ids))
    events = {r[0]: (r[1], r[2]) for r in c.execute(
        f"SELECT id, body, traceparent FROM events WHERE id IN ({marks})", event_ids)}  # noqa: S608
    out = []
    for row, throttled, not_before in picked:
        d = delivery_from_row(row)
        body, traceparent = events.get(d.event_id, (b"{}", None))
        out.append(Claimed(delivery=d, body=body, throttled=throttled, not_before=not_before,
                           traceparent=traceparent))
    return out


def _tokens(tat: float, now: float, interval: float) -> int:
    """How many sends a rate-limited lane may make now (GCRA with `RATE_AHEAD_S` of slack)."""
    if tat > now + RATE_AHEAD_S:
        return 0
    return int((now + RATE_AHEAD_S - tat) / interval + 1e-3) + 1  # 1e-3: float error of unix times


def _settle(c: sqlite3.Connection, hook_id: str, now: float, hold: float | None) -> None:
    """Set the lane's next due time: its earliest pending delivery (leases included, so a dead
    worker's rows are found again), not before `hold` or the lane's `hold_until`; a lane with
    more due work goes to the back of the line (`now`) rather than ahead of lanes that waited
    longer. NULL (nothing pending) stays NULL: MAX with NULL is NULL in SQLite."""
    earliest = c.execute(_LANE_MIN_SQL, (hook_id,)).fetchone()[0]
    due = None if earliest is None else max(earliest, now, hold or 0.0)
    c.execute(
        "UPDATE hooks SET next_due = MAX(?, COALESCE(hold_until, 0)) WHERE id = ?", (due, hook_id)
    )


def wake(c: sqlite3.Connection, hook_ids: Iterable[str], at: float) -> None:
    """Deliveries of these hooks are due at `at`: their lanes are due no later."""
    c.executemany(_WAKE_SQL.format(which="?2"), [(at, h) for h in set(hook_ids)])


def wake_deliveries(c: sqlite3.Connection, delivery_ids: Sequence[str], at: float) -> None:
    """The lanes of these deliveries are due no later than `at`."""
    which = "(SELECT hook_id FROM deliveries WHERE id = ?2)"
    c.executemany(_WAKE_SQL.format(which=which), [(at, d) for d in delivery_ids])


def after_outcome(c: sqlite3.Connection, o: Outcome, now: float) -> None:
    """A delivery of the lane is no longer in flight: the lane may go on (or waits as told).
    An outcome with no news for its lane (no wait, no change of its run of 429s) and a known
    hook writes nothing: the claim that follows re-checks the hook (`claim(recheck=...)`)."""
    if o.hook_id and o.lane_until is None and o.throttled is None:
        return
    throttled: Any = o.throttled
    if o.hook_id:
        c.execute(_AFTER_OUTCOME_BY_HOOK, (o.lane_until, now, throttled, o.hook_id))
    else:
        c.execute(_AFTER_OUTCOME_BY_DELIVERY, (o.lane_until, now, throttled, o.delivery_id))


def next_due(c: sqlite3.Connection) -> float | None:
    """When the first lane is due (to sleep until then, not a fixed poll)."""
    row = c.execute("SELECT MIN(next_due) FROM hooks").fetchone()
    return float(row[0]) if row and row[0] is not None else None


def repair(c: sqlite3.Connection) -> int:
    """Make due every lane that has pending deliveries but no due time (rows written by hand, or
    a bug): a safety net, so that no accepted delivery can be forgotten. Returns how many."""
    cur = c.execute(
        "UPDATE hooks SET next_due = (SELECT MIN(d.next_attempt_at) FROM deliveries d"
        " WHERE d.hook_id = hooks.id AND d.status = 'pending')"
        " WHERE next_due IS NULL AND EXISTS"
        " (SELECT 1 FROM deliveries d WHERE d.hook_id = hooks.id AND d.status = 'pending')"
    )
    return cur.rowcount
