// A runnable node-oidc-provider whose client_credentials tokens pass through the hooks gateway.
//
//   GATEWAY_URL=http://127.0.0.1:8080 GATEWAY_TOKEN=... GATEWAY_TENANT=acme \
//   OIDC_CLIENTS='[{"client_id":"svc","client_secret":"s3cret","scope":"read:items"}]' \
//   node example-server.mjs
//
// It listens on 127.0.0.1 (OIDC_PORT, 0 by default: a free port) and prints `READY <issuer>`.
//   GATEWAY_URL, GATEWAY_TOKEN, GATEWAY_TENANT   the gateway, a service token, the tenant
//   GATEWAY_DEADLINE_MS       deadline of each call to the gateway (default 3000)
//   HOOKS_FAIL_OPEN           "true": issue tokens as requested when the gateway cannot be asked
//   HOOKS_FAIL_OPEN_CLIENTS   client ids that fail open whatever HOOKS_FAIL_OPEN says (spaces)
//   OIDC_CLIENTS              JSON: [{client_id, client_secret, scope, client_name?, client_metadata?}]
//   OIDC_RESOURCE             the API's resource indicator, the tokens' audience
//                             (default https://api.example.test/, a name that is never resolved)
//   OIDC_RESOURCE_SCOPES      the scopes that API knows (spaces; default "read:items write:items")
// Access tokens for the API are JWTs signed RS256 with a key made at start (GET /jwks).
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';
import { HooksGatewayClient } from '@hooks-gateway/node-client';

import { withCredentialsExchange } from './index.mjs';

const words = (value) => (value || '').split(/\s+/).filter(Boolean);
const env = process.env;
const resource = env.OIDC_RESOURCE || 'https://api.example.test/';
const resourceScopes = env.OIDC_RESOURCE_SCOPES || 'read:items write:items';
const failOpenClients = new Set(words(env.HOOKS_FAIL_OPEN_CLIENTS));

const clients = JSON.parse(env.OIDC_CLIENTS || '[]').map((client) => ({
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  ...client,
}));

const gateway = new HooksGatewayClient({
  baseUrl: env.GATEWAY_URL,
  token: env.GATEWAY_TOKEN,
  deadlineMs: Number(env.GATEWAY_DEADLINE_MS || 3000),
});

const server = http.createServer();
server.listen(Number(env.OIDC_PORT || 0), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const configuration = withCredentialsExchange({
    clients,
    jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'example' }] },
    extraClientMetadata: { properties: ['client_metadata'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resource,
        getResourceServerInfo: () => ({
          scope: resourceScopes,
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 600,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    scopes: words(resourceScopes),
  }, {
    gateway,
    tenant: env.GATEWAY_TENANT,
    failOpen: (_ctx, client) => env.HOOKS_FAIL_OPEN === 'true' || failOpenClients.has(client.clientId),
  });
  const provider = new Provider(issuer, configuration);
  server.on('request', provider.callback());
  process.stdout.write(`READY ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
