'use strict';

/*
 * Outbound HTTP of a hosted hook's script, through the gateway's egress proxy.
 *
 * The sandbox has no network (its own empty network namespace; the seccomp filter refuses
 * every socket but a Unix one), so a plain TCP connect fails. What a script can reach, it
 * reaches through the HTTP CONNECT proxy the gateway listens with on a Unix socket in the hook's
 * folder (gateway/runtime/egress_proxy.py): the proxy resolves the name, applies the gateway's
 * egress (SSRF) guard and caps, and splices bytes. Nothing is resolved here.
 *
 * install(socketPath) routes, before the script is compiled:
 *   - node's http and https: every http.Agent and https.Agent (the global ones, and any a
 *     library or the script makes) opens its connections as tunnels; https then runs TLS over
 *     the tunnel, with the host as the server name. axios and request use these agents.
 *   - fetch (node's built-in undici): its global dispatcher is an undici Agent whose connector
 *     opens tunnels. The undici package is loaded at the first fetch, not at start.
 * A refusal of the proxy is an Error with code EEGRESS, its message the proxy's reason.
 */

const Http = require('http');
const Https = require('https');
const Net = require('net');
const Tls = require('tls');

const MAX_PROXY_ANSWER_BYTES = 4096; // the proxy's answers are a status line and a short text
const GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1'); // where fetch finds its dispatcher

function bare(host) {
  return String(host).replace(/^\[(.*)\]$/, '$1');
}

// A tunnel to host:port through the proxy at socketPath; cb(err, socket) once the proxy has
// answered 200, after which the socket carries the destination's bytes.
function tunnel(socketPath, host, port, cb) {
  const name = bare(host);
  const authority = `${name.includes(':') ? `[${name}]` : name}:${port}`;
  if (!/^[\x21-\x7e]{1,300}$/.test(authority)) {
    process.nextTick(cb, Object.assign(new Error('egress: not a host and port that can be reached'), { code: 'EEGRESS' }));
    return;
  }
  const socket = Net.connect(socketPath);
  let received = Buffer.alloc(0);
  let settled = false;

  const refusal = () => {
    const text = received.toString('utf8');
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(text);
    const headEnd = text.indexOf('\r\n\r\n');
    const reason = headEnd >= 0 ? text.slice(headEnd + 4).trim() : '';
    const what = status ? `${status[1]} ${reason}`.trim() : 'the proxy closed without an answer';
    return Object.assign(new Error(`egress proxy refused CONNECT ${authority}: ${what}`),
      { code: 'EEGRESS', statusCode: status ? Number(status[1]) : undefined });
  };
  const settle = (err) => {
    if (settled) return;
    settled = true;
    socket.removeListener('readable', onReadable);
    socket.removeListener('end', onEnd);
    socket.removeListener('error', onError);
    if (err) {
      socket.destroy();
      cb(err);
    } else {
      cb(null, socket);
    }
  };
  function onReadable() {
    let chunk;
    while (!settled && (chunk = socket.read()) !== null) {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end >= 0 && /^HTTP\/1\.[01] 200 /.test(received.toString('latin1', 0, Math.min(end + 1, 64)))) {
        const rest = received.subarray(end + 4);
        if (rest.length) socket.unshift(rest);
        settle(null);
      } else if (received.length > MAX_PROXY_ANSWER_BYTES) {
        settle(refusal());
      }
    }
  }
  function onEnd() {
    settle(refusal());
  }
  function onError(e) {
    if (received.length) return settle(refusal()); // the proxy answered, then closed at once
    if (e && e.code === 'ENOENT') {
      return settle(Object.assign(new Error('egress: outbound connections are off for hooks on this gateway'),
        { code: 'EEGRESS' }));
    }
    return settle(e);
  }
  socket.on('readable', onReadable);
  socket.on('end', onEnd);
  socket.on('error', onError);
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
}

function serverName(options, host) {
  if (options.servername) return options.servername;
  return Net.isIP(bare(host)) ? undefined : bare(host);
}

function install(socketPath) {
  // http.Agent calls createConnection(options, cb) and waits for cb when it returns nothing.
  Http.Agent.prototype.createConnection = function tunnelledConnection(options, cb) {
    if (options.socketPath) {
      process.nextTick(cb, Object.assign(new Error('egress: Unix sockets cannot be reached from hooks'), { code: 'EEGRESS' }));
      return undefined;
    }
    tunnel(socketPath, options.host || options.hostname || 'localhost', options.port || 80, cb);
    return undefined;
  };
  Https.Agent.prototype.createConnection = function tunnelledTlsConnection(options, cb) {
    if (options.socketPath) {
      process.nextTick(cb, Object.assign(new Error('egress: Unix sockets cannot be reached from hooks'), { code: 'EEGRESS' }));
      return undefined;
    }
    const host = options.host || options.hostname || 'localhost';
    tunnel(socketPath, host, options.port || 443, (err, raw) => {
      if (err) return cb(err);
      // As https.Agent does: the TLS socket is handed over at once; the request waits for it.
      return cb(null, Tls.connect({ ...options, socket: raw, servername: serverName(options, host) }));
    });
    return undefined;
  };

  // undici's connector: connect(opts, cb) with opts.protocol, hostname, port, servername.
  const connect = (opts, cb) => {
    const https = opts.protocol === 'https:';
    tunnel(socketPath, opts.hostname, opts.port || (https ? 443 : 80), (err, raw) => {
      if (err) return cb(err);
      if (!https) return cb(null, raw);
      const secure = Tls.connect({ socket: raw, servername: serverName(opts, opts.hostname), ALPNProtocols: ['http/1.1'] });
      let done = false;
      secure.once('secureConnect', () => { if (!done) { done = true; cb(null, secure); } });
      secure.once('error', (e) => { if (!done) { done = true; secure.destroy(); cb(e); } });
      return undefined;
    });
  };
  let agent = null;
  const lazy = {
    dispatch(options, handler) {
      if (agent === null) {
        const { Agent } = require('undici'); // eslint-disable-line global-require
        agent = new Agent({ connect });
        if (globalThis[GLOBAL_DISPATCHER] === lazy) globalThis[GLOBAL_DISPATCHER] = agent;
      }
      return agent.dispatch(options, handler);
    },
  };
  // As undici's own setGlobalDispatcher defines it.
  Object.defineProperty(globalThis, GLOBAL_DISPATCHER, { value: lazy, writable: true, enumerable: false, configurable: false });
}

module.exports = { install };
