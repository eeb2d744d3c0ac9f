// A Better Auth plugin that forwards signups and password changes to the hooks gateway:
//
//   import { betterAuth } from 'better-auth';
//   import { HooksGatewayClient } from '@hooks-gateway/node-client';
//   import { hooksGateway } from '@hooks-gateway/better-auth';
//
//   const gateway = new HooksGatewayClient({ baseUrl, token: serviceToken, deadlineMs: 3000 });
//   export const auth = betterAuth({ ..., plugins: [hooksGateway({ gateway, tenant: 'acme' })] });
//
// - pre-user-registration, before a user is stored (Better Auth's `user.create.before` database
//   hook, so every way of signing up passes): a deny answers the sign-up request 400 with the
//   receiver's friendlyMessage and stores nothing; the user_metadata and app_metadata the hooks
//   return are stored on the user, in the fields `userMetadata` and `appMetadata` (JSON, not
//   settable by the sign-up body).
// - post-user-registration, after the user is stored (`user.create.after`).
// - post-change-password, after a password change (`account.update.after` of the credential
//   account: change-password and set-password) or reset (`emailAndPassword.onPasswordReset`).
// The two events are emitted before the request answers (`background: true` does not wait);
// a failure to emit is logged and never fails the request, since the user or password is
// already stored. When the gateway cannot be asked before a signup, `failOpen` decides: false
// (the default) refuses the signup with 503, true lets it through without the hooks.
import { randomUUID } from 'node:crypto';

import { APIError, getIP } from 'better-auth/api';
import { GatewayError, HookDenied, HookError } from '@hooks-gateway/node-client';

export const DEFAULT_DENIED_MESSAGE = 'Your sign-up was refused.';
export const UNAVAILABLE_MESSAGE = 'Sign-up is not available right now. Please try again later.';
const PASSWORD_ACCOUNT = 'credential';
const PASSWORD_SIGNUP = { path: '/sign-up/email' };

function isPlainObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function asObject(value) {
  if (isPlainObject(value)) return value;
  if (typeof value === 'string') { // an adapter that stores JSON as text
    try {
      const parsed = JSON.parse(value);
      return isPlainObject(parsed) ? parsed : {};
    } catch {
      return {};
    }
  }
  return {};
}

function requestInfo(endpoint) {
  const headers = endpoint?.request?.headers ?? endpoint?.headers;
  let ip;
  try {
    ip = headers && endpoint?.context?.options ? getIP(headers, endpoint.context.options) ?? undefined : undefined;
  } catch {
    ip = undefined;
  }
  const accept = typeof headers?.get === 'function' ? headers.get('accept-language') : undefined;
  const language = accept ? accept.split(',')[0].split(';')[0].trim() || undefined : undefined;
  return { ip, language };
}

// The connection a user signed up with, as Auth0 named its connections.
function defaultConnection(endpoint) {
  const path = endpoint?.path ?? '';
  if (path.startsWith('/sign-up/email')) return { id: 'email-password', name: 'email-password' };
  const provider = endpoint?.params?.id ?? endpoint?.params?.providerId;
  if (typeof provider === 'string') return { id: provider, name: provider };
  return { id: 'better-auth', name: 'better-auth' };
}

// The Better Auth plugin.
//   gateway        a HooksGatewayClient (@hooks-gateway/node-client)
//   tenant         the gateway's tenant: a string, or (endpointContext) => string
//   failOpen       false (default: refuse a signup the hooks could not check), true, or a function
//   deadlineMs     the deadline of the pre-user-registration call (default: the client's)
//   background     true: emit events without waiting (default false: the request waits, bounded
//                  by the client's emit deadline)
//   connection     (endpointContext) => {id, name}: the event's context.connection
//   deniedMessage  shown when a deny carries no friendlyMessage
//   logger         receives warn(...) and error(...) (default: console)
export function hooksGateway({
  gateway, tenant, failOpen = false, deadlineMs, background = false, connection = defaultConnection,
  deniedMessage = DEFAULT_DENIED_MESSAGE, logger = console,
} = {}) {
  if (!gateway || typeof gateway.invoke !== 'function') throw new TypeError('gateway must be a HooksGatewayClient');
  if (typeof tenant !== 'string' && typeof tenant !== 'function') throw new TypeError('tenant must be a string or a function');

  let auth = null; // Better Auth's context, from init()
  const passwordWrites = new WeakSet(); // endpoint contexts that write a password

  const tenantOf = async (endpoint) => (typeof tenant === 'function' ? tenant(endpoint) : tenant);
  const connectionOf = (endpoint, tenantId) => ({ ...connection(endpoint), tenant: tenantId });

  async function emit(trigger, tenantId, body, idempotencyKey) {
    const sending = gateway.emit(tenantId, trigger, body, { idempotencyKey }).catch((err) => {
      logger.error(`hooks gateway: ${trigger} was not stored by the gateway (${err.name}: ${err.message})`);
    });
    if (!background) await sending;
  }

  async function beforeCreate(user, endpoint) {
    const tenantId = await tenantOf(endpoint);
    const { ip, language } = requestInfo(endpoint);
    const body = {
      user: {
        tenant: tenantId,
        username: user.username ?? undefined,
        email: user.email,
        emailVerified: Boolean(user.emailVerified),
        phoneNumber: user.phoneNumber ?? undefined,
        phoneNumberVerified: Boolean(user.phoneNumberVerified),
        name: user.name,
        user_metadata: asObject(user.userMetadata),
        app_metadata: asObject(user.appMetadata),
      },
      context: {
        connection: connectionOf(endpoint, tenantId),
        request: { ip, language },
        renderLanguage: language?.split('-')[0],
      },
    };
    let result;
    try {
      result = await gateway.invoke(tenantId, 'pre-user-registration', body, { deadlineMs });
    } catch (err) {
      if (err instanceof HookDenied) {
        throw new APIError('BAD_REQUEST', { message: err.friendlyMessage ?? deniedMessage, code: 'SIGNUP_DENIED' });
      }
      if (err instanceof HookError) {
        logger.warn(`hooks gateway: pre-user-registration failed (${err.name}: ${err.message}); refusing the signup`);
        throw new APIError('SERVICE_UNAVAILABLE', { message: UNAVAILABLE_MESSAGE, code: 'SIGNUP_HOOKS_FAILED' });
      }
      if (!(err instanceof GatewayError)) throw err;
      const open = typeof failOpen === 'function' ? await failOpen(endpoint) : failOpen;
      logger.warn(`hooks gateway: pre-user-registration could not be run (${err.name}: ${err.message});`
        + ` ${open ? 'letting the signup through (fail open)' : 'refusing the signup (fail closed)'}`);
      if (open) return undefined;
      throw new APIError('SERVICE_UNAVAILABLE', { message: UNAVAILABLE_MESSAGE, code: 'SIGNUP_HOOKS_UNAVAILABLE' });
    }
    return {
      data: {
        ...user,
        userMetadata: { ...asObject(user.userMetadata), ...result.user_metadata },
        appMetadata: { ...asObject(user.appMetadata), ...result.app_metadata },
      },
    };
  }

  async function afterCreate(user, endpoint) {
    if (!user?.id) return;
    const tenantId = await tenantOf(endpoint);
    const body = {
      user: {
        id: user.id,
        tenant: tenantId,
        username: user.username ?? undefined,
        email: user.email,
        emailVerified: Boolean(user.emailVerified),
        phoneNumber: user.phoneNumber ?? undefined,
        phoneNumberVerified: Boolean(user.phoneNumberVerified),
        name: user.name,
        user_metadata: asObject(user.userMetadata),
        app_metadata: asObject(user.appMetadata),
      },
      context: { requestLanguage: requestInfo(endpoint).language, connection: connectionOf(endpoint, tenantId) },
    };
    await emit('post-user-registration', tenantId, body, `post-user-registration:${user.id}`);
  }

  async function passwordChanged(user, endpoint) {
    const tenantId = await tenantOf(endpoint);
    const body = {
      user: {
        id: user.id,
        username: user.username ?? undefined,
        email: user.email,
        last_password_reset: new Date().toISOString(),
      },
      context: { connection: connectionOf(PASSWORD_SIGNUP, tenantId) }, // passwords are the email-password connection's
    };
    await emit('post-change-password', tenantId, body, `post-change-password:${user.id}:${randomUUID()}`);
  }

  const databaseHooks = {
    user: { create: { before: beforeCreate, after: afterCreate } },
    account: {
      update: {
        async before(data, endpoint) {
          if (endpoint && isPlainObject(data) && 'password' in data) passwordWrites.add(endpoint);
        },
        async after(account, endpoint) {
          // updatePassword (a reset) updates many rows and hands over a count: onPasswordReset covers it.
          if (!isPlainObject(account) || account.providerId !== PASSWORD_ACCOUNT) return;
          if (endpoint && !passwordWrites.has(endpoint)) return;
          const user = await auth?.internalAdapter.findUserById(account.userId);
          if (user) await passwordChanged(user, endpoint);
        },
      },
    },
  };

  return {
    id: 'hooks-gateway',
    schema: {
      user: {
        fields: {
          userMetadata: { type: 'json', required: false, input: false },
          appMetadata: { type: 'json', required: false, input: false },
        },
      },
    },
    init(context) {
      auth = context;
      return {
        options: {
          databaseHooks,
          // Better Auth keeps an onPasswordReset of your own: call `onPasswordReset` of this plugin from it.
          emailAndPassword: { onPasswordReset: ({ user }) => passwordChanged(user, null) },
        },
      };
    },
    // For an application that has its own emailAndPassword.onPasswordReset: call this from it.
    onPasswordReset: ({ user }) => passwordChanged(user, null),
  };
}
