'use strict';
// `npm test`: starts server.js on a loopback port and drives it with `ws` clients.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const http = require('node:http');
const path = require('node:path');
const WebSocket = require('ws');

let server;
let url;
const servers = [];

// Starts server.js on a free loopback port; resolves to [process, url].
async function start(...args) {
  const proc = spawn(process.execPath, [path.join(__dirname, 'server.js'), '--listen', '127.0.0.1:0', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  servers.push(proc);
  const at = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (chunk) => {
      out += chunk;
      const m = /^ {2}websocket {2}(ws:\/\/127\.0\.0\.1:\d+\/ws)\n$/.exec(out);
      if (m) resolve(m[1]);
    });
    proc.on('exit', (code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
  return [proc, at];
}

before(async () => {
  [server, url] = await start();
});

after(() => {
  for (const proc of servers) if (proc.exitCode === null) proc.kill('SIGKILL');
});

// A client that queues what it receives, so a test can await the next frame.
async function connect(query = '', headers = {}, at = url) {
  const ws = new WebSocket(at + query, { headers });
  const queue = [];
  const waiting = [];
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    if (waiting.length) waiting.shift()(msg);
    else queue.push(msg);
  });
  ws.next = () =>
    queue.length
      ? Promise.resolve(queue.shift())
      : new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('no frame within 2 s')), 2000);
          waiting.push((msg) => (clearTimeout(timer), resolve(msg)));
        });
  ws.json = (obj) => ws.send(JSON.stringify(obj));
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  ws.hello = await ws.next();
  return ws;
}

function token(claims) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  return `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}.c2lnbmF0dXJl`;
}

test('hello names the user from the token, or anon-<n>', async () => {
  const anon = await connect();
  assert.equal(anon.hello.type, 'hello');
  assert.equal(anon.hello.gateway, 'peer');
  assert.equal(anon.hello.heartbeat_ms, 25000);
  assert.match(anon.hello.conn, /^\d+$/);
  assert.equal(anon.hello.user, `anon-${anon.hello.conn}`);

  const q = await connect(`?token=${token({ sub: 'alice' })}`);
  assert.equal(q.hello.user, 'alice');
  const h = await connect('', { Authorization: `Bearer ${token({ sub: 'bob' })}` });
  assert.equal(h.hello.user, 'bob');
  const junk = await connect('?token=not.a-token');
  assert.equal(junk.hello.user, `anon-${junk.hello.conn}`);
  for (const ws of [anon, q, h, junk]) ws.close();
});

test('a publish reaches every member, the sender too, with consecutive seqs', async () => {
  const a = await connect(`?token=${token({ sub: 'alice' })}`);
  const b = await connect();
  a.json({ op: 'join', room: 'lobby', id: 1 });
  const ja = await a.next();
  assert.deepEqual({ ...ja, epoch: undefined }, { type: 'reply', id: 1, ok: true, seq: 0, count: 1, epoch: undefined });
  assert.match(ja.epoch, /^[0-9a-f]{16}$/);
  b.json({ op: 'join', room: 'lobby', id: 'j' });
  assert.deepEqual(await b.next(), { type: 'reply', id: 'j', ok: true, epoch: ja.epoch, seq: 0, count: 2 });

  a.json({ op: 'publish', room: 'lobby', data: { hi: [1, 'two'] }, id: 2 });
  const ma = await a.next();
  assert.equal(ma.type, 'message');
  assert.deepEqual(await a.next(), { type: 'reply', id: 2, ok: true, seq: 1 });
  const mb = await b.next();
  assert.deepEqual(ma, mb);
  assert.deepEqual(Object.keys(ma), ['type', 'room', 'seq', 'epoch', 'from', 'data', 'ts']);
  assert.deepEqual({ ...ma, ts: 0 }, { type: 'message', room: 'lobby', seq: 1, epoch: ja.epoch, from: 'alice', data: { hi: [1, 'two'] }, ts: 0 });
  assert.ok(Math.abs(ma.ts - Date.now()) < 5000);

  // Without an id there is no reply; data may be null.
  b.json({ op: 'publish', room: 'lobby', data: null });
  assert.equal((await a.next()).seq, 2);
  assert.deepEqual({ ...(await b.next()), ts: 0 }, { type: 'message', room: 'lobby', seq: 2, epoch: ja.epoch, from: b.hello.user, data: null, ts: 0 });

  // A late joiner sees the latest seq; since gets recovered: false.
  const c = await connect();
  c.json({ op: 'join', room: 'lobby', id: 3, since: { epoch: ja.epoch, seq: 1 } });
  assert.deepEqual(await c.next(), { type: 'reply', id: 3, ok: true, epoch: ja.epoch, seq: 2, count: 3, recovered: false });

  // After a leave and a close, only the remaining member gets messages.
  b.json({ op: 'leave', room: 'lobby', id: 4 });
  assert.deepEqual(await b.next(), { type: 'reply', id: 4, ok: true });
  c.close();
  await new Promise((resolve) => c.once('close', resolve));
  a.json({ op: 'publish', room: 'lobby', data: 'solo', id: 5 });
  assert.equal((await a.next()).seq, 3);
  assert.deepEqual(await a.next(), { type: 'reply', id: 5, ok: true, seq: 3 });
  b.json({ op: 'ping' });
  assert.deepEqual(await b.next(), { type: 'pong' }); // nothing from lobby came first
  a.close();
  b.close();
});

test('a join sends joined to the others only with --announce', async () => {
  const [, loud] = await start('--announce');
  const a = await connect(`?token=${token({ sub: 'alice' })}`, {}, loud);
  const b = await connect(`?token=${token({ sub: 'bob' })}`, {}, loud);
  a.json({ op: 'join', room: 'r', id: 1 });
  assert.equal((await a.next()).count, 1);
  b.json({ op: 'join', room: 'r', id: 1 });
  assert.equal((await b.next()).count, 2);
  assert.deepEqual(await a.next(), { type: 'joined', room: 'r', user: 'bob' });
  b.json({ op: 'join', room: 'r', id: 2 }); // joining again announces nothing
  assert.equal((await b.next()).count, 2);
  a.json({ op: 'ping' });
  assert.deepEqual(await a.next(), { type: 'pong' });

  // Without the flag nobody hears of joins.
  const c = await connect();
  const d = await connect();
  c.json({ op: 'join', room: 'q', id: 1 });
  await c.next();
  d.json({ op: 'join', room: 'q', id: 1 });
  await d.next();
  c.json({ op: 'ping' });
  assert.deepEqual(await c.next(), { type: 'pong' });
  for (const ws of [a, b, c, d]) ws.close();
});

test('errors: not_member, unknown_op, bad_request', async () => {
  const ws = await connect();
  ws.json({ op: 'publish', room: 'nowhere', data: 1, id: 1 });
  const r = await ws.next();
  assert.deepEqual({ ...r, error: { ...r.error, message: '' } }, { type: 'reply', id: 1, ok: false, error: { code: 'not_member', message: '' } });
  ws.json({ op: 'leave', room: 'nowhere', id: 2 });
  assert.equal((await ws.next()).error.code, 'not_member');

  ws.json({ op: 'teleport', id: 3 });
  const u = await ws.next();
  assert.deepEqual([u.type, u.id, u.ok, u.error.code], ['reply', 3, false, 'unknown_op']);
  ws.json({ op: 'teleport' });
  assert.deepEqual([(await ws.next()).type], ['error']);

  for (const bad of ['{not json', '[1,2]', '42', 'null', '"join"']) {
    ws.send(bad);
    const e = await ws.next();
    assert.deepEqual([e.type, e.error.code], ['error', 'bad_request'], bad);
  }
  ws.json({ op: 'join', id: 4 });
  assert.equal((await ws.next()).error.code, 'bad_request');
  ws.json({ op: 'join', room: 'r', id: 5 });
  await ws.next();
  ws.json({ op: 'publish', room: 'r', id: 6 });
  assert.equal((await ws.next()).error.code, 'bad_request');

  ws.send(Buffer.from('{"op":"ping"}'), { binary: true }); // ignored
  ws.json({ op: 'ping', id: 7 });
  assert.deepEqual(await ws.next(), { type: 'pong' });
  ws.close();
});

test('a message over 64 KiB closes the connection with 1009', async () => {
  const ws = await connect();
  const closed = new Promise((resolve) => ws.once('close', resolve));
  ws.json({ op: 'ping', pad: 'x'.repeat(64 * 1024) });
  assert.equal(await closed, 1009);
  const again = await connect(); // the server lives on
  again.close();
});

test('other paths get 404', async () => {
  const status = await new Promise((resolve, reject) =>
    http.get(url.replace('ws:', 'http:').replace(/\/ws$/, '/nope'), (res) => resolve(res.statusCode)).on('error', reject),
  );
  assert.equal(status, 404);
  const ws = new WebSocket(url.replace(/\/ws$/, '/other'));
  const code = await new Promise((resolve) => ws.once('unexpected-response', (req, res) => resolve(res.statusCode)));
  assert.equal(code, 404);
});

test('SIGTERM closes clients with 1001 and exits 0', async () => {
  const ws = await connect();
  const closed = new Promise((resolve) => ws.once('close', resolve));
  const exited = new Promise((resolve) => server.once('exit', (code, signal) => resolve([code, signal])));
  server.kill('SIGTERM');
  assert.equal(await closed, 1001);
  assert.deepEqual(await exited, [0, null]);
});
