// node-oidc-provider forwards `client_credentials` token issuance to the hooks gateway's
// `credentials-exchange` point, as Auth0 ran its Client Credentials Exchange hooks:
//
//   import Provider from 'oidc-provider';
//   import { HooksGatewayClient } from '@hooks-gateway/node-client';
//   import { withCredentialsExchange } from '@hooks-gateway/oidc-provider';
//
//   const gateway = new HooksGatewayClient({ baseUrl, token: serviceToken, deadlineMs: 3000 });
//   const provider = new Provider(issuer, withCredentialsExchange(configuration, { gateway, tenant: 'acme' }));
//
// Two documented hooks of oidc-provider do the work. `extraTokenClaims` runs once as each
// ClientCredentials token is issued: it calls the gateway, sets the token's scope to the hooks'
// answer and returns their namespaced claims. `formats.customizers.jwt` then writes that scope
// into the JWT access token (oidc-provider read the scope before `extraTokenClaims` ran).
// Both chain to the hooks the configuration already had; other token kinds pass untouched.
//
// The hooks' errors become OAuth2 errors of the token endpoint: InvalidScopeError is
// `invalid_scope`, InvalidRequestError `invalid_request`, anything else `server_error`. When
// the gateway cannot be asked (unreachable, deadline, rate limited, refused), `failOpen`
// decides: false (the default) answers `server_error`; true issues the token as requested.
import { errors } from 'oidc-provider';
import { GatewayError, HookError } from '@hooks-gateway/node-client';

const TRIGGER = 'credentials-exchange';
const RESERVED_CLAIM_HOSTS = ['auth0.com', 'webtask.io', 'webtask.run'];
const applied = new WeakSet(); // tokens whose scope the hooks set

// The gateway's error: status 500, error `server_error`, with a description (oidc-provider
// hides the description of its own 5xx errors behind "oops! something went wrong").
export class HooksServerError extends errors.OIDCProviderError {
  constructor(description, options) {
    super(500, 'server_error', options);
    this.error_description = description;
    this.expose = true;
  }
}

// A claim the hooks may add: a URL (http or https) whose host is not Auth0's, as the gateway
// keeps them (gateway/points/answers.py); registered JWT claims are never URLs.
export function isNamespacedClaim(name) {
  let url;
  try {
    url = new URL(name);
  } catch {
    return false;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return false;
  const host = url.hostname.replace(/\.$/, '').toLowerCase();
  return Boolean(host) && !RESERVED_CLAIM_HOSTS.some((h) => host === h || host.endsWith(`.${h}`));
}

function isPlainObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function defaultClientMetadata(client) {
  const metadata = client.metadata().client_metadata;
  return isPlainObject(metadata) ? metadata : {};
}

function oauthError(err) {
  const description = err.message || undefined;
  switch (err.oauthError) {
    case 'invalid_scope':
      return new errors.InvalidScope(description);
    case 'invalid_request':
      return new errors.InvalidRequest(description);
    case 'access_denied':
      return new errors.AccessDenied(description);
    default:
      // A hook failed: its message is for the tenant's logs, not for the client.
      return new HooksServerError('a hook of this token request failed');
  }
}

// The `extraTokenClaims` and `formats.customizers.jwt` functions for a provider's configuration.
//   gateway         a HooksGatewayClient (@hooks-gateway/node-client)
//   tenant          the gateway's tenant: a string, or (ctx, client) => string
//   failOpen        false (default: answer server_error), true, or (ctx, client) => boolean
//   deadlineMs      the call's deadline (default: the client's)
//   clientMetadata  (client) => object sent as client.metadata (default: the client's
//                   `client_metadata` property, registered with extraClientMetadata)
//   context         (ctx) => object sent as the event's context (default: {ip, userAgent})
//   logger          receives warn(...) when the gateway could not be asked (default: console)
export function credentialsExchange({
  gateway, tenant, failOpen = false, deadlineMs, clientMetadata = defaultClientMetadata,
  context = (ctx) => ({ ip: ctx.ip, userAgent: ctx.get('user-agent') }), logger = console,
  extraTokenClaims: inner, jwtCustomizer: innerCustomizer,
} = {}) {
  if (!gateway || typeof gateway.invoke !== 'function') throw new TypeError('gateway must be a HooksGatewayClient');
  if (typeof tenant !== 'string' && typeof tenant !== 'function') throw new TypeError('tenant must be a string or a function');

  async function ask(ctx, token) {
    const { client } = token;
    const body = {
      audience: token.resourceServer?.audience ?? token.resourceServer?.identifier() ?? '',
      client: {
        id: client.clientId,
        name: client.clientName ?? client.clientId,
        tenant: typeof tenant === 'function' ? await tenant(ctx, client) : tenant,
        metadata: clientMetadata(client),
      },
      scope: (token.scope ?? '').split(' ').filter(Boolean),
      context: context(ctx),
    };
    try {
      return await gateway.invoke(body.client.tenant, TRIGGER, body, { deadlineMs });
    } catch (err) {
      if (err instanceof HookError) throw oauthError(err);
      if (!(err instanceof GatewayError)) throw err;
      const open = typeof failOpen === 'function' ? await failOpen(ctx, client) : failOpen;
      logger.warn(`hooks gateway: ${TRIGGER} for client ${client.clientId} failed (${err.name}: ${err.message});`
        + ` ${open ? 'issuing the token as requested (fail open)' : 'refusing the token (fail closed)'}`);
      if (open) return null;
      throw new HooksServerError('the hooks of this token request could not be run');
    }
  }

  async function extraTokenClaims(ctx, token) {
    const own = inner ? await inner(ctx, token) : undefined;
    if (token.kind !== 'ClientCredentials') return own;
    const result = await ask(ctx, token);
    if (result === null) return own;
    const scope = result.scope.join(' ') || undefined;
    if (token.format !== 'jwt' && scope !== token.scope) {
      // An opaque token's stored scope was read before this hook ran: it cannot be changed.
      throw new HooksServerError('the scope set by the hooks needs JWT access tokens');
    }
    token.scope = scope;
    applied.add(token);
    const claims = Object.fromEntries(Object.entries(result.claims).filter(([name]) => isNamespacedClaim(name)));
    return { ...claims, ...own }; // the provider's own claims win over the hooks'
  }

  async function jwtCustomizer(ctx, token, jwt) {
    if (applied.has(token)) jwt.payload.scope = token.scope;
    if (innerCustomizer) await innerCustomizer(ctx, token, jwt);
  }

  return { extraTokenClaims, jwtCustomizer };
}

// A copy of an oidc-provider configuration with the credentials-exchange hooks installed
// (chained to its own extraTokenClaims and JWT customizer, if any).
export function withCredentialsExchange(configuration, options) {
  const hooks = credentialsExchange({
    ...options,
    extraTokenClaims: configuration.extraTokenClaims,
    jwtCustomizer: configuration.formats?.customizers?.jwt,
  });
  return {
    ...configuration,
    extraTokenClaims: hooks.extraTokenClaims,
    formats: {
      ...configuration.formats,
      customizers: { ...configuration.formats?.customizers, jwt: hooks.jwtCustomizer },
    },
  };
}
