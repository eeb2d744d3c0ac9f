#!/usr/bin/env node
'use strict';

/*
 * Test harness: serves Auth0 hook scripts (tests/node/hooks/<name>.js) through
 * Auth0's own webtask compilers (npm `auth0-ext-compilers`), emulating the part
 * of the webtask runtime that Auth0 Hooks ran on.
 *
 *   node hook_server.js --port 0 --secret <auth0-extension-secret> [options]
 *
 * First stdout line: {"port":<n>}  (then nothing else on stdout; logs go to stderr).
 *
 * Routes
 *   <ANY> /<point>/<script>     compile hooks/<script>.js with the compiler of <point>
 *                               and run it as webtask would: fn(ctx, req, res)
 *   GET    /_harness/requests   requests received so far (method, url, headers, body)
 *   DELETE /_harness/requests   forget them
 *   GET    /_harness/health     {"ok":true}
 *
 * Options
 *   --port N              0 = random free port (default 0)
 *   --host H              bind address (default 127.0.0.1)
 *   --secret S            ctx.secrets['auth0-extension-secret']; omitted or empty =>
 *                         no secret => the compilers do not check Authorization at all
 *   --hook-secret K=V     extra entry in ctx.secrets (repeatable)
 *   --meta K=V            entry in ctx.meta (repeatable)
 *   --parse-body          emulate webtask `pb=1`: the runtime pre-parses a JSON body
 *                         into ctx.body before calling the compiled function. Default
 *                         (webtask's parse-on-arity rule for (ctx, req, res) functions):
 *                         the body is NOT pre-parsed; the compiler reads it itself with
 *                         wreck (json: true => parsed only for application/*json).
 *   --hooks-dir DIR       where hook scripts live (default ./hooks next to this file)
 *
 * Emulation decisions (see README.md):
 *   - Every compiler returns a 3-ary function handler(ctx, req, res); the webtask
 *     runtime calls 3-ary functions with (ctx, req, res) and lets them write the
 *     response. We do the same and never touch the response the compiler writes.
 *   - The hook source is compiled like webtask-runtime's compiler: as a CommonJS
 *     module (Module#_compile) whose `module.exports` (or returned value) is the
 *     function, with a real `require`.
 *   - Exceptions thrown by hook code: webtask-runtime answers a synchronous throw with
 *     500 {code, error: "Script generated an unhandled synchronous exception.",
 *     details, name, message, stack}; an asynchronous one kills the container in
 *     webtask (the cluster answered 500 "...unhandled asynchronous exception.").
 *     We answer both with that 500 shape and keep running.
 *   - The harness' own errors (unknown point / script, bad path) are 404 JSON
 *     {"code":404,"error":...}: they are not compiler behaviour.
 */

const Http = require('http');
const Fs = require('fs');
const Path = require('path');
const Module = require('module');
const Domain = require('domain');
const Crypto = require('crypto');
const Compilers = require('auth0-ext-compilers');

// Gateway triggerId (Auth0 Hooks extensibility point name) -> compiler name.
// Auth0's `credentials-exchange` point uses `auth0-ext-compilers/client-credentials-exchange`.
const POINT_TO_COMPILER = {
    'credentials-exchange': 'client-credentials-exchange',
    'client-credentials-exchange': 'client-credentials-exchange',
    'password-exchange': 'password-exchange',
    'pre-user-registration': 'pre-user-registration',
    'post-user-registration': 'post-user-registration',
    'post-change-password': 'post-change-password',
    'send-phone-message': 'send-phone-message',
    'generic': 'generic',
};

function parseArgs(argv) {
    const opts = {
        port: 0,
        host: '127.0.0.1',
        secret: undefined,
        secrets: {},
        meta: {},
        parseBody: false,
        hooksDir: Path.join(__dirname, 'hooks'),
    };
    const kv = (s, flag) => {
        const i = s.indexOf('=');
        if (i <= 0) throw new Error(`${flag} expects KEY=VALUE, got ${JSON.stringify(s)}`);
        return [s.slice(0, i), s.slice(i + 1)];
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) throw new Error(`${a} expects a value`);
            return argv[++i];
        };
        switch (a) {
            case '--port': opts.port = Number(next()); break;
            case '--host': opts.host = next(); break;
            case '--secret': opts.secret = next(); break;
            case '--hook-secret': { const [k, v] = kv(next(), a); opts.secrets[k] = v; break; }
            case '--meta': { const [k, v] = kv(next(), a); opts.meta[k] = v; break; }
            case '--parse-body': opts.parseBody = true; break;
            case '--hooks-dir': opts.hooksDir = Path.resolve(next()); break;
            default: throw new Error(`unknown argument ${a}`);
        }
    }
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
        throw new Error('--port must be an integer 0..65535');
    }
    return opts;
}

// Like webtask-runtime's compiler: compile as a CommonJS module, take the
// returned value or module.exports.
function nodejsCompilerFor(filename) {
    return function nodejsCompiler(script, cb) {
        let func;
        try {
            if (script.charCodeAt(0) === 0xFEFF) script = script.slice(1);
            const mod = new Module(filename, module);
            mod.filename = filename;
            mod.paths = Module._nodeModulePaths(Path.dirname(filename));
            func = mod._compile(script, filename) || mod.exports;
            mod.loaded = true;
        } catch (e) {
            return cb(e);
        }
        if (typeof func !== 'function') {
            return cb(new Error('Supplied code must return or export a function.'));
        }
        return cb(null, func);
    };
}

function compile(point, scriptPath, cb) {
    const compiler = Compilers[POINT_TO_COMPILER[point]];
    let script;
    try {
        script = Fs.readFileSync(scriptPath, 'utf8');
    } catch (e) {
        return cb(e);
    }
    return compiler({ script, nodejsCompiler: nodejsCompilerFor(scriptPath) }, cb);
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

function sendJson(res, status, obj) {
    if (res.headersSent || res.writableEnded) {
        try { res.end(); } catch (e) { /* ignore */ }
        return;
    }
    const body = JSON.stringify(obj, null, 2);
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(body);
}

function readAll(req, cb) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => cb(Buffer.concat(chunks)));
}

// Build the webtask context object (webtask-runtime lib/context.js create()).
function createContext(opts, req, query, rawBody) {
    const secrets = Object.assign({}, opts.secrets);
    if (opts.secret !== undefined && opts.secret !== '') {
        secrets['auth0-extension-secret'] = opts.secret;
    }
    const ctx = {
        data: {},
        headers: req.headers, // Node lower-cases header names, as webtask did
        id: String(Date.now()),
        params: {},
        query: {},
        secrets: {},
        meta: Object.assign({}, opts.meta),
        storage: {
            get: (o, cb) => (typeof o === 'function' ? o : cb)(null, undefined),
            set: (d, o, cb) => (typeof o === 'function' ? o : cb)(null),
        },
        token: undefined,
        create_token: () => { throw new Error("The 'create_token' method is not supported in this environment"); },
        create_token_url: () => { throw new Error("The 'create_token_url' method is not supported in this environment"); },
    };
    for (const k of Object.keys(query)) {
        if (k.indexOf('webtask_') !== 0) ctx.data[k] = ctx.query[k] = query[k];
    }
    for (const k of Object.keys(secrets)) ctx.data[k] = ctx.secrets[k] = secrets[k];
    if (rawBody !== undefined && rawBody.length) {
        ctx.body_raw = rawBody;
        const ct = req.headers['content-type'] || '';
        try {
            if (ct.indexOf('application/json') >= 0) ctx.body = JSON.parse(rawBody);
        } catch (e) { /* ignored, as webtask did */ }
    }
    return ctx;
}

function main() {
    let opts;
    try {
        opts = parseArgs(process.argv.slice(2));
    } catch (e) {
        process.stderr.write(`hook_server: ${e.message}\n`);
        process.exit(2);
    }

    const received = [];
    const log = (o) => process.stderr.write(JSON.stringify(Object.assign({ ts: new Date().toISOString() }, o)) + '\n');

    const server = Http.createServer((req, res) => {
        const url = new URL(req.url, 'http://harness');
        const parts = url.pathname.split('/').filter(Boolean);

        if (parts[0] === '_harness') {
            if (parts[1] === 'requests' && req.method === 'GET') return sendJson(res, 200, received);
            if (parts[1] === 'requests' && req.method === 'DELETE') { received.length = 0; return sendJson(res, 200, { ok: true }); }
            if (parts[1] === 'health') return sendJson(res, 200, { ok: true });
            return sendJson(res, 404, { code: 404, error: 'unknown harness route' });
        }

        const [point, name] = parts;
        if (parts.length !== 2 || !POINT_TO_COMPILER[point] || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name) || name.indexOf('..') >= 0) {
            return sendJson(res, 404, { code: 404, error: 'expected /<point>/<script>', points: Object.keys(POINT_TO_COMPILER) });
        }
        const scriptPath = Path.join(opts.hooksDir, name.endsWith('.js') ? name : `${name}.js`);
        if (!Fs.existsSync(scriptPath)) {
            return sendJson(res, 404, { code: 404, error: `no hook script ${Path.basename(scriptPath)}` });
        }

        const record = { id: Crypto.randomUUID(), point, script: name, method: req.method, url: req.url, headers: req.headers, body: null };
        received.push(record);
        const started = Date.now();
        res.on('finish', () => log({ point, script: name, method: req.method, status: res.statusCode, ms: Date.now() - started }));

        // Keep a copy of the raw body for /_harness/requests without consuming the
        // stream the compiler may read itself.
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => { record.body = Buffer.concat(chunks).toString('utf8'); });

        compile(point, scriptPath, (err, webtaskFn) => {
            if (err) {
                // Compilers handle script syntax errors themselves (they return a function
                // that answers an error envelope); this is only for harness-level failures.
                return sendJson(res, 400, webtaskError(400, `Unable to compile submitted JavaScript: ${err.toString()}`, err));
            }
            const run = (rawBody) => {
                const ctx = createContext(opts, req, Object.fromEntries(url.searchParams), rawBody);
                const d = Domain.create();
                d.on('error', (e) => {
                    log({ point, script: name, uncaught: String(e && e.stack || e) });
                    sendJson(res, 500, webtaskError(500, 'Script generated an unhandled asynchronous exception.', e));
                });
                d.run(() => {
                    try {
                        webtaskFn(ctx, req, res);
                    } catch (e) {
                        log({ point, script: name, uncaught: String(e && e.stack || e) });
                        sendJson(res, 500, webtaskError(500, 'Script generated an unhandled synchronous exception.', e));
                    }
                });
            };
            if (opts.parseBody) {
                // pb=1: the runtime reads the body and parses JSON before the call.
                req.pause();
                readAll(req, (buf) => run(buf.toString('utf8')));
                req.resume();
            } else {
                run(undefined);
            }
        });
    });

    server.listen(opts.port, opts.host, () => {
        const port = server.address().port;
        process.stdout.write(JSON.stringify({ port }) + '\n');
        log({ listening: `http://${opts.host}:${port}`, hooksDir: opts.hooksDir, secret: opts.secret ? 'set' : 'none', parseBody: opts.parseBody });
    });

    const stop = () => server.close(() => process.exit(0));
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

main();
