'use strict';
// An example application backend for Switchboard, using all three ways a
// backend takes part (docs/integration.md):
//
// - hooks: `connect` turns a session cookie into a user (no token in the
//   page), `join` keeps support:<user> rooms private to that user and
//   agents, `publish` masks words the application does not want shown;
// - webhooks: it checks each batch's signature and age, and deduplicates by
//   event id; a user's first join of a room gets a welcome direct message,
//   and a support room that becomes occupied gets a greeting;
// - the server API: those welcomes and greetings, and `POST /admin/ban`,
//   which closes every connection of a user and refuses them from then on.
//
// Node.js 18+, no packages. Run it beside `gateway --standalone` as
// examples/backend/README.md shows.
const crypto = require('node:crypto');
const http = require('node:http');
const { parseArgs } = require('node:util');

const { values: opts } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1:3000' },
    // The gateway's server API, and its bearer token if it has one.
    api: { type: 'string', default: 'http://127.0.0.1:8090/api/' },
    'api-token': { type: 'string', default: process.env.SB_API_TOKEN ?? '' },
    // The secret of --hook-secret and --webhook-secret.
    secret: { type: 'string', default: process.env.EXAMPLE_SECRET ?? 'example-secret-change-me' },
  },
});

const BLOCKED = ['darn', 'heck'];
const sessions = new Map(); // session id -> user
const banned = new Set();
const seen = new Set(); // webhook event ids, for deduplication (bounded below)

// --- signatures -------------------------------------------------------------

/** Whether a request body carries a valid signature no older than 5 minutes. */
function signed(req, body) {
  const ts = req.headers['x-switchboard-timestamp'];
  const sig = req.headers['x-switchboard-signature'] ?? '';
  if (!ts || Math.abs(Date.now() / 1000 - Number(ts)) > 300) return false;
  const mac = crypto.createHmac('sha256', opts.secret).update(`${ts}.`).update(body).digest('hex');
  const want = Buffer.from(`sha256=${mac}`);
  const got = Buffer.from(sig);
  return got.length === want.length && crypto.timingSafeEqual(got, want);
}

// --- the server API -----------------------------------------------------------

async function api(method, body) {
  const headers = { 'content-type': 'application/json' };
  if (opts['api-token']) headers.authorization = `Bearer ${opts['api-token']}`;
  const res = await fetch(`${opts.api}${method}`, { method: 'POST', headers, body: JSON.stringify(body) });
  const answer = await res.json();
  if (!res.ok) throw new Error(`${method}: ${res.status} ${answer.error?.code}: ${answer.error?.message}`);
  return answer;
}

// --- hooks ------------------------------------------------------------------

function sessionUser(cookie) {
  const id = /(?:^|;\s*)session=([^;]+)/.exec(cookie ?? '')?.[1];
  return id ? sessions.get(id) : undefined;
}

const hooks = {
  connect({ cookie }) {
    const user = sessionUser(cookie);
    if (!user) return { error: { code: 'unauthorized', message: 'log in first' } };
    if (banned.has(user)) return { error: { code: 'forbidden', message: 'banned' } };
    // What a token would carry; the connection is renewed through `refresh`
    // before `exp`.
    return { user, info: { name: user }, rooms: ['*'], exp: Math.floor(Date.now() / 1000) + 3600 };
  },
  refresh(body) {
    return hooks.connect(body);
  },
  join({ user, room }) {
    const owner = room.slice('support:'.length);
    if (room.startsWith('support:') && user !== owner && !user.startsWith('agent-')) {
      return { ok: false, error: { code: 'forbidden', message: 'support rooms are private' } };
    }
    return { ok: true };
  },
  publish({ data }) {
    if (typeof data?.text !== 'string') return { ok: true };
    const text = BLOCKED.reduce((t, w) => t.replace(new RegExp(`\\b${w}\\b`, 'gi'), '*'.repeat(w.length)), data.text);
    return text === data.text ? { ok: true } : { ok: true, data: { ...data, text } };
  },
};

// --- webhooks -----------------------------------------------------------------

async function onEvent(e) {
  if (seen.has(e.id)) return; // delivered again after a retry
  seen.add(e.id);
  if (seen.size > 10_000) seen.delete(seen.values().next().value);
  console.log(`event ${e.type} ${e.room ?? ''} ${e.user ?? ''}`.trimEnd());
  if (e.type === 'member_joined') {
    await api('send', { user: e.user, data: { text: `Welcome to ${e.room}` } });
  } else if (e.type === 'room_occupied' && e.room.startsWith('support:')) {
    await api('publish', { room: e.room, data: { text: 'An agent will be with you shortly' }, idempotency_key: e.id });
  }
}

// --- HTTP ---------------------------------------------------------------------

function reply(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

async function route(req, res, body) {
  const url = new URL(req.url, 'http://backend');
  const hook = url.pathname.match(/^\/hooks\/(\w+)$/)?.[1];
  if (hook && hooks[hook] && req.method === 'POST') {
    if (!signed(req, body)) return reply(res, 401, { error: { code: 'unauthorized', message: 'bad signature' } });
    return reply(res, 200, hooks[hook](JSON.parse(body)));
  }
  if (url.pathname === '/webhooks' && req.method === 'POST') {
    if (!signed(req, body)) return reply(res, 401, { error: 'bad signature' });
    // Acknowledge only what was handled: a failure has the batch sent again.
    for (const e of JSON.parse(body).events) await onEvent(e);
    return reply(res, 200, {});
  }
  if (url.pathname === '/login') {
    // A stand-in for your real login: any name, one session cookie. The
    // cookie is sent to the gateway on the same host as well.
    const user = url.searchParams.get('user') ?? '';
    if (!/^[A-Za-z0-9_:@-]{1,128}$/.test(user)) return reply(res, 400, { error: 'a user name, please' });
    const session = crypto.randomBytes(16).toString('hex');
    sessions.set(session, user);
    return reply(res, 200, { user, session }, { 'set-cookie': `session=${session}; Path=/; HttpOnly; SameSite=Lax` });
  }
  if (url.pathname === '/admin/ban' && req.method === 'POST') {
    const { user } = JSON.parse(body);
    banned.add(user);
    const { closed } = await api('disconnect', { user, code: 4502, reason: 'banned' });
    return reply(res, 200, { user, closed });
  }
  return reply(res, 404, { error: 'not found' });
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    route(req, res, Buffer.concat(chunks).toString()).catch((e) => {
      console.error(e.message);
      reply(res, 500, { error: e.message });
    });
  });
});
server.keepAliveTimeout = 60_000;
const colon = opts.listen.lastIndexOf(':');
server.listen(Number(opts.listen.slice(colon + 1)), opts.listen.slice(0, colon), () => {
  const { address, port } = server.address();
  console.log(`example backend on http://${address}:${port}`);
  console.log(`  hooks     http://${address}:${port}/hooks`);
  console.log(`  webhooks  http://${address}:${port}/webhooks`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
