// Drives integrations/node-client for tests/test_node_client.py: reads a plan (JSON) on stdin,
// makes its calls one after the other with one client (a call with `fresh: true` gets a new
// client, which knows nothing of the rate limit yet), and prints one JSON object: the outcome
// of each call, and every request sent (when, and what the gateway answered), seen through the
// real fetch the clients use.
//
//   {"client": {baseUrl, token, deadlineMs, ratelimit}, "calls": [{op, tenant, trigger, body, options, fresh}]}
import { HooksGatewayClient } from '../integrations/node-client/index.mjs';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const plan = JSON.parse(Buffer.concat(chunks).toString('utf8'));

const requests = [];
async function recordingFetch(url, init) {
  const sentAt = Date.now();
  const response = await fetch(url, init);
  const header = (name) => response.headers.get(name);
  requests.push({
    sentAt,
    answeredAt: Date.now(),
    status: response.status,
    remaining: header('x-ratelimit-remaining'),
    reset: header('x-ratelimit-reset'),
    retryAfter: header('retry-after'),
  });
  return response;
}

const newClient = () => new HooksGatewayClient({ ...plan.client, fetch: recordingFetch });
let client = newClient();
const results = [];
for (const call of plan.calls) {
  if (call.fresh) client = newClient();
  try {
    const value = call.op === 'emit'
      ? await client.emit(call.tenant, call.trigger, call.body, call.options)
      : await client.invoke(call.tenant, call.trigger, call.body, call.options);
    results.push({ ok: true, value });
  } catch (err) {
    const { name, message, friendlyMessage, oauthError, status, resetAt, retryAfter, attempts } = err;
    results.push({
      ok: false,
      error: {
        class: err.constructor.name, name, message, friendlyMessage, oauthError, status, resetAt, retryAfter, attempts,
      },
    });
  }
}
// Exit at once: a connection attempt the deadline abandoned would keep Node alive until it times out.
process.stdout.write(`${JSON.stringify({ results, requests })}\n`, () => process.exit(0));
