// A runnable Better Auth server whose signups and password changes pass through the hooks gateway.
//
//   GATEWAY_URL=http://127.0.0.1:8080 GATEWAY_TOKEN=... GATEWAY_TENANT=acme node example-server.mjs
//
// It listens on 127.0.0.1 (AUTH_PORT, 0 by default: a free port), serves Better Auth under
// /api/auth (sign-up: POST /api/auth/sign-up/email), and prints `READY <base URL>`.
//   GATEWAY_URL, GATEWAY_TOKEN, GATEWAY_TENANT   the gateway, a service token, the tenant
//   GATEWAY_DEADLINE_MS   deadline of each call to the gateway (default 3000)
//   HOOKS_FAIL_OPEN       "true": let signups through when the gateway cannot be asked
//   BETTER_AUTH_SECRET    Better Auth's secret (default: a random one for this run)
// Users live in Better Auth's memory adapter; GET /example/users lists them (id, email and
// the metadata the hooks added), so that a test or a person can see what was stored. No mail
// is sent: GET /example/outbox lists the password-reset tokens Better Auth would have mailed.
import { randomBytes } from 'node:crypto';
import http from 'node:http';

import { betterAuth } from 'better-auth';
import { memoryAdapter } from 'better-auth/adapters/memory';
import { toNodeHandler } from 'better-auth/node';
import { HooksGatewayClient } from '@hooks-gateway/node-client';

import { hooksGateway } from './index.mjs';

const env = process.env;
const db = { user: [], session: [], account: [], verification: [] };
const outbox = [];

const gateway = new HooksGatewayClient({
  baseUrl: env.GATEWAY_URL,
  token: env.GATEWAY_TOKEN,
  deadlineMs: Number(env.GATEWAY_DEADLINE_MS || 3000),
});

// The memory adapter keeps JSON fields as text, as a SQL database would.
const decoded = (value) => (typeof value === 'string' ? JSON.parse(value) : value ?? null);

function sendJson(res, body) {
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

function listUsers(res) {
  const users = db.user.map(({ id, email, name, userMetadata, appMetadata }) => ({
    id, email, name, userMetadata: decoded(userMetadata), appMetadata: decoded(appMetadata),
  }));
  sendJson(res, { users });
}

const server = http.createServer();
server.listen(Number(env.AUTH_PORT || 0), '127.0.0.1', () => {
  const baseURL = `http://127.0.0.1:${server.address().port}`;
  const auth = betterAuth({
    baseURL,
    secret: env.BETTER_AUTH_SECRET || randomBytes(32).toString('hex'),
    database: memoryAdapter(db),
    emailAndPassword: {
      enabled: true,
      sendResetPassword: async ({ user, token }) => { outbox.push({ to: user.email, kind: 'reset-password', token }); },
    },
    trustedOrigins: [baseURL],
    telemetry: { enabled: false },
    plugins: [hooksGateway({ gateway, tenant: env.GATEWAY_TENANT, failOpen: env.HOOKS_FAIL_OPEN === 'true' })],
  });
  const handler = toNodeHandler(auth);
  server.on('request', (req, res) => {
    const { pathname } = new URL(req.url, baseURL);
    if (req.method === 'GET' && pathname === '/example/users') {
      listUsers(res);
      return;
    }
    if (req.method === 'GET' && pathname === '/example/outbox') {
      sendJson(res, { messages: outbox });
      return;
    }
    if (pathname.startsWith('/api/auth/')) {
      handler(req, res);
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ statusCode: 404, error: 'Not Found', message: 'no such page' }));
  });
  process.stdout.write(`READY ${baseURL}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
