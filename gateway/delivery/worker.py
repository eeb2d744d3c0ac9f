"""Delivery workers: claim due deliveries with a lease, send them, record what happened.

The engine keeps up to `workers` x `batch` attempts in flight and claims more as they finish, so
one slow receiver does not hold up the others. It claims one claim at a time, at most `batch`
deliveries each: claims running side by side in one process would only take turns at the same
lanes (each skips the lanes another holds) and come back empty, at the cost of a transaction and
a look at the next due time each; with several instances on PostgreSQL that doubled the claims
(docs/DECISIONS.md). The lease is the row's due time pushed forward: a
worker that dies simply lets its rows come due again, and a live engine keeps renewing the
leases of what it has in flight. A clean stop gives back at once what it claimed but has not
begun to send, lets the sends in flight finish (up to the grace time), and records the ones it
cuts off before giving them back too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import logs, points, tracing
from ..crypto import Cipher
from ..egress import MAX_SYNC_BODY_BYTES
from ..errors import database_unavailable
from ..metrics import Metrics
from ..registry import HookRegistry, LiveHook
from ..settings import Settings
from ..store.base import Store
from ..store.models import PARKED_AT, RATE_AHEAD_S, Attempt, Claimed, Delivery, Outcome
from ..transport import Transport
from .attempt import AttemptResult, deliver, error_note, render_body, request_headers
from .control import Control
from .ops_events import OpsEvents
from .schedule import clamp_pause, pause_until, rate_limited_delay, wait_schedule_jitter
from .throttle import Pauses, destination

log = logging.getLogger("gateway.delivery")

T = TypeVar("T")

CLAIM_TRICKLE_S = 0.002  # after a claim that took only a few: wait this long before the next (DECISIONS)
TURN_LATENESS_MAX_S = 0.5  # a rate turn waits at most this much for a late previous send
IDLE_MIN_S = 0.005  # an idle worker sleeps at least this long before it looks again
HELD_WAIT_MAX_S = 0.04  # a due lane another instance's claim holds: looked at again at most this much later
CLAIM_ERROR_PAUSE_S = 1.0  # the store failed a claim: wait this long before the next one
RECORD_RETRY_MIN_S = 0.1  # the database cannot store an outcome now: first wait, doubled each time
RECORD_RETRY_MAX_S = 5.0
ANSWER_MAX_BYTES = MAX_SYNC_BODY_BYTES  # a larger answer is a failed attempt; 4 KiB of it is kept


class DeliveryEngine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: HookRegistry,
        transport_getter: Callable[[], Transport],
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        announce: Callable[[], None] | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        self.settings = settings
        self._announce = announce  # tells the other instances (gateway/coordination.py)
        self.store = store
        self.registry = registry
        self.metrics = metrics or Metrics()
        self._transport = transport_getter
        self.clock = clock
        self.cfg = settings.delivery
        self.wait = wait_schedule_jitter(self.cfg.retry_schedule, self.cfg.jitter, rng)
        self.pauses = Pauses(store, clock=clock)
        # Operational events (`cipher`: to set up the operator's endpoint) and what a receiver's
        # answer and a hook's history decide beyond one attempt (gateway/delivery/control.py).
        self.ops = OpsEvents(settings, store, registry, cipher=cipher, clock=clock, notify=self.notify)
        self.control = Control(settings, store, registry, self.ops, clock=clock, disable=self.disable_hook)
        self.owner = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._wakes: list[asyncio.Event] = []
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._keeper: asyncio.Task[None] | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._sending: dict[str, tuple[str, float]] = {}  # delivery id: (hook id, when its send began)
        self._begun: set[str] = set()  # in-flight deliveries whose send has begun (or is done)
        self._finished: set[str] = set()  # hooks with a delivery finished since the last claim
        self._last_send: dict[str, float] = {}  # rate-limited hook: when this engine last sent to it
        self._turns: dict[str, float] = {}  # rate-limited hook: the latest turn a send of it reserved
        self.delivered = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        wake = asyncio.Event()
        self._wakes.append(wake)
        self._tasks.append(asyncio.create_task(self._worker(wake), name="delivery-claims"))
        self._tasks.append(asyncio.create_task(self._purger(), name="delivery-purger"))
        self._tasks.append(asyncio.create_task(self.ops.watch_pauses(), name="delivery-pause-watch"))
        self._keeper = asyncio.create_task(self._keep_leases(), name="delivery-leases")

    def notify(self, *, announce: bool = True) -> None:
        """New deliveries are due now (called by ingest, retry and replay): wake every worker,
        here and (unless the news came from elsewhere) on the other instances."""
        for wake in self._wakes:
            wake.set()
        if announce and self._announce is not None:
            self._announce()

    async def stop(self, timeout_s: float, *, cut_short: asyncio.Event | None = None) -> None:
        """Stop claiming and give back at once what is claimed but not yet being sent; let the
        sends in flight finish for up to `timeout_s` (less if `cut_short` is set meanwhile), then
        record the ones cut off as interrupted and give them back too."""
        self._stopping = True
        self.notify(announce=False)
        background, self._tasks = self._tasks, []
        for t in background:
            t.cancel()
        await _settle(background)
        inflight = dict(self._inflight)
        if inflight:
            # Not begun: checking its hook or waiting for a rate turn. Nothing reached the
            # receiver, so it is given back rather than started after the stop was asked for.
            unsent = {t for did, t in inflight.items() if did not in self._begun}
            for t in unsent:
                t.cancel()
            await _settle(unsent)
            sent = {t for t in inflight.values() if t not in unsent}
            still = await _finish_within(sent, timeout_s, cut_short)
            unfinished = [did for did, t in inflight.items() if t in still or t in unsent]
            sending = {did: self._sending[did] for did in unfinished if did in self._sending}
            for t in still:
                t.cancel()
            await _settle(still)
            if unfinished:
                log.info("shutdown: %d unfinished deliveries given back", len(unfinished))
                if sending:
                    await self._record_interrupted(sending)
                await self.store.release(unfinished, self.clock(), owner=self.owner)
        if self._finished:
            # No claim of ours will recheck the hooks whose deliveries finished: a claim of
            # nothing does, so a hook that was at its cap is not held until its old lease ends.
            recheck, self._finished = sorted(self._finished), set()
            try:
                await self.store.claim_due(
                    now=self.clock(), limit=0, lease_s=self.cfg.lease, owner=self.owner,
                    tenant_cap=self.cfg.tenant_max_in_flight, recheck=recheck,
                )
            except Exception:
                log.exception("shutdown: rechecking %d hooks failed", len(recheck))
        if self._keeper is not None:
            self._keeper.cancel()
            await _settle([self._keeper])
            self._keeper = None

    async def _record_interrupted(self, sending: dict[str, tuple[str, float]]) -> None:
        """Sends cut off by the shutdown: the receiver may have read the request (and acted on
        it), so the send after the restart must not be a silent second one. Each is a recorded
        attempt that uses no try, and the delivery is due at once."""
        now = self.clock()
        reason = "interrupted by a shutdown before an answer (the receiver may have read the request)"
        outcomes = [
            Outcome(did, Attempt(number=0, started_at=began, duration_ms=max(0.0, (now - began) * 1000.0),
                                 status_code=None, error=reason, response_body=None),
                    "pending", now, False, reason, hook_id=hook_id)
            for did, (hook_id, began) in sending.items()
        ]
        try:
            await self.store.record_outcomes(outcomes, now, owner=self.owner)
        except Exception:  # given back below all the same
            log.exception("shutdown: recording %d interrupted attempts failed", len(outcomes))
        self._finished.update(hook_id for hook_id, _ in sending.values())

    # -- claiming --------------------------------------------------------------------------

    async def _worker(self, wake: asyncio.Event) -> None:
        """Claim while there are free slots; every claimed delivery is sent at once (the store's
        lanes only hand out work that may go now), so a slot is never held by a delivery that
        waits for a cap, a rate or a pause."""
        batch = max(1, self.cfg.batch)
        slots = batch * max(1, self.cfg.workers)
        low_water = max(1, batch // 4)  # claim again once this many slots are free
        mine: set[asyncio.Task[None]] = set()
        held = 0  # claims in a row that found a due lane held elsewhere (`_idle_wait`)
        while not self._stopping:
            if slots - len(mine) < low_water:
                await asyncio.wait(mine, return_when=asyncio.FIRST_COMPLETED)
                continue
            wake.clear()  # before the claim, so a notify that arrives during it is not lost
            try:
                claimed = await self._claim(min(batch, slots - len(mine)))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming deliveries failed; retrying")
                await asyncio.sleep(CLAIM_ERROR_PAUSE_S)
                continue
            for item in claimed:
                self._dispatch(item, mine)
            if claimed:
                held = 0
                if len(claimed) < low_water:
                    # A trickle (events arriving one by one): let a few more come due, so that
                    # one claim takes several instead of one transaction per event.
                    await asyncio.sleep(CLAIM_TRICKLE_S)
                continue
            # Nothing may go now. Wait for new work (a notify), the first lane's due time, or one
            # of our own deliveries to finish: that frees a slot of its hook and tenant, so its
            # lane may be due again (then a moment more, to claim what several freed at once).
            # A due lane held by a claim elsewhere: its news (a notify) is what that claim is
            # serving, so only the wait's end or a delivery of ours ends the wait.
            if not self._finished:
                idle, held = await self._idle_wait(held)
            if self._finished:
                # Deliveries of ours finished while the claim (or the read above) ran: their
                # lanes may have room now, and none of ours may be left in flight to end the
                # wait below, which would then last the whole poll interval (a lane at its cap
                # is only looked at again by a claim that names it). Claim again, without
                # reading the next due time for nothing.
                await asyncio.sleep(CLAIM_TRICKLE_S)
                continue
            woken = asyncio.ensure_future(wake.wait())
            try:
                waits = {*mine} if held else {woken, *mine}
                if waits:
                    done, _ = await asyncio.wait(waits, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(idle)
                    done = set()
            finally:
                woken.cancel()
            if done and woken not in done:
                await asyncio.sleep(CLAIM_TRICKLE_S)

    async def _idle_wait(self, held: int) -> tuple[float, int]:
        """Until the first lane is due (a rate-limited hook's next turn, a retry), at most the
        poll interval: the poll is what notices work another instance made due.

        A lane due now that the claim did not serve is held by a claim elsewhere (another
        instance's: a claim skips the lanes another holds): `held` such claims in a row wait
        longer each time (5 ms doubled, up to `HELD_WAIT_MAX_S`), so that instances sharing
        one busy lane do not keep claiming it in turn for nothing. Returns the wait and the
        new count (0: no lane was held)."""
        wait = float(self.cfg.poll_interval)
        try:
            due = await self.store.next_due()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reading the next due time failed")
            return wait, 0
        if due is None:
            return wait, 0
        ahead = due - self.clock()
        if ahead > 0:
            return max(IDLE_MIN_S, min(wait, ahead)), 0
        return min(wait, IDLE_MIN_S * 2 ** min(held, 6), HELD_WAIT_MAX_S), held + 1

    async def _claim(self, limit: int) -> list[Claimed]:
        """Claim due deliveries; a claim interrupted by shutdown is given back, not lost."""
        recheck, self._finished = self._finished, set()
        task = asyncio.ensure_future(
            self.store.claim_due(
                now=self.clock(), limit=limit, lease_s=self.cfg.lease, owner=self.owner,
                tenant_cap=self.cfg.tenant_max_in_flight, recheck=sorted(recheck),
            )
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._finished |= recheck
            with contextlib.suppress(Exception):
                claimed = await task
                if claimed:
                    await self.store.release([c.delivery.id for c in claimed], self.clock(), owner=self.owner)
            raise
        except Exception:
            self._finished |= recheck  # looked at again by the next claim
            raise

    def _dispatch(self, item: Claimed, mine: set[asyncio.Task[None]]) -> None:
        did = item.delivery.id
        if did in self._inflight:  # still in flight here (its lease had run out): let it finish
            return
        run = self._deliver(item)  # with tracing on, in a span continuing the ingest's trace
        task = asyncio.create_task(tracing.delivery_attempt(item, run) if tracing.ENABLED else run,
                                   name=f"delivery-{did}")
        self._inflight[did] = task
        mine.add(task)
        task.add_done_callback(mine.discard)
        task.add_done_callback(lambda _t: self._inflight.pop(did, None))
        task.add_done_callback(lambda _t: self._begun.discard(did))

    async def _keep_leases(self) -> None:
        """Renew the leases of in-flight deliveries so only a dead engine's rows come due; and,
        as a safety net, make due any hook whose pending deliveries have no due time."""
        every = max(0.05, self.cfg.lease / 3)
        while True:
            await asyncio.sleep(every)
            try:
                repaired = await self.store.repair_lanes()
                if repaired:
                    log.warning("%d hooks had pending deliveries but no due time; made due", repaired)
                    self.notify(announce=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("repairing delivery lanes failed")
            ids = list(self._inflight)
            if not ids:
                continue
            try:
                await self.store.extend_leases(ids, self.clock() + self.cfg.lease, owner=self.owner)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("renewing delivery leases failed")

    async def _purger(self) -> None:
        while not self._stopping:
            try:
                await self.purge()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("purge failed")
            await asyncio.sleep(self.cfg.purge_interval)

    async def purge(self) -> int:
        """Delete finished deliveries, their attempts and events older than the retention."""
        now = self.clock()
        removed = await self.store.purge(before=now - self.cfg.retention, now=now)
        if removed:
            log.info("purged %d finished deliveries older than the retention", removed)
        return removed

    # -- one delivery ----------------------------------------------------------------------

    async def _deliver(self, item: Claimed) -> None:
        d = item.delivery
        logs.bind(tenant_id=d.tenant_id, hook_id=d.hook_id, event_id=d.event_id, delivery_id=d.id)
        try:
            outcome = await self._attempt(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Our own failure, not the receiver's: still a recorded attempt that uses up one of
            # the schedule's tries, so that a bug cannot make a delivery loop.
            log.exception("delivery %s failed unexpectedly", d.id)
            reason = f"internal error: {type(exc).__name__}"
            now = self.clock()
            record = Attempt(number=0, started_at=now, duration_ms=0.0, status_code=None, error=reason,
                             response_body=None)
            outcome = self._failure(item, reason, uses_attempt=True, result=None)
            outcome.attempt = record
        outcome.hook_id = d.hook_id
        # Stored before the outcome: at least once.
        await self._while_unavailable(d.id, lambda: self.ops.for_outcome(item, outcome))
        tracing.outcome(outcome)
        try:
            await self._while_unavailable(
                d.id, lambda: self.store.record_outcomes([outcome], self.clock(), owner=self.owner)
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # the lease runs out and the delivery is tried again
            log.exception("recording the outcome of delivery %s failed", d.id)
            return
        finally:
            self._finished.add(d.hook_id)  # a slot of its hook is free: the next claim looks
        if outcome.status == "succeeded":
            self.delivered += 1
        self.metrics.attempted(outcome)
        logs.attempt(outcome)

    async def _while_unavailable(self, delivery_id: str, write: Callable[[], Awaitable[T]]) -> T:
        """`write()` (or a read), tried again with growing pauses while the database cannot
        store anything (disk full, locked) or is away: the delivery stays in flight here, its
        lease renewed once the database allows, so an attempt already made is recorded rather
        than lost (if the lease runs out meanwhile, it may be sent again: at least once). A
        shutdown's drain waits for it like for a send, and at the end of the grace cancels it
        and gives the delivery back."""
        pause = RECORD_RETRY_MIN_S
        while True:
            try:
                return await write()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                unavailable = database_unavailable(exc)
                if unavailable is None:
                    raise
                log.warning("delivery %s: %s; recording again in %.1f s",
                            delivery_id, unavailable.message, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RECORD_RETRY_MAX_S)

    async def _attempt(self, item: Claimed) -> Outcome:
        # The hook's view and its destination's pause, read while the database is away, are
        # waited for like a write: nothing was sent, so the delivery uses up no try.
        checked = await self._while_unavailable(item.delivery.id, lambda: self._check(item.delivery))
        if isinstance(checked, Outcome):
            return checked
        rate = checked.hook.rate_limit_per_second
        if rate:
            await self._await_turn(checked.hook.id, rate, item.not_before)
        result = await self._send(checked, item)
        # Judging writes too (a destination's pause, a disabled hook): the receiver has the
        # request, so a database that cannot store them now is waited for like the outcome's
        # write, not turned into an internal error that uses up a try and sends it again.
        return await self._while_unavailable(
            item.delivery.id,
            lambda: self._judged(item, checked, result),
        )

    async def _judged(self, item: Claimed, live: LiveHook, result: AttemptResult) -> Outcome:
        return await self.control.judged(item, live, result, await self._classify(item, live, result))

    async def _await_turn(self, hook_id: str, rate: float, not_before: float | None) -> None:
        """A rate-limited hook's turn: the claim handed it out (at most `RATE_AHEAD_S` ahead),
        and it comes no sooner than 1/rate after this engine's previous send to the hook, which
        may have gone out late (its view loading): the receiver sees the spacing it asked for.
        The wait is short by construction, and bounded all the same."""
        interval = 1.0 / rate
        earliest = not_before or 0.0
        reserved = self._turns.get(hook_id)
        if reserved is not None:
            earliest = max(earliest, reserved + interval)
        # Reserved before any wait: a turn of the same hook awaited meanwhile by another worker
        # of this engine comes 1/rate after this one, never at the same moment.
        self._turns[hook_id] = max(earliest, self.clock())
        for _ in range(2):  # this turn, then 1/rate after the previous send if that went out late
            wait = earliest - self.clock()
            if wait > 0:
                await asyncio.sleep(min(wait, RATE_AHEAD_S + TURN_LATENESS_MAX_S))
            last = self._last_send.get(hook_id)
            if last is None or last + interval <= self.clock():
                break
            earliest = last + interval
        self._last_send[hook_id] = self.clock()
        if len(self._last_send) > 10_000:  # hooks come and go: forget the quiet ones
            horizon = self.clock() - 60.0
            self._last_send = {h: t for h, t in self._last_send.items() if t >= horizon}
            self._turns = {h: t for h, t in self._turns.items() if t >= horizon}

    async def _check(self, d: Delivery) -> LiveHook | Outcome:
        """The hook to send to now, or the outcome that holds the delivery back."""
        view = await self.registry.view(d.tenant_id)
        live = view.hooks.get(d.hook_id) if view else None
        if live is None or not live.hook.enabled:
            # The claim found the hook enabled in the database just now: a cached view that
            # says otherwise may be older than an edit made elsewhere (another instance). Read
            # it again before cancelling or parking on its word.
            self.registry.invalidate(d.tenant_id, announce=False)
            view = await self.registry.view(d.tenant_id)
            live = view.hooks.get(d.hook_id) if view else None
        if live is None:
            return Outcome(d.id, None, "cancelled", None, False, "hook deleted")
        if not live.hook.enabled:
            # Parked: it waits, without using attempts, until the hook is enabled again.
            return Outcome(d.id, None, "pending", PARKED_AT, False, None)
        paused = await self.pauses.check(d.tenant_id, destination(live.hook.url))
        if paused is not None:
            return Outcome(d.id, None, "pending", paused, False, None, lane_until=paused)
        return live

    async def _send(self, live: LiveHook, item: Claimed) -> AttemptResult:
        now = self.clock()  # a fresh webhook-timestamp on every attempt; the id stays the delivery's
        body = render_body(live.hook.format, item.delivery.trigger_id, item.body, now)
        headers = request_headers(live, item.delivery.id, body, now)
        self._sending[item.delivery.id] = (live.hook.id, now)  # a shutdown records it (`stop`)
        self._begun.add(item.delivery.id)  # from now on a shutdown lets it finish (`stop`)
        try:
            return await deliver(
                live,
                self._transport(),
                body,
                headers,
                timeout_s=live.hook.timeout_ms / 1000.0,
                body_cap=ANSWER_MAX_BYTES,
                clock=self.clock,
            )
        finally:
            self._sending.pop(item.delivery.id, None)

    async def _classify(self, item: Claimed, live: LiveHook, result: AttemptResult) -> Outcome:
        outcome = await self._judge(item, live, result)
        if result.status_code is not None and outcome.throttled is None and item.throttled:
            outcome.throttled = 0  # an answer other than 429 ends the hook's run of 429s
        return outcome

    async def _judge(self, item: Claimed, live: LiveHook, result: AttemptResult) -> Outcome:
        d = item.delivery
        now = self.clock()
        asked = pause_until(result.rate_limit, self.cfg.ratelimit_remaining_threshold, now)
        until = clamp_pause(asked, now, self.cfg.max_pause)
        if until is not None and await self.pauses.pause(d.tenant_id, destination(live.hook.url), until):
            await self.ops.paused(d.tenant_id, destination(live.hook.url), until, live.hook.id)
        status = result.status_code
        if result.ok:
            try:
                answer = points.parse_receiver_answer(status or 200, result.content_type, result.body)
            except points.AnswerError as exc:  # a 2xx that is not JSON: SPEC's wire protocol says failed
                return self._failure(item, exc.message, uses_attempt=True, result=result, floor=until)
            # A 200 with an error envelope is delivered too (Auth0 logged such errors); the error
            # stays in the attempt record.
            return Outcome(d.id, result.record(note=error_note(answer)), "succeeded", None, True, None,
                           lane_until=until)
        if result.closed_reused:
            # The receiver closed a kept-alive connection without answering; it may or may not
            # have read the request. Sent again at once on a new connection, as a new attempt
            # that is recorded like this one; it uses up no try of the schedule.
            return Outcome(d.id, result.record(), "pending", max(now, until or 0.0), False, result.error,
                           lane_until=until)
        if status == 410:
            reason = f"receiver answered 410 Gone at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))}"
            await self.disable_hook(live, reason)
            return Outcome(d.id, result.record(), "pending", PARKED_AT, True,
                           f"{result.error}; hook disabled")
        if status == 429:
            return self._rate_limited(item, result, floor=until)
        return self._failure(item, result.error or "failed", uses_attempt=True, result=result, floor=until)

    def _rate_limited(self, item: Claimed, result: AttemptResult, *, floor: float | None) -> Outcome:
        """A 429 is the receiver pacing us, not a failure of this delivery: no attempt is used.
        The delivery waits at least its `Retry-After` (up to `max_pause`) and at least
        `throttle_floor` doubled for each 429 in a row from the hook (up to `throttle_max`), so
        that `Retry-After: 0` cannot make a loop. From the second 429 in a row on, the whole hook
        waits as long: a backlog cannot turn one receiver's 429s into a flood either (a single
        429, often one of several requests already in flight, holds back only its delivery, as
        SPEC has it; the hook-wide pause is `X-RateLimit-Remaining`'s). Only the maximum age
        ends the delivery."""
        d = item.delivery
        now = self.clock()
        cfg = self.cfg
        in_a_row = item.throttled + 1
        backoff = rate_limited_delay(None, in_a_row, floor_s=cfg.throttle_floor, max_s=cfg.throttle_max)
        asked = min(result.retry_after, cfg.max_pause) if result.retry_after is not None else 0.0
        due = max(now + max(backoff, asked), floor or 0.0)
        if due - d.created_at > cfg.max_age:
            return Outcome(d.id, result.record(), "failed", None, False,
                           "max age exceeded (receiver answered 429)", throttled=in_a_row)
        return Outcome(d.id, result.record(), "pending", due, False, result.error,
                       throttled=in_a_row, lane_until=due if in_a_row >= 2 else floor)

    def _failure(
        self, item: Claimed, reason: str, *, uses_attempt: bool, result: AttemptResult | None,
        floor: float | None = None,
    ) -> Outcome:
        """The next try by the schedule (never before a 503's `Retry-After` or a pause), or
        `failed` once the schedule is used up or the next try would pass the maximum age."""
        d = item.delivery
        now = self.clock()
        made = d.attempt_count + (1 if uses_attempt else 0)
        record = result.record(note=reason) if result is not None else None
        if made > len(self.cfg.retry_schedule):
            return Outcome(d.id, record, "failed", None, uses_attempt, reason, lane_until=floor)
        due = now + self.wait.delay(max(1, made))
        if result is not None and result.retry_after is not None and result.status_code == 503:
            due = max(due, now + min(result.retry_after, self.cfg.max_pause))
        if floor is not None:
            due = max(due, floor)
        if due - d.created_at > self.cfg.max_age:
            return Outcome(d.id, record, "failed", None, uses_attempt, f"{reason}; max age exceeded",
                           lane_until=floor)
        return Outcome(d.id, record, "pending", due, uses_attempt, reason, lane_until=floor)

    async def disable_hook(self, live: LiveHook, reason: str) -> None:
        hook = live.hook
        await self.store.update_hook(hook.tenant_id, hook.id, {"enabled": False, "disabledReason": reason},
                                     self.clock())
        self.registry.invalidate(hook.tenant_id)
        log.warning("hook %s disabled: %s", hook.id, reason)
        await self.ops.hook_disabled(hook, reason)


async def _finish_within(
    tasks: set[asyncio.Task[None]], timeout_s: float, cut_short: asyncio.Event | None
) -> set[asyncio.Task[None]]:
    """Wait for `tasks` to end, for at most `timeout_s` or until `cut_short` is set; return
    those still running (not cancelled)."""
    if not tasks:
        return set()
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(asyncio.wait(tasks))}
    if cut_short is not None:
        waiters.add(asyncio.ensure_future(cut_short.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()  # waiting for the tasks is cancelled, not the tasks
        await asyncio.gather(*waiters, return_exceptions=True)
    return {t for t in tasks if not t.done()}


async def _settle(tasks: Any) -> None:
    """Wait for (cancelled) tasks to end; log what ended with an error instead of raising."""
    for t in list(tasks):
        try:
            await t
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("delivery task %s ended with an error", t.get_name())
