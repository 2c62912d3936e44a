'use strict';
// The server a user would otherwise write: one Node.js process, the `ws`
// package, rooms kept in memory. It speaks the part of Switchboard's JSON
// protocol that the load generator uses (see README.md).
const http = require('node:http');
const crypto = require('node:crypto');
const { parseArgs } = require('node:util');
const { WebSocketServer } = require('ws');

let listen, announce;
try {
  ({ values: { listen, announce } } = parseArgs({
    options: { listen: { type: 'string', default: '127.0.0.1:8090' }, announce: { type: 'boolean', default: false } },
  }));
} catch (e) {
  console.error(`ws-rooms: ${e.message}\nusage: node server.js [--listen HOST:PORT] [--announce]`);
  process.exit(2);
}
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
const port = Number(listen.slice(colon + 1));
if (colon < 1 || !Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`ws-rooms: --listen ${listen}: expected HOST:PORT`);
  process.exit(2);
}

const EPOCH = crypto.randomBytes(8).toString('hex');
const rooms = new Map(); // room -> Set of sockets
const seqs = new Map(); // room -> latest seq (kept when a room empties, so seqs never repeat)
let nextConn = 0;

// The token's `sub`, read without checking the signature; null if there is none.
function subject(token) {
  try {
    const sub = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).sub;
    return typeof sub === 'string' && sub !== '' ? sub : null;
  } catch {
    return null;
  }
}

function fail(code, message) {
  return { error: { code, message } };
}

// Runs one request; returns the reply's fields, or { error }.
function handle(ws, msg) {
  const { op, room } = msg;
  if (typeof op !== 'string') return fail('bad_request', 'missing field `op`');
  if (!['join', 'leave', 'publish'].includes(op)) return fail('unknown_op', `unknown op ${JSON.stringify(op)}`);
  if (typeof room !== 'string' || room === '') return fail('bad_request', '`room` must be a non-empty string');

  if (op === 'join') {
    if (!rooms.has(room)) rooms.set(room, new Set());
    const members = rooms.get(room);
    if (announce && !members.has(ws)) {
      // What the Socket.IO chat example does on every join: tell everyone else.
      const out = JSON.stringify({ type: 'joined', room, user: ws.user });
      for (const member of members) member.send(out);
    }
    members.add(ws);
    ws.rooms.add(room);
    const reply = { epoch: EPOCH, seq: seqs.get(room) || 0, count: members.size };
    if (msg.since != null) reply.recovered = false; // no history is kept
    return reply;
  }

  if (!ws.rooms.has(room)) return fail('not_member', 'join the room first');
  if (op === 'leave') {
    leave(ws, room);
    return {};
  }

  // publish: build the message once, send the same string to every member.
  if (msg.data === undefined) return fail('bad_request', 'missing field `data`');
  const seq = (seqs.get(room) || 0) + 1;
  seqs.set(room, seq);
  const out = JSON.stringify({ type: 'message', room, seq, epoch: EPOCH, from: ws.user, data: msg.data, ts: Date.now() });
  for (const member of rooms.get(room)) member.send(out);
  return { seq };
}

function leave(ws, room) {
  ws.rooms.delete(room);
  const members = rooms.get(room);
  members.delete(ws);
  if (members.size === 0) rooms.delete(room);
}

const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024, perMessageDeflate: false });

wss.on('connection', (ws, req) => {
  const n = ++nextConn;
  const auth = /^Bearer\s+(\S+)/i.exec(req.headers.authorization || '');
  const token = auth ? auth[1] : new URLSearchParams(req.url.split('?')[1]).get('token');
  ws.user = (token && subject(token)) || `anon-${n}`;
  ws.rooms = new Set();
  ws.send(JSON.stringify({ type: 'hello', conn: String(n), user: ws.user, gateway: 'peer', heartbeat_ms: 25000 }));

  ws.on('message', (raw, isBinary) => {
    if (isBinary) return;
    let msg;
    try {
      msg = JSON.parse(raw.toString());
    } catch {
      msg = null;
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
      ws.send(JSON.stringify({ type: 'error', ...fail('bad_request', 'a request must be a JSON object') }));
      return;
    }
    if (msg.op === 'ping') {
      ws.send('{"type":"pong"}');
      return;
    }
    const id = typeof msg.id === 'string' || typeof msg.id === 'number' ? msg.id : undefined;
    const result = handle(ws, msg);
    if (id !== undefined) {
      const ok = !result.error;
      ws.send(JSON.stringify({ type: 'reply', id, ok, ...result }));
    } else if (result.error) {
      ws.send(JSON.stringify({ type: 'error', error: result.error }));
    } // a request without an id gets no reply when it succeeds
  });

  ws.on('close', () => {
    for (const room of ws.rooms) leave(ws, room);
  });
  ws.on('error', () => {}); // e.g. a message over maxPayload; `ws` closes the socket itself
});

const pathOf = (req) => req.url.split('?')[0];

const server = http.createServer((req, res) => {
  res.writeHead(pathOf(req) === '/ws' ? 426 : 404).end();
});

server.on('upgrade', (req, socket, head) => {
  if (pathOf(req) !== '/ws') {
    socket.on('error', () => {});
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

server.on('error', (e) => {
  console.error(`ws-rooms: --listen ${listen}: ${e.message}`);
  process.exit(1);
});

server.listen(port, host, () => {
  const { address, port } = server.address();
  console.log(`  websocket  ws://${address.includes(':') ? `[${address}]` : address}:${port}/ws`);
});

function shutdown() {
  server.close(() => process.exit(0));
  for (const ws of wss.clients) ws.close(1001, 'shutting down');
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
