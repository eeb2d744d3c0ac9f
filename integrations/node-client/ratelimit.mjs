// The seed's advice on rate limits, as the Python SDK follows it (gateway/client/ratelimit.py).
//
// Every answer of the gateway carries X-RateLimit-Limit, X-RateLimit-Remaining and
// X-RateLimit-Reset (unix seconds when its token bucket is full again), per tenant and API.
//
// - Pacing: a Pacer remembers what the last answer said of its bucket. When Remaining is at or
//   below `paceBelow`, the next call waits until Reset before it is sent. Calls in flight count
//   against Remaining, so concurrent callers pace too. A wait that would pass the call's
//   deadline or `maxWaitMs` is skipped: the gateway then decides, and a 429 is handled below.
// - Back-off on 429: never earlier than Retry-After (or the reset when there is none), plus an
//   exponential, jittered back-off; at most `maxTries` requests in all. When the tries are used
//   up, or the wait asked for is longer than `maxWaitMs` or the call's deadline, the call
//   throws RateLimited carrying the reset time. No loop here is unbounded.
import { RateLimited } from './errors.mjs';

export const DEADLINE_MARGIN_MS = 50; // a wait is not started with less than this left before the deadline
export const RESET_DELTA_MAX_S = 1_000_000_000; // X-RateLimit-Reset below this is seconds from now
export const MAX_BUCKETS = 10_000; // buckets remembered per client (one per tenant)
const MAX_EXPONENT = 32;

export const DEFAULT_RATELIMIT = Object.freeze({
  paceBelow: 0, // wait for the reset when X-RateLimit-Remaining is at or below this
  maxTries: 4, // requests per call at most, the first included (only 429s are retried)
  backoffBaseMs: 250, // back-off added to Retry-After on the first retry, doubled after ...
  backoffMaxMs: 8_000, // ... up to this
  maxWaitMs: 60_000, // one wait longer than this gives up at once with RateLimited
});

export function ratelimitPolicy(options = {}) {
  const policy = { ...DEFAULT_RATELIMIT, ...options };
  if (!Number.isInteger(policy.maxTries) || policy.maxTries < 1) throw new TypeError('ratelimit.maxTries must be an integer, 1 or more');
  if (!Number.isInteger(policy.paceBelow) || policy.paceBelow < 0) throw new TypeError('ratelimit.paceBelow must be an integer, 0 or more');
  for (const key of ['backoffBaseMs', 'backoffMaxMs', 'maxWaitMs']) {
    if (!Number.isFinite(policy[key]) || policy[key] < 0) throw new TypeError(`ratelimit.${key} must be a finite number of milliseconds, 0 or more`);
  }
  return Object.freeze(policy);
}

const DECIMAL = /^\d{1,19}(\.\d{1,19})?$/;

function number(value) {
  if (value == null) return null;
  const text = value.trim();
  return DECIMAL.test(text) ? Number(text) : null;
}

function retryAfterSeconds(value, nowS) {
  const seconds = number(value);
  if (seconds !== null || value == null) return seconds;
  const when = Date.parse(value); // an HTTP date
  return Number.isNaN(when) ? null : Math.max(0, when / 1000 - nowS);
}

// The rate-limit headers of one answer (a Headers object) received at `nowMs`; never throws.
export function parseRateLimit(headers, nowMs) {
  const nowS = nowMs / 1000;
  const reset = number(headers.get('x-ratelimit-reset'));
  const limit = number(headers.get('x-ratelimit-limit'));
  const remaining = number(headers.get('x-ratelimit-remaining'));
  return {
    limit: limit === null ? null : Math.floor(limit),
    remaining: remaining === null ? null : Math.floor(remaining),
    resetAt: reset === null ? null : (reset < RESET_DELTA_MAX_S ? nowS + reset : reset), // unix seconds
    retryAfter: retryAfterSeconds(headers.get('retry-after'), nowS), // seconds
  };
}

export function rateLimitedError(info, message, attempts) {
  let text = message;
  if (info.retryAfter !== null) text += `; retry after ${info.retryAfter} s`;
  if (info.resetAt !== null) text += `; the limit resets at unix time ${Math.round(info.resetAt)}`;
  return new RateLimited(text, { ...info, attempts });
}

// What the client knows of one of the gateway's buckets, from the answers it got.
export class Pacer {
  limit = null;
  remaining = null;
  resetAt = null; // unix seconds

  // The gateway's reset never goes back as it serves requests, so an answer with an earlier
  // reset than one already seen was overtaken on the way: it is stale. With the same reset,
  // the lower count wins, including this client's own count of calls sent.
  observe(info) {
    if (info.remaining === null) return;
    if (this.resetAt !== null && info.resetAt !== null) {
      if (info.resetAt < this.resetAt) return;
      if (info.resetAt === this.resetAt && this.remaining !== null) {
        this.remaining = Math.min(this.remaining, info.remaining);
        this.limit = info.limit;
        return;
      }
    }
    this.limit = info.limit;
    this.remaining = info.remaining;
    this.resetAt = info.resetAt;
  }

  // Milliseconds to wait before the next request (0: send now), counting that request as spent.
  delay(nowMs, paceBelow) {
    if (this.resetAt !== null && nowMs >= this.resetAt * 1000) {
      this.remaining = this.limit; // past the reset the bucket is full again
      this.resetAt = null;
    }
    if (this.remaining === null) return 0;
    if (this.remaining <= paceBelow && this.resetAt !== null) return this.resetAt * 1000 - nowMs;
    this.remaining -= 1;
    return 0;
  }
}

export class Pacers {
  #pacers = new Map();

  get(key) {
    let pacer = this.#pacers.get(key);
    if (pacer === undefined) {
      pacer = new Pacer();
      while (this.#pacers.size >= MAX_BUCKETS) this.#pacers.delete(this.#pacers.keys().next().value);
    } else {
      this.#pacers.delete(key); // most recently used last
    }
    this.#pacers.set(key, pacer);
    return pacer;
  }
}

// The wait before a request, or 0 when there is none or it does not fit (then the request goes
// out at once and the gateway decides).
export function pacingWait(pacer, policy, nowMs, deadlineAt) {
  const wait = pacer.delay(nowMs, policy.paceBelow);
  if (wait <= 0 || wait > policy.maxWaitMs) return 0;
  if (nowMs + wait + DEADLINE_MARGIN_MS >= deadlineAt) return 0;
  return wait;
}

// The shortest wait (ms) the gateway asked for with a 429.
function floorMs(err, nowMs) {
  if (err.retryAfter !== null) return err.retryAfter * 1000;
  if (err.resetAt !== null) return Math.max(0, err.resetAt * 1000 - nowMs);
  return 0;
}

// The wait before the next try after `err` (a RateLimited) on try number `attempt`, or null to
// give up: tries used, or a floor longer than maxWaitMs or than what is left before the deadline.
// The jitter is cut to fit; the floor never is.
export function backoffWait(err, attempt, policy, nowMs, deadlineAt, random) {
  if (attempt >= policy.maxTries) return null;
  const floor = floorMs(err, nowMs);
  if (floor > policy.maxWaitMs) return null;
  if (nowMs + floor + DEADLINE_MARGIN_MS >= deadlineAt) return null;
  const step = Math.min(policy.backoffMaxMs, policy.backoffBaseMs * 2 ** Math.min(attempt - 1, MAX_EXPONENT));
  const wait = floor + step / 2 + random() * (step / 2);
  const ceiling = Math.min(policy.maxWaitMs, deadlineAt - nowMs - DEADLINE_MARGIN_MS);
  return Math.max(floor, Math.min(wait, ceiling));
}
