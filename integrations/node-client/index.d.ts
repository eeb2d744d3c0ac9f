// Types of @hooks-gateway/node-client (the code is plain ES modules: index.mjs).

export type BlockingTrigger = 'credentials-exchange' | 'pre-user-registration' | 'send-phone-message';
export type EventTrigger = 'post-user-registration' | 'post-change-password';

export interface RateLimitPolicy {
  /** Wait for X-RateLimit-Reset when X-RateLimit-Remaining is at or below this (default 0). */
  paceBelow?: number;
  /** Requests per call at most, the first included; only 429s are retried (default 4). */
  maxTries?: number;
  /** Back-off added to Retry-After on the first retry, doubled after (default 250). */
  backoffBaseMs?: number;
  /** ... up to this (default 8000). */
  backoffMaxMs?: number;
  /** One wait longer than this gives up at once with RateLimited (default 60000). */
  maxWaitMs?: number;
}

export interface HooksGatewayClientOptions {
  /** The gateway's root URL. */
  baseUrl: string;
  /** A service token (scope forward:events), or a function returning a fresh one before each request. */
  token: string | (() => string | Promise<string>);
  /** Default deadline of invoke(): waits, back-off and the request together (default 25000). */
  deadlineMs?: number;
  /** Default deadline of emit() (default 10000). */
  emitDeadlineMs?: number;
  ratelimit?: RateLimitPolicy;
  /** Seams for tests. */
  fetch?: typeof globalThis.fetch;
  clock?: () => number;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
}

export interface CredentialsExchangeResult {
  trigger: 'credentials-exchange';
  /** The access token's scopes (empty when the hooks reset them). */
  scope: string[];
  /** Namespaced custom claims for the access token. */
  claims: Record<string, unknown>;
}

export interface PreUserRegistrationResult {
  trigger: 'pre-user-registration';
  user_metadata: Record<string, unknown>;
  app_metadata: Record<string, unknown>;
}

export interface SendPhoneMessageResult {
  trigger: 'send-phone-message';
  data: Record<string, unknown>;
}

export interface Emitted {
  eventId: string;
  deliveries: { hookId: string; deliveryId: string }[];
  /** True when an earlier request with the same idempotency key stored the event. */
  replayed: boolean;
}

export class HooksGatewayClient {
  constructor(options: HooksGatewayClientOptions);
  invoke(tenant: string, trigger: 'credentials-exchange', body: object, options?: { deadlineMs?: number }): Promise<CredentialsExchangeResult>;
  invoke(tenant: string, trigger: 'pre-user-registration', body: object, options?: { deadlineMs?: number }): Promise<PreUserRegistrationResult>;
  invoke(tenant: string, trigger: 'send-phone-message', body: object, options?: { deadlineMs?: number }): Promise<SendPhoneMessageResult>;
  emit(tenant: string, trigger: EventTrigger, body: object, options?: { idempotencyKey?: string; deadlineMs?: number }): Promise<Emitted>;
}

export class GatewayError extends Error {}
export class TransportError extends GatewayError {}
export class DeadlineExceeded extends TransportError {}
export class ProtocolError extends GatewayError {}
export class ApiError extends GatewayError {
  status: number;
  error: string;
  /** The gateway's own message. */
  detail: string;
}
export class RateLimited extends ApiError {
  /** Unix seconds when the gateway's bucket is full again, or null. */
  resetAt: number | null;
  /** Seconds the gateway asked to wait, or null. */
  retryAfter: number | null;
  limit: number | null;
  remaining: number | null;
  /** Requests sent. */
  attempts: number;
}
export class HookError extends GatewayError {
  /** The envelope's name, e.g. InvalidScopeError; `message` is the envelope's message. */
  name: string;
  trigger: BlockingTrigger;
  /** The text meant for the end user, or null. */
  friendlyMessage: string | null;
  /** invalid_scope, invalid_request, access_denied or server_error. */
  oauthError: string;
  readonly envelope: { status: 'error'; data: { name: string; message: string; friendlyMessage?: string } };
}
export class HookDenied extends HookError {}

export const BLOCKING_TRIGGERS: readonly BlockingTrigger[];
export const EVENT_TRIGGERS: readonly EventTrigger[];
export const DEFAULT_INVOKE_DEADLINE_MS: number;
export const DEFAULT_EMIT_DEADLINE_MS: number;
export const DEFAULT_RATELIMIT: Readonly<Required<RateLimitPolicy>>;
export function readEnvelope(trigger: BlockingTrigger, payload: unknown): CredentialsExchangeResult | PreUserRegistrationResult | SendPhoneMessageResult;
