// The auth server's side of the hooks gateway, for Node: forward each extensibility point.
//
//   const gateway = new HooksGatewayClient({ baseUrl, token, deadlineMs: 3000 });
//   const { scope, claims } = await gateway.invoke('acme', 'credentials-exchange', body);
//   const { eventId } = await gateway.emit('acme', 'post-user-registration', body, { idempotencyKey });
//
// One client per process: Node's fetch keeps its connections alive and reuses them. Each call
// has one deadline: the waits for the rate limit, the back-off after a 429 and the request all
// fit in it (gateway/client/session.py does the same in Python).
import {
  DeadlineExceeded, GatewayError, ProtocolError, RateLimited, TransportError, apiError, hookError,
} from './errors.mjs';
import { Pacers, backoffWait, pacingWait, parseRateLimit, rateLimitedError, ratelimitPolicy } from './ratelimit.mjs';

export const BLOCKING_TRIGGERS = Object.freeze(['credentials-exchange', 'pre-user-registration', 'send-phone-message']);
export const EVENT_TRIGGERS = Object.freeze(['post-user-registration', 'post-change-password']);
export const DEFAULT_INVOKE_DEADLINE_MS = 25_000; // the gateway's own 20 s, plus the trip
export const DEFAULT_EMIT_DEADLINE_MS = 10_000;
export const MAX_ANSWER_BYTES = 1024 * 1024; // a longer answer is a ProtocolError
export const USER_AGENT = 'hooks-gateway-node-client/0.1.0';

// Waits at least `ms` by the wall clock (a timer may fire a millisecond early; the rate-limit
// waits are "not before" times). Ends: each round waits what is left, and time moves on.
async function realSleep(ms) {
  const end = Date.now() + ms;
  for (let left = ms; left > 0; left = end - Date.now()) {
    await new Promise((resolve) => { setTimeout(resolve, Math.ceil(left)); });
  }
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function object(value, what) {
  if (!isObject(value)) throw new ProtocolError(`${what} in the gateway's answer is not an object`);
  return value;
}

// The typed-ish result of a blocking point's envelope; throws the HookError it answered.
export function readEnvelope(trigger, payload) {
  const envelope = object(payload, 'the envelope');
  const data = object(envelope.data ?? {}, '"data"');
  if (envelope.status === 'error') {
    const { name, message = '', friendlyMessage } = data;
    if (typeof name !== 'string' || typeof message !== 'string') {
      throw new ProtocolError('an error envelope from the gateway lacks a string name or message');
    }
    throw hookError(trigger, name, message, typeof friendlyMessage === 'string' ? friendlyMessage : null);
  }
  if (envelope.status !== 'success') throw new ProtocolError('"status" of the gateway\'s answer is neither "success" nor "error"');
  if (trigger === 'credentials-exchange') {
    const { scope = [], ...claims } = data;
    if (!Array.isArray(scope) || !scope.every((s) => typeof s === 'string')) {
      throw new ProtocolError('"scope" in the gateway\'s answer is not an array of strings');
    }
    return { trigger, scope, claims };
  }
  if (trigger === 'pre-user-registration') {
    const user = object(data.user ?? {}, '"user"');
    return {
      trigger,
      user_metadata: object(user.user_metadata ?? {}, '"user.user_metadata"'),
      app_metadata: object(user.app_metadata ?? {}, '"user.app_metadata"'),
    };
  }
  return { trigger, data };
}

function readEmitted(payload, replayed) {
  const body = object(payload, 'the answer');
  if (typeof body.eventId !== 'string') throw new ProtocolError('"eventId" is missing from the gateway\'s answer');
  const deliveries = (Array.isArray(body.deliveries) ? body.deliveries : []).map((item) => {
    const { hookId, deliveryId } = object(item, 'a delivery');
    if (typeof hookId !== 'string' || typeof deliveryId !== 'string') {
      throw new ProtocolError('a delivery in the gateway\'s answer lacks its ids');
    }
    return { hookId, deliveryId };
  });
  return { eventId: body.eventId, deliveries, replayed };
}

async function readJson(response, what) {
  const declared = Number(response.headers.get('content-length'));
  if (declared > MAX_ANSWER_BYTES) throw new ProtocolError(`the gateway's answer to ${what} is too large`);
  let text;
  try {
    text = await response.text();
  } catch (err) {
    if (err?.name === 'TimeoutError' || err?.name === 'AbortError') {
      throw new DeadlineExceeded(`the gateway's answer to ${what} did not arrive within the call's deadline`);
    }
    throw new TransportError(`the gateway's answer to ${what} broke off: ${err?.message}`, { cause: err });
  }
  if (text.length > MAX_ANSWER_BYTES) throw new ProtocolError(`the gateway's answer to ${what} is too large`);
  try {
    return JSON.parse(text);
  } catch {
    throw new ProtocolError(`the gateway's answer to ${what} is not JSON`);
  }
}

export class HooksGatewayClient {
  #baseUrl;
  #token;
  #deadlineMs;
  #emitDeadlineMs;
  #policy;
  #pacers = new Pacers();
  #fetch;
  #clock;
  #sleep;
  #random;

  // baseUrl: the gateway's root URL. token: a service token (scope forward:events), or a
  // function (sync or async) returning a fresh one before every request. deadlineMs: the default
  // deadline of invoke(); emitDeadlineMs: of emit(). ratelimit: see ratelimit.mjs.
  // fetch, clock (ms), sleep (ms) and random are seams for tests.
  constructor({
    baseUrl, token, deadlineMs = DEFAULT_INVOKE_DEADLINE_MS, emitDeadlineMs = DEFAULT_EMIT_DEADLINE_MS,
    ratelimit = {}, fetch = globalThis.fetch, clock = Date.now, sleep = realSleep, random = Math.random,
  } = {}) {
    if (typeof baseUrl !== 'string' || !/^https?:\/\//.test(baseUrl)) throw new TypeError('baseUrl must be an http(s) URL');
    if (typeof token !== 'string' && typeof token !== 'function') throw new TypeError('token must be a string or a function');
    for (const [key, value] of Object.entries({ deadlineMs, emitDeadlineMs })) {
      if (!Number.isFinite(value) || value <= 0) throw new TypeError(`${key} must be a positive number of milliseconds`);
    }
    this.#baseUrl = baseUrl.replace(/\/+$/, '');
    this.#token = token;
    this.#deadlineMs = deadlineMs;
    this.#emitDeadlineMs = emitDeadlineMs;
    this.#policy = ratelimitPolicy(ratelimit);
    this.#fetch = fetch;
    this.#clock = clock;
    this.#sleep = sleep;
    this.#random = random;
  }

  // Runs the hooks of a blocking point. Resolves to {trigger, scope, claims} for
  // credentials-exchange, {trigger, user_metadata, app_metadata} for pre-user-registration,
  // {trigger, data} for send-phone-message; throws HookError (HookDenied for a refused signup).
  async invoke(tenant, trigger, body, { deadlineMs } = {}) {
    if (!BLOCKING_TRIGGERS.includes(trigger)) throw new TypeError(`${trigger} is not a blocking point: use emit()`);
    const response = await this.#call(tenant, trigger, body, {}, deadlineMs ?? this.#deadlineMs);
    return readEnvelope(trigger, await readJson(response, trigger));
  }

  // Stores a non-blocking event for durable delivery; resolves to {eventId, deliveries, replayed}.
  // A repeat with the same idempotencyKey (1 to 255 visible ASCII characters) returns the first event.
  async emit(tenant, trigger, body, { idempotencyKey, deadlineMs } = {}) {
    if (!EVENT_TRIGGERS.includes(trigger)) throw new TypeError(`${trigger} is a blocking point: use invoke()`);
    const headers = idempotencyKey === undefined ? {} : { 'idempotency-key': idempotencyKey };
    const response = await this.#call(tenant, trigger, body, headers, deadlineMs ?? this.#emitDeadlineMs);
    const replayed = (response.headers.get('idempotent-replayed') ?? '').toLowerCase() === 'true';
    return readEmitted(await readJson(response, trigger), replayed);
  }

  // One call: pace, send, and on 429 back off, at most policy.maxTries requests in all.
  async #call(tenant, trigger, body, headers, deadlineMs) {
    const path = `/v1/tenants/${encodeURIComponent(tenant)}/triggers/${encodeURIComponent(trigger)}`;
    const pacer = this.#pacers.get(`ingest:${tenant}`);
    const deadlineAt = this.#clock() + deadlineMs;
    const payload = JSON.stringify(body);
    for (let attempt = 1; attempt <= this.#policy.maxTries; attempt += 1) {
      const wait = pacingWait(pacer, this.#policy, this.#clock(), deadlineAt);
      if (wait > 0) await this.#sleep(wait);
      const response = await this.#send(path, payload, headers, deadlineAt);
      const info = parseRateLimit(response.headers, this.#clock());
      pacer.observe(info);
      if (response.status === 429) {
        await response.body?.cancel();
        const err = rateLimitedError(info, `POST ${path}: rate limited by the gateway`, attempt);
        const backoff = backoffWait(err, attempt, this.#policy, this.#clock(), deadlineAt, this.#random);
        if (backoff === null) throw err;
        await this.#sleep(backoff);
        continue;
      }
      if (response.status >= 400) {
        let answer = null;
        try {
          answer = await readJson(response, trigger);
        } catch (err) {
          if (!(err instanceof GatewayError)) throw err;
        }
        throw apiError(response.status, answer);
      }
      return response;
    }
    throw new RateLimited(`POST ${path}: rate limited by the gateway`, { attempts: this.#policy.maxTries }); // unreachable
  }

  async #send(path, payload, headers, deadlineAt) {
    const left = deadlineAt - this.#clock();
    if (left <= 0) throw new DeadlineExceeded(`POST ${path}: the deadline passed before it was sent`);
    const token = typeof this.#token === 'function' ? await this.#token() : this.#token;
    try {
      return await this.#fetch(`${this.#baseUrl}${path}`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'user-agent': USER_AGENT,
          ...headers,
        },
        body: payload,
        redirect: 'manual',
        signal: AbortSignal.timeout(Math.max(1, Math.ceil(left))),
      });
    } catch (err) {
      if (err?.name === 'TimeoutError' || err?.name === 'AbortError') {
        throw new DeadlineExceeded(`POST ${path}: no answer within the call's deadline`);
      }
      throw new TransportError(`POST ${path}: ${err?.cause?.code ?? err?.name ?? 'Error'}: ${err?.cause?.message ?? err?.message}`, { cause: err });
    }
  }
}
