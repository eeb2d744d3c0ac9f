// A real OpenID Connect provider for the dashboard's browser tests: oidc-provider on loopback.
//
//   node provider.mjs [port]       (or OIDC_PORT; 0, the default, picks a free port)
//
// It prints `READY <issuer>` once it listens. Settings come from the environment:
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET   one confidential client (client_secret_basic)
//   OIDC_REDIRECT_URIS                   its redirect URIs, separated by spaces
//   OIDC_POST_LOGOUT_REDIRECT_URIS       its post-logout redirect URIs, separated by spaces
//   OIDC_ACCOUNTS                        JSON: [{"username", "password", "claims": {...}}]
//
// Authorization code with PKCE (S256) is required of every client. Dynamic registration
// (RFC 7591, POST /reg) is open, so each test gateway can register its own exact redirect URI.
// The login page is this file's own (no dev interactions: those fetch web fonts); consent is
// given without a page, as for a first-party application. An account's claims go into its ID
// token (every custom claim is granted with the `openid` scope).
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const MAX_FORM_BYTES = 16 * 1024;
const TTL_S = 600; // sessions, grants and tokens: a test never needs longer

const words = (value) => (value || '').split(/\s+/).filter(Boolean);
const escapeHtml = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const accounts = new Map(
  JSON.parse(process.env.OIDC_ACCOUNTS || '[]').map((account) => [account.username, account]),
);
const customClaims = [...new Set([...accounts.values()].flatMap((a) => Object.keys(a.claims || {})))]
  .filter((name) => !['sub', 'email', 'email_verified', 'name'].includes(name));

const clients = [];
if (process.env.OIDC_CLIENT_ID) {
  clients.push({
    client_id: process.env.OIDC_CLIENT_ID,
    client_secret: process.env.OIDC_CLIENT_SECRET,
    redirect_uris: words(process.env.OIDC_REDIRECT_URIS),
    post_logout_redirect_uris: words(process.env.OIDC_POST_LOGOUT_REDIRECT_URIS),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  });
}

function loginPage(uid, { error = '', username = '' } = {}) {
  const alert = error ? `<p role="alert" class="error">${escapeHtml(error)}</p>` : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - test identity provider</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>Sign in</h1>${alert}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<p><label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required value="${escapeHtml(username)}"></p>
<p><label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required></p>
<p><button type="submit">Sign in</button></p>
</form></main></body></html>`;
}

function send(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  });
  res.end(html);
}

async function readForm(req) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function consent(provider, req, res, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const id = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId: id } }, { mergeWithLastSubmission: true });
}

// GET /interaction/:uid shows the login form (or consents); POST /interaction/:uid/login checks it.
async function interaction(provider, req, res, url) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET' && details.prompt.name === 'consent') {
    await consent(provider, req, res, details);
    return;
  }
  if (req.method === 'GET') {
    send(res, 200, loginPage(details.uid));
    return;
  }
  if (req.method !== 'POST' || !url.pathname.endsWith('/login')) {
    send(res, 405, '<!doctype html><title>Not allowed</title>');
    return;
  }
  const form = await readForm(req);
  const username = form.get('username') || '';
  const account = accounts.get(username);
  if (!account || account.password !== form.get('password')) {
    send(res, 401, loginPage(details.uid, { error: 'Wrong username or password.', username }));
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: username } }, {
    mergeWithLastSubmission: false,
  });
}

const server = http.createServer();
const port = Number(process.argv[2] ?? process.env.OIDC_PORT ?? 0);
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'test' }] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    pkce: { required: () => true },
    responseTypes: ['code'],
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    claims: {
      openid: ['sub', ...customClaims],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    interactions: { url: (_ctx, i) => `/interaction/${i.uid}` },
    ttl: {
      AccessToken: TTL_S, AuthorizationCode: 60, Grant: TTL_S, IdToken: TTL_S, Interaction: TTL_S, Session: TTL_S,
    },
    async findAccount(_ctx, id) {
      const account = accounts.get(id);
      if (!account) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...(account.claims || {}) }) };
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = `<!doctype html><html lang="en"><title>Error</title><main><h1>Error</h1><pre>${
        escapeHtml(JSON.stringify(out, null, 2))}</pre></main></html>`;
    },
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    if (!url.pathname.startsWith('/interaction/')) {
      callback(req, res);
      return;
    }
    interaction(provider, req, res, url).catch((err) => {
      if (!res.headersSent) send(res, 400, `<!doctype html><title>Error</title><p>${escapeHtml(err.message)}</p>`);
      else res.end();
    });
  });
  process.stdout.write(`READY ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
