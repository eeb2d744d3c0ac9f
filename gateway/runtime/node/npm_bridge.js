'use strict';

/*
 * Loaded before npm inside the sandbox of a dependency install (gateway/runtime/npm_install.py):
 *
 *   node --require /bridge/npm_bridge.js /npm/bin/npm-cli.js install ...
 *
 * That sandbox has a network namespace of its own, holding a loopback only; its one way out is
 * the gateway's egress proxy, an HTTP CONNECT proxy on the Unix socket $GATEWAY_EGRESS_SOCKET
 * that lets through the registry's host and port and nothing else. npm speaks to an HTTP proxy
 * over TCP, so this is one, on 127.0.0.1:$GATEWAY_BRIDGE_PORT (npm_config_proxy points at it),
 * carrying each of npm's requests through a CONNECT tunnel on that socket:
 *
 *   CONNECT host:port          (an https registry)  the tunnel itself;
 *   GET http://host:port/path  (an http registry)   the request, sent in origin form through a
 *                                                    tunnel of its own.
 *
 * A tunnel the egress proxy refuses is answered with the proxy's status, so npm fails at once.
 */

const Net = require('net');
const Http = require('http');

const SOCKET = process.env.GATEWAY_EGRESS_SOCKET;
const PORT = Number(process.env.GATEWAY_BRIDGE_PORT);
const HEAD_MAX_BYTES = 16384; // the egress proxy's answer to a CONNECT is a short head
const HOP_HEADERS = new Set(['proxy-connection', 'proxy-authorization', 'connection', 'keep-alive']);

// A socket through the egress proxy to `authority` (host:port), or an error with its status.
function tunnel(authority, cb) {
  const upstream = Net.connect(SOCKET);
  let head = Buffer.alloc(0);
  let done = false;
  const finish = (err, socket) => {
    if (done) return;
    done = true;
    upstream.removeListener('data', onData);
    if (err) upstream.destroy();
    cb(err, socket);
  };
  const onData = (chunk) => {
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) {
      if (head.length > HEAD_MAX_BYTES) finish(Object.assign(new Error('bad egress proxy answer'), { status: 502 }));
      return;
    }
    upstream.pause();
    const match = /^HTTP\/1\.[01] (\d{3})/.exec(head.toString('latin1', 0, end));
    const status = match ? Number(match[1]) : 502;
    if (status !== 200) {
      finish(Object.assign(new Error(`the egress proxy refused ${authority} (${status})`), { status }));
      return;
    }
    const rest = head.subarray(end + 4);
    if (rest.length) upstream.unshift(rest);
    finish(null, upstream);
  };
  upstream.on('data', onData);
  upstream.on('error', (e) => finish(Object.assign(e, { status: 502 })));
  upstream.on('connect', () => {
    upstream.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
}

function splice(a, b) {
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
  a.pipe(b);
  b.pipe(a);
}

const server = Http.createServer((req, res) => {
  let url;
  try {
    url = new URL(req.url);
  } catch (e) {
    url = null;
  }
  if (!url || url.protocol !== 'http:') {
    res.writeHead(400).end();
    return;
  }
  const authority = `${url.hostname.includes(':') && !url.hostname.startsWith('[') ? `[${url.hostname}]` : url.hostname}:${url.port || 80}`;
  const headers = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (!HOP_HEADERS.has(name)) headers[name] = value;
  }
  const upstream = Http.request({
    method: req.method,
    path: url.pathname + url.search,
    headers,
    // The tunnel comes paused: it flows once the request has taken it (its parser listening).
    createConnection: (_, cb) => {
      tunnel(authority, (err, socket) => {
        cb(err, socket);
        if (socket) socket.resume();
      });
    },
  });
  upstream.on('response', (answer) => {
    res.writeHead(answer.statusCode, answer.headers);
    answer.pipe(res);
  });
  upstream.on('error', (e) => {
    if (!res.headersSent) res.writeHead(e.status || 502).end();
    else res.destroy();
  });
  req.pipe(upstream);
});

server.on('connect', (req, client, head) => {
  tunnel(req.url, (err, upstream) => {
    if (err) {
      client.end(`HTTP/1.1 ${err.status || 502} Refused\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head && head.length) upstream.write(head);
    splice(client, upstream);
    upstream.resume();
  });
});

server.on('clientError', (e, socket) => socket.destroy());
server.listen(PORT, '127.0.0.1');
server.unref(); // npm's own work keeps the process alive; once it is done, so is this
