'use strict';

/*
 * The hosted hooks' runtime: one process per hook, started by the gateway's supervisor
 * (gateway/runtime/process.py) inside the sandbox, where it is /runtime/runner.js.
 *
 *   node /runtime/runner.js <compiler> <fd>
 *
 * It compiles /hook/script.js once with Auth0's compiler <compiler> (auth0-ext-compilers, in
 * /runtime/node_modules), then serves calls on descriptor <fd>: one end of a Unix socket pair
 * the gateway made (no socket file, no listening socket, no network). The script's outbound HTTP
 * goes through the gateway's egress proxy at /hook/egress.sock (egress.js).
 *
 * Protocol: frames of a 4-byte big-endian length and that many bytes of UTF-8 JSON.
 *   runtime -> gateway, once: {"ready": true}
 *   gateway -> runtime:       {"id": n, "body": "<the request body>", "secrets": {name: value}}
 *   runtime -> gateway:       {"id": n, "status": 200, "body": "<the answer body>"}
 * Calls may overlap; answers come in any order. The answer is what the compiler wrote, as
 * webtask sent it over HTTP (tests/node/README.md has the wire format); a hook that throws is
 * answered 500 with webtask-runtime's error body.
 *
 * Everything else about the webtask emulation follows tests/node/hook_server.js.
 */

const Module = require('module');
const Path = require('path');
const Fs = require('fs');
const Net = require('net');
const Domain = require('domain');
const Stream = require('stream');
const Compilers = require('auth0-ext-compilers');
const Egress = require('./egress');

const SCRIPT = '/hook/script.js';
// The gateway's egress proxy for this process (gateway/runtime/egress_proxy.py): the only way out.
const EGRESS_SOCKET = Path.join(Path.dirname(SCRIPT), 'egress.sock');
// The modules webtask had preinstalled (axios, request, ...): a script's require falls back to
// them after the hook's own node_modules.
const RUNTIME_MODULES = Path.join(__dirname, 'node_modules');
const MAX_FRAME_BYTES = 16 << 20;
const EXIT_BAD_USAGE = 64;
const EXIT_PROTOCOL = 65;
const EXIT_UNCAUGHT = 70;

function nodejsCompiler(script, cb) {
  // As webtask-runtime's compiler: a CommonJS module whose returned value or exports is the
  // function, with a real require (resolving from the hook's folder).
  let func;
  try {
    if (script.charCodeAt(0) === 0xFEFF) script = script.slice(1);
    const mod = new Module(SCRIPT, module);
    mod.filename = SCRIPT;
    mod.paths = [...Module._nodeModulePaths(Path.dirname(SCRIPT)), RUNTIME_MODULES];
    func = mod._compile(script, SCRIPT) || mod.exports;
    mod.loaded = true;
  } catch (e) {
    return cb(e);
  }
  if (typeof func !== 'function') return cb(new Error('Supplied code must return or export a function.'));
  return cb(null, func);
}

// webtask-runtime lib/errors.js create()
function webtaskError(code, description, source) {
  return {
    code,
    error: description,
    details: source instanceof Error ? source.toString() : String(source),
    name: source && source.name,
    message: source && source.message,
    stack: source && source.stack,
  };
}

function createContext(id, headers, secrets) {
  const ctx = {
    data: {}, headers, id: String(id), params: {}, query: {}, secrets: {}, meta: {},
    storage: {
      get: (o, cb) => (typeof o === 'function' ? o : cb)(null, undefined),
      set: (d, o, cb) => (typeof o === 'function' ? o : cb)(null),
    },
    token: undefined,
    create_token: () => { throw new Error("The 'create_token' method is not supported in this environment"); },
    create_token_url: () => { throw new Error("The 'create_token_url' method is not supported in this environment"); },
  };
  for (const k of Object.keys(secrets)) ctx.data[k] = ctx.secrets[k] = String(secrets[k]);
  return ctx;
}

// The request the compiler reads its body from (with wreck), as an HTTP request would be.
function createRequest(headers, body) {
  const req = new Stream.Readable({ read() {}, emitClose: false });
  req.method = 'POST';
  req.url = '/';
  req.headers = headers;
  req.push(Buffer.from(body, 'utf8'));
  req.push(null);
  return req;
}

// The response the compiler writes; `done(status, body)` once, at its end.
function createResponse(done) {
  let status = 200;
  let chunks = [];
  let ended = false;
  return {
    get headersSent() { return ended; },
    get writableEnded() { return ended; },
    setHeader() {},
    writeHead(code) { status = code; return this; },
    write(chunk) { if (!ended && chunk != null) chunks.push(Buffer.from(chunk)); return true; },
    end(chunk) {
      if (ended) return;
      if (chunk != null) chunks.push(Buffer.from(chunk));
      ended = true;
      done(status, Buffer.concat(chunks).toString('utf8'));
      chunks = [];
    },
  };
}

function frame(obj) {
  const json = Buffer.from(JSON.stringify(obj), 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(json.length, 0);
  return Buffer.concat([head, json]);
}

function main() {
  const [compilerName, fdText] = process.argv.slice(2);
  const compiler = Compilers[compilerName];
  const fd = Number(fdText);
  if (typeof compiler !== 'function' || !Number.isInteger(fd) || fd < 3) {
    process.stderr.write('usage: runner.js <compiler> <fd>\n');
    process.exit(EXIT_BAD_USAGE);
  }
  const socket = new Net.Socket({ fd, readable: true, writable: true });
  const send = (obj) => socket.write(frame(obj));
  socket.on('error', () => process.exit(EXIT_PROTOCOL));
  socket.on('end', () => process.exit(0)); // the gateway closed its end: nothing more to do

  process.on('uncaughtException', (e) => {
    process.stderr.write(`uncaught exception outside a call: ${e && e.stack || e}\n`);
    process.exit(EXIT_UNCAUGHT);
  });

  Egress.install(EGRESS_SOCKET); // before the script runs: http, https and fetch go through the proxy
  const script = Fs.readFileSync(SCRIPT, 'utf8');
  let webtaskFn;
  compiler({ script, nodejsCompiler }, (err, fn) => {
    if (err) throw err; // the compilers report script errors through the function they return
    webtaskFn = fn;
  });

  function call(msg) {
    let answered = false;
    const answer = (status, body) => {
      if (answered) return;
      answered = true;
      send({ id: msg.id, status, body });
    };
    const secrets = msg.secrets && typeof msg.secrets === 'object' ? msg.secrets : {};
    const headers = { 'content-type': 'application/json' };
    if (secrets['auth0-extension-secret']) headers.authorization = `Bearer ${secrets['auth0-extension-secret']}`;
    const ctx = createContext(msg.id, headers, secrets);
    const text = typeof msg.body === 'string' ? msg.body : '';
    // The compilers read the body themselves (wreck, from a stream: most of a call's time) unless
    // ctx.body is set. It is set here, with the same JSON.parse of the same text; a body that does
    // not parse, or parses to a falsy value, still takes their path (and gets their answer).
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      parsed = undefined;
    }
    if (parsed) ctx.body = parsed;
    const req = parsed ? { method: 'POST', url: '/', headers } : createRequest(headers, text);
    const res = createResponse(answer);
    const fail = (kind, e) => {
      process.stderr.write(`hook ${kind} exception: ${e && e.stack || e}\n`);
      answer(500, JSON.stringify(webtaskError(500, `Script generated an unhandled ${kind} exception.`, e), null, 2));
    };
    const d = Domain.create();
    d.on('error', (e) => fail('asynchronous', e));
    d.run(() => {
      try {
        // After wreck's read the script ran in a later tick; it still does, so that a throw is
        // the same asynchronous exception.
        if (parsed) process.nextTick(webtaskFn, ctx, req, res);
        else webtaskFn(ctx, req, res);
      } catch (e) {
        fail('synchronous', e);
      }
    });
  }

  let pending = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= 4) {
      const size = pending.readUInt32BE(0);
      if (size > MAX_FRAME_BYTES) process.exit(EXIT_PROTOCOL);
      if (pending.length < 4 + size) break;
      const body = pending.subarray(4, 4 + size);
      pending = pending.subarray(4 + size);
      let msg;
      try {
        msg = JSON.parse(body.toString('utf8'));
      } catch (e) {
        process.exit(EXIT_PROTOCOL);
      }
      call(msg);
    }
  });
  send({ ready: true });
}

main();
