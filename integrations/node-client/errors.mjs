// The client's one error tree, split by who must react (as the Python SDK's, gateway/client/errors.py):
//
//   GatewayError                 base of every error the client throws on purpose
//   ├── TransportError           the gateway could not be reached, or did not answer HTTP
//   │   └── DeadlineExceeded     the call's deadline passed before or while it was in flight
//   ├── ProtocolError            the gateway answered something the client cannot read
//   ├── ApiError                 the gateway refused the call: {statusCode, error, message}
//   │   └── RateLimited          429 until the client gave up: carries resetAt
//   └── HookError                a blocking point answered Auth0's error envelope
//       └── HookDenied           PreUserRegistrationError: the signup is refused
//
// `HookError` is the hooks' decision; every other `GatewayError` means the gateway's answer
// could not be had: an integration decides there whether to fail closed or open.

export const ERROR_MESSAGE_MAX_CHARS = 300; // of a message copied from an answer into an error

export function bounded(text) {
  const value = String(text ?? '');
  return value.length > ERROR_MESSAGE_MAX_CHARS ? `${value.slice(0, ERROR_MESSAGE_MAX_CHARS - 1)}…` : value;
}

export class GatewayError extends Error {
  constructor(message, options) {
    super(bounded(message), options);
    this.name = new.target.name;
  }
}

export class TransportError extends GatewayError {}

export class DeadlineExceeded extends TransportError {}

export class ProtocolError extends GatewayError {}

export class ApiError extends GatewayError {
  constructor(status, error, message) {
    super(`${status} ${error}: ${message}`);
    this.status = status;
    this.error = bounded(error);
    this.detail = bounded(message); // the gateway's own `message`
  }
}

export class RateLimited extends ApiError {
  // resetAt: unix seconds when the gateway's bucket is full again (X-RateLimit-Reset), or null;
  // retryAfter: seconds the gateway asked to wait (Retry-After), or null; attempts: requests sent.
  constructor(message, { resetAt = null, retryAfter = null, limit = null, remaining = null, attempts = 1 } = {}) {
    super(429, 'Too Many Requests', message);
    this.resetAt = resetAt;
    this.retryAfter = retryAfter;
    this.limit = limit;
    this.remaining = remaining;
    this.attempts = attempts;
  }
}

// The OAuth2 error (RFC 6749, 5.2) a token endpoint answers for each error name of a blocking point.
const OAUTH_ERRORS = new Map([
  ['InvalidScopeError', 'invalid_scope'],
  ['InvalidRequestError', 'invalid_request'],
  ['PreUserRegistrationError', 'access_denied'],
]);

export class HookError extends GatewayError {
  // `name`, `message` and `friendlyMessage` (the text meant for the end user) are the envelope's,
  // so that `String(err)` reads as Auth0 logged it: "InvalidScopeError: admin is not granted".
  constructor(trigger, name, message, friendlyMessage = null) {
    super(message);
    this.name = bounded(name);
    this.trigger = trigger;
    this.friendlyMessage = friendlyMessage == null ? null : bounded(friendlyMessage);
    this.oauthError = OAUTH_ERRORS.get(name) ?? 'server_error';
  }

  // The error envelope as the gateway answered it.
  get envelope() {
    const data = { name: this.name, message: this.message };
    if (this.friendlyMessage !== null) data.friendlyMessage = this.friendlyMessage;
    return { status: 'error', data };
  }
}

export class HookDenied extends HookError {}

export function hookError(trigger, name, message, friendlyMessage) {
  const Kind = name === 'PreUserRegistrationError' ? HookDenied : HookError;
  return new Kind(trigger, name, message, friendlyMessage);
}

// The error for an HTTP error answer whose JSON is `body` (any shape is tolerated).
export function apiError(status, body) {
  const error = typeof body?.error === 'string' ? body.error : `HTTP ${status}`;
  const message = typeof body?.message === 'string' ? body.message : '(no message)';
  return new ApiError(status, error, message);
}
