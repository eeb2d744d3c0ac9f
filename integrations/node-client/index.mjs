export {
  BLOCKING_TRIGGERS, DEFAULT_EMIT_DEADLINE_MS, DEFAULT_INVOKE_DEADLINE_MS, EVENT_TRIGGERS, HooksGatewayClient, readEnvelope,
} from './client.mjs';
export {
  ApiError, DeadlineExceeded, GatewayError, HookDenied, HookError, ProtocolError, RateLimited, TransportError,
} from './errors.mjs';
export { DEFAULT_RATELIMIT } from './ratelimit.mjs';
