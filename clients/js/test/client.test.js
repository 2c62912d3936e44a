// The client against real `gateway --standalone` processes: every API call,
// resume after the gateway drops the connection or restarts, the backoff's
// bounds, and the close codes that stop reconnection; and against a cluster
// whose presence service is down.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import WebSocket from 'ws';

import { backoffBound, decodeToken, SwitchboardError } from '../switchboard.js';
import {
  adminDisconnect,
  apiCall,
  client,
  Cluster,
  mintToken,
  next,
  serverPublish,
  startGateway,
  until,
} from './support.js';

const SECRET = `js-test-secret-of-32-bytes-or-more-${process.pid}`;
const T = { timeout: 30_000 };

let cleanup = [];
afterEach(async () => {
  const fns = cleanup.reverse();
  cleanup = [];
  for (const fn of fns) await fn();
});

/** A connected client for `user` on `gw`. */
async function user(gw, name, options = {}) {
  const c = client(gw.ws, { token: gw.token(name), ...options }, cleanup);
  await c.ready();
  return c;
}

/** Collects a room's messages and resyncs. */
function recorder() {
  const r = { messages: [], resyncs: [], joins: [], leaves: [] };
  r.handlers = {
    onMessage: (m) => r.messages.push(m),
    onResync: (e) => r.resyncs.push(e),
    onJoin: (e) => r.joins.push(e),
    onLeave: (e) => r.leaves.push(e),
  };
  r.data = () => r.messages.map((m) => m.data);
  return r;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe('every API call', () => {
  let gw;
  before(async () => {
    gw = await startGateway({ secret: SECRET, args: ['--offline-grace', '300ms'] });
  });
  after(() => gw.stop());

  it('connects with a token and reports its states', T, async () => {
    const c = client(gw.ws, { token: gw.token('alice') }, cleanup);
    const states = [];
    c.on('state', ({ state }) => states.push(state));
    assert.equal(c.state, 'connecting');
    const info = await c.ready();
    assert.deepEqual(states, ['connected'], 'connecting is the initial state');
    assert.equal(info.user, 'alice');
    assert.equal(info.reconnected, false);
    assert.equal(c.user, 'alice');
    assert.ok(c.connection.conn && c.connection.gateway);
    await c.close();
    assert.equal(c.state, 'disconnected');
    assert.deepEqual(states, ['connected', 'disconnected']);
  });

  it('connects with getToken, called once', T, async () => {
    let calls = 0;
    const c = client(gw.ws, { getToken: async () => (calls++, gw.token('bob')) }, cleanup);
    const seen = [];
    c.on('connecting', () => seen.push('connecting'));
    assert.equal((await c.ready()).user, 'bob');
    assert.equal(calls, 1);
    assert.deepEqual(seen, ['connecting']);
  });

  it('needs a token and a WebSocket', () => {
    assert.throws(() => client(gw.ws, {}), /token/);
    assert.throws(() => client(gw.ws, { token: 'x', WebSocket: null }), /WebSocket/);
  });

  it('join, publish, onMessage, onJoin, onLeave and leave', T, async () => {
    const alice = await user(gw, 'alice');
    const bob = await user(gw, 'bob');
    const a = recorder();
    const b = recorder();
    const joined = await bob.join('api-room', b.handlers);
    assert.equal(joined.room, 'api-room');
    assert.equal(joined.seq, 0);
    assert.equal(typeof joined.epoch, 'string');
    await alice.join('api-room', a.handlers);
    assert.equal(joined.count, 1);
    await until(() => b.joins.length === 1, 'bob sees alice join');
    assert.equal(b.joins[0].user, 'alice');
    assert.equal(b.joins[0].count, 2);
    assert.equal(bob.memberCount('api-room'), 2);
    assert.deepEqual(alice.rooms, ['api-room']);

    const ack = await alice.publish('api-room', { text: 'hi', n: 1 });
    assert.deepEqual(ack, { room: 'api-room', seq: 1, duplicate: false });
    await bob.publish('api-room', 'plain string');
    await until(() => a.messages.length === 2 && b.messages.length === 2, 'both see both messages');
    assert.deepEqual(a.data(), [{ text: 'hi', n: 1 }, 'plain string']);
    assert.deepEqual(b.messages.map((m) => [m.seq, m.from]), [[1, 'alice'], [2, 'bob']]);
    assert.ok(b.messages.every((m) => m.epoch === joined.epoch && m.ts > 0));

    await assert.rejects(alice.join('api-room'), { code: 'already_joined' });
    await assert.rejects(alice.publish('not-joined', 1), { code: 'not_member' });
    await assert.rejects(alice.join('bad.room'), { code: 'invalid_room' });
    assert.deepEqual(alice.rooms, ['api-room']);

    await alice.leave('api-room');
    await until(() => b.leaves.length === 1, 'bob sees alice leave');
    assert.deepEqual(b.leaves[0], { room: 'api-room', user: 'alice', count: 1 });
    await bob.publish('api-room', 'after');
    await until(() => b.messages.length === 3, 'bob gets his own message');
    await sleep(100);
    assert.equal(a.messages.length, 2, 'no messages after leave');
    await alice.leave('api-room'); // leaving twice is fine
  });

  it('send delivers a direct message', T, async () => {
    const alice = await user(gw, 'alice');
    const bob = await user(gw, 'bob');
    const got = next(bob, 'direct');
    assert.deepEqual(await alice.send('bob', { text: 'psst' }), { delivered: true });
    const d = await got;
    assert.equal(d.from, 'alice');
    assert.deepEqual(d.data, { text: 'psst' });
    assert.equal(d.queued, false);
    await assert.rejects(alice.send('not a user', 1), { code: 'bad_request' });
  });

  it('a direct message to an offline user waits for their next connection', T, async () => {
    const alice = await user(gw, 'alice');
    assert.deepEqual(await alice.send('olga', { n: 1 }), { delivered: false });
    assert.deepEqual(await alice.send('olga', { n: 2 }), { delivered: false });
    // Listening before the hello: queued messages follow it at once.
    const olga = client(gw.ws, { token: gw.token('olga') }, cleanup);
    const got = [];
    olga.on('direct', (d) => got.push(d));
    await until(() => got.length === 2, 'olga gets both');
    assert.deepEqual(got.map((d) => [d.from, d.data.n, d.queued]), [['alice', 1, true], ['alice', 2, true]]);
  });

  it('members lists the room', T, async () => {
    const alice = await user(gw, 'alice');
    const bob = await user(gw, 'bob');
    await alice.join('members-room');
    await bob.join('members-room');
    const { members, count } = await alice.members('members-room');
    assert.equal(count, 2);
    assert.deepEqual(members.map((m) => m.user).sort(), ['alice', 'bob']);
    assert.ok(members.every((m) => m.conns === 1));
  });

  it('presence and watch follow a user online and offline', T, async () => {
    const alice = await user(gw, 'alice');
    assert.deepEqual(
      (await alice.presence(['carol', 'alice'])).map((u) => [u.user, u.online]),
      [['carol', false], ['alice', true]],
    );
    const events = [];
    const initial = await alice.watch(['carol'], (e) => events.push(e));
    assert.deepEqual(initial.map((u) => [u.user, u.online]), [['carol', false]]);
    const carol = await user(gw, 'carol');
    await until(() => events.some((e) => e.online), 'carol online');
    await carol.close();
    await until(() => events.some((e) => !e.online), 'carol offline after the grace');
    assert.deepEqual(events.map((e) => [e.user, e.online]), [['carol', true], ['carol', false]]);

    await alice.unwatch(['carol']);
    await user(gw, 'carol');
    await sleep(200);
    assert.equal(events.length, 2, 'no events after unwatch');
  });

  it('setStatus shows in presence replies and watch events', T, async () => {
    const watcher = await user(gw, 'wanda');
    const events = [];
    await watcher.watch(['sam'], (e) => events.push(e));
    const sam = await user(gw, 'sam');
    await until(() => events.some((e) => e.online && e.status === 'online'), 'sam online');
    await sam.setStatus('away');
    await until(() => events.some((e) => e.status === 'away'), 'sam away');
    assert.deepEqual((await watcher.presence(['sam'])).map((u) => u.status), ['away']);
    await assert.rejects(sam.setStatus('x'.repeat(65)), { code: 'bad_request' });
  });

  it('refresh gives the connection a new token', T, async () => {
    const alice = await user(gw, 'alice');
    const exp = Math.floor(Date.now() / 1000) + 7200;
    assert.deepEqual(await alice.refresh(mintToken(SECRET, { sub: 'alice', exp })), { exp });
    await assert.rejects(alice.refresh(gw.token('mallory')), { code: 'forbidden' });

    const handed = [];
    const getToken = () => (handed.push(gw.token('bob', { ttl: 600 + handed.length })), handed.at(-1));
    const bob = client(gw.ws, { getToken }, cleanup);
    await bob.ready();
    const r = await bob.refresh();
    assert.equal(handed.length, 2);
    // The expiry of the token refresh() fetched, as the gateway read it.
    assert.equal(r.exp, decodeToken(handed[1]).exp);
  });

  it('a refresh that no longer allows a room removes it', T, async () => {
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const carol = client(gw.ws, { token: mintToken(SECRET, { sub: 'carol', exp, rooms: ['keep', 'lose'] }) }, cleanup);
    const removed = [];
    await carol.join('keep');
    await carol.join('lose', { onRemoved: (e) => removed.push(e) });
    await carol.refresh(mintToken(SECRET, { sub: 'carol', exp, rooms: ['keep'] }));
    assert.deepEqual(removed, [{ room: 'lose', reason: 'token' }]);
    assert.deepEqual(carol.rooms, ['keep']);
    await assert.rejects(carol.publish('lose', 1), { code: 'not_member' });
  });

  it('the backend subscribes and unsubscribes it (server API); a refresh keeps such a room', T, async () => {
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const dana = client(gw.ws, { token: mintToken(SECRET, { sub: 'dana', exp, rooms: ['own'] }) }, cleanup);
    await dana.ready();
    const r = recorder();
    const removed = [];
    const subscribed = next(dana, 'subscribed');
    dana.on('subscribed', ({ room }) => dana.handle(room, { ...r.handlers, onRemoved: (e) => removed.push(e) }));
    assert.deepEqual(await apiCall(gw, 'subscribe', { user: 'dana', room: 'backstage' }), { connections: 1, failed: 0 });
    const event = await subscribed;
    assert.equal(event.room, 'backstage');
    assert.equal(event.count, 1);
    assert.deepEqual(dana.rooms, ['backstage']);
    const { seq } = await apiCall(gw, 'publish', { room: 'backstage', data: { from: 'backend' } });
    await until(() => r.messages.length === 1, 'the message');
    assert.equal(r.messages[0].seq, seq);
    // Membership only: publishing still takes the token's permission.
    await assert.rejects(dana.publish('backstage', 'hi'), { code: 'forbidden' });
    // The token does not allow the room, but the backend's decision stands.
    await dana.refresh(mintToken(SECRET, { sub: 'dana', exp, rooms: ['own'] }));
    assert.deepEqual(dana.rooms, ['backstage']);
    assert.deepEqual(await apiCall(gw, 'unsubscribe', { user: 'dana', room: 'backstage' }), { connections: 1, failed: 0 });
    await until(() => removed.length === 1, 'removed');
    assert.deepEqual(removed, [{ room: 'backstage', reason: 'server' }]);
    assert.deepEqual(dana.rooms, []);
  });

  it('close() stops the client and rejects requests', T, async () => {
    const alice = await user(gw, 'alice');
    await alice.join('close-room');
    await alice.close();
    assert.equal(alice.state, 'disconnected');
    await assert.rejects(alice.publish('close-room', 1), (e) => e instanceof SwitchboardError && e.code === 'closed');
    await assert.rejects(alice.ready(), { code: 'closed' });
  });
});

describe('presence down in a cluster', () => {
  let cluster;
  before(async () => {
    cluster = await Cluster.start({ gateways: 1, secret: SECRET });
  });
  after(() => cluster?.stop());

  it('presence and watch mark their states degraded', T, async () => {
    const [gw] = cluster.gateways;
    const alice = await user(gw, 'alice');
    await user(gw, 'bob');
    assert.equal((await alice.presence(['bob']))[0].degraded, undefined, 'not while presence answers');
    await cluster.presence.stop();
    const states = await until(async () => {
      const s = await alice.presence(['bob', 'carol']);
      return s[0].degraded && s;
    }, 'a degraded answer');
    assert.deepEqual(
      states.map((u) => [u.user, u.online, u.degraded]),
      [['bob', true, true], ['carol', false, true]],
      "the gateway's own view",
    );
    const watched = await alice.watch(['bob']);
    assert.deepEqual(watched.map((u) => [u.user, u.online, u.degraded]), [['bob', true, true]]);
  });
});

describe('namespaces', () => {
  let gw;
  let dir;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sb-js-ns-'));
    const config = join(dir, 'switchboard.toml');
    await writeFile(
      config,
      ['[[namespace]]', 'prefix = "news:"', 'publish = "none"', '', '[[namespace]]', 'prefix = "big:"', 'join_leave = "batched"'].join('\n'),
    );
    gw = await startGateway({ secret: SECRET, args: ['--config', config] });
  });
  after(async () => {
    await gw.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('a batched room sends members_changed and the client keeps the count', T, async () => {
    const alice = await user(gw, 'alice');
    const changes = [];
    const joins = [];
    const joined = await alice.join('big:hall', { onMembersChanged: (e) => changes.push(e), onJoin: (e) => joins.push(e) });
    assert.equal(joined.count, 1);
    const others = await Promise.all(['bob', 'carol', 'dave'].map((n) => user(gw, n)));
    await Promise.all(others.map((c) => c.join('big:hall')));
    await until(() => alice.memberCount('big:hall') === 4, 'alice counts four members');
    // Her own join may share the first window: a batch goes to every member.
    const seen = changes.flatMap((c) => c.joined.map((j) => j.user)).filter((u) => u !== 'alice');
    assert.deepEqual(seen.sort(), ['bob', 'carol', 'dave']);
    assert.ok(changes.every((c) => c.room === 'big:hall' && c.truncated === false && c.left.length === 0));
    assert.deepEqual(joins, [], 'no joined events in a batched room');
    await others[2].leave('big:hall');
    await until(() => alice.memberCount('big:hall') === 3, 'alice sees dave leave');
    assert.deepEqual(changes.at(-1).left, ['dave']);
    assert.equal(changes.at(-1).count, 3);
  });

  it('a read-only room refuses a client publish and names the rule', T, async () => {
    const alice = await user(gw, 'alice');
    const r = recorder();
    await alice.join('news:today', r.handlers);
    await assert.rejects(alice.publish('news:today', 'hi'), (e) => {
      assert.equal(e.code, 'forbidden');
      assert.match(e.message, /namespace "news:" has publish = "none"/);
      return true;
    });
    // The server API may.
    assert.equal(await serverPublish(gw.grpc, 'news:today', { text: 'from the backend' }), 1);
    await until(() => r.messages.length === 1, 'the server message arrives');
    assert.deepEqual(r.messages[0].data, { text: 'from the backend' });
  });

  it('markRead moves a marker forward; members show it and onRead reports it', T, async () => {
    const alice = await user(gw, 'alice');
    const bob = await user(gw, 'bob');
    const reads = [];
    await alice.join('chat:unread', { onRead: (e) => reads.push(e) });
    await bob.join('chat:unread');
    for (const n of [1, 2, 3]) await alice.publish('chat:unread', n);
    await bob.markRead('chat:unread', 2);
    await until(() => reads.length === 1, 'alice hears of it');
    assert.deepEqual(reads[0], { room: 'chat:unread', user: 'bob', seq: 2 });
    await bob.markRead('chat:unread', 1);
    const { members } = await alice.members('chat:unread');
    assert.deepEqual(members.map((m) => [m.user, m.read_seq]).sort(), [['alice', 0], ['bob', 2]]);
    // A batched room carries markers in its batches.
    const batched = [];
    await alice.join('big:unread', { onRead: (e) => batched.push(e) });
    await bob.join('big:unread');
    await alice.publish('big:unread', 'x');
    await bob.markRead('big:unread', 1);
    await until(() => batched.length === 1, 'the batch brings it');
    assert.deepEqual(batched[0], { room: 'big:unread', user: 'bob', seq: 1 });
  });

  it('signals reach the other members; typing is throttled and expires', T, async () => {
    const alice = await user(gw, 'alice');
    const bob = await user(gw, 'bob');
    const [signals, typing, mine] = [[], [], []];
    await alice.join('chat:typing', { onSignal: (e) => mine.push(e) });
    await bob.join('chat:typing', { onSignal: (e) => signals.push(e), onTyping: (e) => typing.push(e.users) });
    await alice.signal('chat:typing', { cursor: 7 });
    await until(() => signals.length === 1, 'bob gets the signal');
    assert.deepEqual(signals[0], { room: 'chat:typing', from: 'alice', data: { cursor: 7 } });
    await alice.typing('chat:typing');
    await alice.typing('chat:typing'); // within 2 s: not sent
    await until(() => typing.length === 1, 'bob sees alice typing');
    assert.deepEqual(typing[0], ['alice']);
    const started = Date.now();
    await until(() => typing.length === 2, 'alice stops typing by herself', 5000);
    assert.deepEqual(typing[1], []);
    assert.ok(Date.now() - started >= 2500, 'typing lasts 3 s after the last signal');
    assert.equal(signals.length, 2, 'the second typing() within 2 s sent nothing');
    // A message ends typing at once; so does typing(room, false).
    await alice.typing('chat:typing');
    await until(() => typing.length === 3, 'typing again');
    await alice.publish('chat:typing', 'done');
    await until(() => typing.length === 4, 'the message ends it');
    assert.deepEqual(typing[3], []);
    assert.deepEqual(mine, [], 'the sender does not get its own signals');
    // The publish seq counted no signal.
    assert.equal((await bob.publish('chat:typing', 'next')).seq, 2);
    await alice.join('news:signals');
    await assert.rejects(alice.signal('news:signals', { typing: true }), (e) => e.code === 'forbidden');
    await assert.rejects(alice.signal('chat:typing', 'x'.repeat(5000)), (e) => e.code === 'too_large');
  });
});

describe('resume', () => {
  let gw;
  before(async () => {
    gw = await startGateway({ secret: SECRET, args: ['--history-size', '5'] });
  });
  after(() => gw.stop());

  it('after the gateway drops the connection, every message arrives once and in order', T, async () => {
    const bob = await user(gw, 'bob');
    const alice = await user(gw, 'alice', { backoffBase: 300, random: () => 1 });
    const a = recorder();
    await bob.join('resume-room');
    await alice.join('resume-room', a.handlers);
    await bob.publish('resume-room', 1);
    await until(() => a.messages.length === 1, 'first message');

    const lost = next(alice, 'reconnecting');
    assert.equal(await adminDisconnect(gw.grpc, 'alice', 4000), 1);
    const r = await lost;
    assert.equal(r.code, 4000);
    assert.equal(r.delay, 300);
    // While alice is away: messages from bob, and one of hers, queued.
    const mine = alice.publish('resume-room', 'from alice, queued');
    await bob.publish('resume-room', 2);
    await bob.publish('resume-room', 3);
    const back = await next(alice, 'connected');
    assert.equal(back.reconnected, true);
    assert.equal((await mine).seq, 4);
    await bob.publish('resume-room', 5);
    await until(() => a.messages.length === 5, 'all five messages');
    assert.deepEqual(a.data(), [1, 2, 3, 'from alice, queued', 5]);
    assert.deepEqual(a.messages.map((m) => m.seq), [1, 2, 3, 4, 5]);
    assert.deepEqual(a.resyncs, []);
    await sleep(100);
    assert.equal(a.messages.length, 5, 'no duplicates');
  });

  it('a publish whose reply was lost is sent again with its key and stored once', T, async () => {
    // A socket that drops the connection instead of delivering the next reply.
    let armed = false;
    class LosesAReply extends WebSocket {
      set onmessage(fn) {
        super.onmessage = (ev) => {
          if (armed && JSON.parse(ev.data).type === 'reply') {
            armed = false;
            this.terminate();
            return;
          }
          fn(ev);
        };
      }
    }
    const alice = await user(gw, 'alice', { WebSocket: LosesAReply, backoffBase: 50 });
    const a = recorder();
    await alice.join('lost-ack', a.handlers);
    armed = true;
    const reconnected = next(alice, 'connected');
    const ack = await alice.publish('lost-ack', 'once');
    assert.equal((await reconnected).reconnected, true, 'the reply was lost with the connection');
    assert.deepEqual(ack, { room: 'lost-ack', seq: 1, duplicate: true });
    await alice.publish('lost-ack', 'twice', { idempotencyKey: 'mine' });
    assert.deepEqual(await alice.publish('lost-ack', 'twice', { idempotencyKey: 'mine' }), {
      room: 'lost-ack',
      seq: 2,
      duplicate: true,
    });
    await until(() => a.messages.length === 2, 'both messages');
    await sleep(100);
    assert.deepEqual(a.data(), ['once', 'twice'], 'each stored once');
  });

  it('calls onResync when the history no longer reaches back', T, async () => {
    const bob = await user(gw, 'bob');
    const alice = await user(gw, 'alice', { backoffBase: 300, random: () => 1 });
    const a = recorder();
    await bob.join('resync-room');
    await alice.join('resync-room', a.handlers);
    await bob.publish('resync-room', 0);
    await until(() => a.messages.length === 1, 'first message');

    const lost = next(alice, 'reconnecting');
    await adminDisconnect(gw.grpc, 'alice', 4000);
    await lost;
    for (let i = 1; i <= 8; i++) await bob.publish('resync-room', i); // more than --history-size 5
    await next(alice, 'connected');
    await until(() => a.resyncs.length === 1, 'onResync');
    assert.equal(a.resyncs[0].reason, 'history');
    assert.equal(a.resyncs[0].seq, 9);
    await bob.publish('resync-room', 'new');
    await until(() => a.messages.length === 2, 'the next message');
    assert.deepEqual(a.data(), [0, 'new'], 'nothing old is replayed after a resync');
    assert.equal(a.messages[1].seq, 10);
  });

  it('survives a gateway restart on the same port', T, async () => {
    let gw2 = await startGateway({ secret: SECRET });
    // Restarts reuse the port it got.
    const port = gw2.port;
    cleanup.push(() => gw2.stop());
    const alice = await user(gw2, 'alice', { backoffBase: 100, backoffCap: 400 });
    const bob = await user(gw2, 'bob', { backoffBase: 100, backoffCap: 400 });
    const a = recorder();
    const b = recorder();
    await alice.join('restart-room', a.handlers);
    await bob.join('restart-room', b.handlers);
    await alice.publish('restart-room', 'before');
    await until(() => b.messages.length === 1, 'bob sees before');

    const aliceLost = next(alice, 'reconnecting', (e) => e.code === 1001);
    await gw2.stop('SIGTERM'); // drains: close 1001, "reconnect elsewhere"
    await aliceLost;
    const queued = alice.publish('restart-room', 'while down');
    gw2 = await startGateway({ port, secret: SECRET });
    assert.equal((await queued).seq, 1, 'a new gateway starts the room afresh');
    await until(() => b.messages.length === 2 && a.messages.length === 2, 'both see the queued message');
    assert.deepEqual(a.data(), ['before', 'while down']);
    assert.deepEqual(b.data(), ['before', 'while down']);
    // The restarted gateway started the room afresh: both are told that the
    // old epoch ended, and get the new one from its first message.
    assert.deepEqual(a.resyncs.map((e) => [e.reason, e.seq]), [['history', 0]]);
    assert.deepEqual(b.resyncs.map((e) => [e.reason, e.seq]), [['history', 0]]);
    assert.ok(a.resyncs[0].epoch !== a.messages[0].epoch && a.resyncs[0].epoch === a.messages[1].epoch);
  });
});

describe('reconnection policy', () => {
  it('backs off exponentially with full jitter, capped, and resets once connected', T, async () => {
    assert.deepEqual([1, 2, 3, 4, 5, 9].map((n) => backoffBound(n, 100, 400)), [100, 200, 400, 400, 400, 400]);
    assert.equal(backoffBound(1), 500);
    assert.equal(backoffBound(50), 30_000);

    let gw = await startGateway({ secret: SECRET });
    // Restarts reuse the port it got.
    const port = gw.port;
    cleanup.push(() => gw.stop());
    // random() = 1 takes the top of each range: the delays are exact.
    const c = client(gw.ws, { token: gw.token('alice'), backoffBase: 100, backoffCap: 400, random: () => 1 }, cleanup);
    await c.ready();
    const log = [];
    c.on('reconnecting', (e) => log.push({ ...e, at: performance.now() }));
    c.on('connecting', (e) => log.push({ connecting: e.attempt, at: performance.now() }));
    await gw.stop();
    await until(() => log.filter((e) => e.delay !== undefined).length >= 6, 'six reconnect attempts');
    const waits = log.filter((e) => e.delay !== undefined);
    assert.deepEqual(waits.map((e) => e.delay), [100, 200, 400, 400, 400, 400]);
    assert.deepEqual(waits.map((e) => e.attempt), [1, 2, 3, 4, 5, 6]);
    for (const w of waits.slice(0, 5)) {
      const i = log.indexOf(w);
      const opened = log[i + 1];
      assert.equal(opened.connecting, w.attempt, 'each wait is followed by an attempt');
      const gap = opened.at - w.at;
      assert.ok(gap >= w.delay - 2 && gap < w.delay + 750, `attempt ${w.attempt}: waited ${gap} ms for ${w.delay}`);
    }

    gw = await startGateway({ port, secret: SECRET });
    const back = await next(c, 'connected');
    assert.equal(back.reconnected, true);
    const lost = next(c, 'reconnecting');
    await adminDisconnect(gw.grpc, 'alice', 4000);
    assert.equal((await lost).delay, 100, 'the attempt count starts again after a connection');
  });

  it('jittered delays stay within [0, bound)', T, async () => {
    const gw = await startGateway({ secret: SECRET });
    // Restarts reuse the port it got.
    const port = gw.port;
    const c = client(gw.ws, { token: gw.token('alice'), backoffBase: 40, backoffCap: 160 }, cleanup);
    await c.ready();
    const waits = [];
    c.on('reconnecting', (e) => waits.push(e));
    await gw.stop();
    await until(() => waits.length >= 8, 'eight attempts');
    for (const w of waits) {
      assert.ok(w.delay >= 0 && w.delay <= backoffBound(w.attempt, 40, 160), JSON.stringify(w));
    }
  });

  it('stops on an invalid token (4500)', T, async () => {
    const gw = await startGateway({ secret: SECRET });
    cleanup.push(() => gw.stop());
    const c = client(gw.ws, { token: mintToken('wrong secret', { sub: 'alice', exp: 9e9 }) }, cleanup);
    const attempts = [];
    c.on('connecting', () => attempts.push(1));
    const pending = c.publish('r', 1);
    const stopped = await next(c, 'disconnected');
    assert.equal(stopped.code, 4500);
    assert.equal(c.state, 'disconnected');
    await assert.rejects(pending, (e) => e.code === 'closed' && e.closeCode === 4500);
    await assert.rejects(c.ready(), { code: 'closed' });
    await sleep(300);
    assert.equal(attempts.length, 1, 'no reconnection after 4500');
  });

  it('stops when the gateway closes with 4502', T, async () => {
    const gw = await startGateway({ secret: SECRET });
    cleanup.push(() => gw.stop());
    const c = await user(gw, 'mallory', { backoffBase: 10 });
    const attempts = [];
    c.on('connecting', () => attempts.push(1));
    const stopped = next(c, 'disconnected');
    await adminDisconnect(gw.grpc, 'mallory', 4502);
    assert.equal((await stopped).code, 4502);
    await sleep(200);
    assert.deepEqual(attempts, []);
  });

  it('on 4501 asks getToken again, and stops when that token is expired too', T, async () => {
    const gw = await startGateway({ secret: SECRET });
    cleanup.push(() => gw.stop());

    // A static expired token: stop.
    const stale = client(gw.ws, { token: gw.token('alice', { ttl: -10 }) }, cleanup);
    assert.equal((await next(stale, 'disconnected')).code, 4501);

    // A token that expires while connected: a new one, and the room resumes.
    let calls = 0;
    const alice = client(
      gw.ws,
      // ttl 2, not 1: a token minted just before a second ticks over must not expire before it is checked.
      { getToken: () => gw.token('alice', { ttl: calls++ === 0 ? 2 : 3600 }), refreshAhead: false, backoffBase: 50 },
      cleanup,
    );
    const a = recorder();
    await alice.join('expiry-room', a.handlers);
    const bob = await user(gw, 'bob');
    await bob.join('expiry-room');
    await bob.publish('expiry-room', 1);
    const lost = await next(alice, 'reconnecting', () => true, 5000);
    assert.equal(lost.code, 4501);
    await bob.publish('expiry-room', 2);
    await next(alice, 'connected');
    assert.equal(calls, 2);
    await until(() => a.messages.length === 2, 'both messages');
    assert.deepEqual(a.data(), [1, 2]);
    assert.deepEqual(a.resyncs, []);

    // getToken keeps handing out expired tokens: one retry, then stop.
    let stale2 = 0;
    const carol = client(gw.ws, { getToken: () => (stale2++, gw.token('carol', { ttl: -10 })), backoffBase: 10 }, cleanup);
    assert.equal((await next(carol, 'disconnected')).code, 4501);
    assert.equal(stale2, 2);
  });

  it('notices a gateway that stopped answering, and reconnects once it answers again', T, async () => {
    const gw = await startGateway({ secret: SECRET, args: ['--heartbeat', '300ms', '--pong-timeout', '10s'] });
    cleanup.push(() => gw.stop());
    const c = await user(gw, 'alice', { pongTimeout: 300, connectTimeout: 500, backoffBase: 50, backoffCap: 200 });
    assert.equal(c.connection.heartbeat_ms, 300);
    const lost = next(c, 'reconnecting');
    gw.proc.signal('SIGSTOP');
    cleanup.push(() => gw.proc.signal('SIGCONT'));
    const t0 = performance.now();
    const e = await lost;
    const took = performance.now() - t0;
    assert.equal(e.code, 4001);
    // Silent for the heartbeat, then a ping op, then silent for pongTimeout.
    assert.ok(took >= 250 && took < 3000, `noticed after ${took} ms`);
    await next(c, 'reconnecting', (r) => r.reason === 'connect timeout');
    const back = next(c, 'connected');
    gw.proc.signal('SIGCONT');
    assert.equal((await back).reconnected, true);
  });

  it('refreshes a short-lived token before it expires', T, async () => {
    const gw = await startGateway({ secret: SECRET });
    cleanup.push(() => gw.stop());
    let calls = 0;
    const c = client(gw.ws, { getToken: () => (calls++, gw.token('alice', { ttl: 2 })) }, cleanup);
    await c.ready();
    const drops = [];
    c.on('reconnecting', (e) => drops.push(e));
    await until(() => calls >= 3, 'two refreshes', 8000);
    assert.deepEqual(drops, [], 'never expired');
    assert.equal(c.state, 'connected');
  });
});

describe('requests while disconnected', () => {
  it('are queued up to maxQueue, then refused; 0 refuses at once', T, async () => {
    let gw = await startGateway({ secret: SECRET });
    // Restarts reuse the port it got.
    const port = gw.port;
    cleanup.push(() => gw.stop());
    const c = client(gw.ws, { token: gw.token('alice'), maxQueue: 2, backoffBase: 50, backoffCap: 100 }, cleanup);
    const none = client(gw.ws, { token: gw.token('bob'), maxQueue: 0, backoffBase: 50, backoffCap: 100 }, cleanup);
    const a = recorder();
    await c.join('queue-room', a.handlers);
    await none.ready();
    await gw.stop();
    await until(() => c.state !== 'connected' && none.state !== 'connected', 'both notice');

    const first = c.publish('queue-room', 'one');
    const second = c.members('queue-room');
    await assert.rejects(c.publish('queue-room', 'three'), { code: 'queue_full' });
    await assert.rejects(none.publish('queue-room', 'x'), { code: 'disconnected' });
    const expired = c.publish('queue-room', 'too slow', { timeout: 1 }).catch((e) => e);
    assert.equal((await expired).code, 'queue_full', 'still full');

    gw = await startGateway({ port, secret: SECRET });
    assert.equal((await first).seq, 1);
    assert.deepEqual((await second).members.map((m) => m.user), ['alice']);
    await until(() => a.messages.length === 1, 'the queued message');
    assert.deepEqual(a.data(), ['one']);
  });

  it('a queued request that times out is never sent', T, async () => {
    let gw = await startGateway({ secret: SECRET });
    // Restarts reuse the port it got.
    const port = gw.port;
    cleanup.push(() => gw.stop());
    const c = client(gw.ws, { token: gw.token('alice'), backoffBase: 50, backoffCap: 100 }, cleanup);
    const a = recorder();
    await c.join('timeout-room', a.handlers);
    await gw.stop();
    await until(() => c.state !== 'connected', 'disconnect noticed');
    await assert.rejects(c.publish('timeout-room', 'late', { timeout: 50 }), { code: 'timeout' });
    const kept = c.publish('timeout-room', 'kept');
    gw = await startGateway({ port, secret: SECRET });
    assert.equal((await kept).seq, 1);
    await until(() => a.messages.length === 1, 'the kept message');
    await sleep(100);
    assert.deepEqual(a.data(), ['kept']);
  });

  it('publish rejects with timeout when the gateway does not answer', T, async () => {
    const gw = await startGateway({ secret: SECRET });
    cleanup.push(() => gw.stop());
    const c = await user(gw, 'alice');
    await c.join('frozen');
    gw.proc.signal('SIGSTOP');
    cleanup.push(() => gw.proc.signal('SIGCONT'));
    const t0 = performance.now();
    await assert.rejects(c.publish('frozen', 1, { timeout: 300 }), { code: 'timeout' });
    const took = performance.now() - t0;
    assert.ok(took >= 295 && took < 2000, `took ${took} ms`);
    gw.proc.signal('SIGCONT');
  });
});
