// Switchboard client for browsers and Node.js: one ES module, no dependencies.
//
// A client keeps one connection to a gateway and hides its loss: it reconnects
// with exponential backoff and full jitter, rejoins every room with `since` set
// to the last message it delivered (so the application sees each message once
// and in order, or an `onResync` when the room's history no longer reaches
// back), watches the same users again, and holds requests made while
// disconnected in a bounded queue. Close codes follow the protocol: below 4500
// means "reconnect", 4500 and above means "not with these credentials", so the
// client stops, except that on 4501 (token expired) it asks `getToken` for a
// new token once. Where WebSockets cannot get through (a proxy that breaks
// them, no WebSocket at all), it falls back to server-sent events with the
// same API: the events come from `GET /sse`, requests go by POST. The
// protocol itself is described in docs/protocol.md.

/** The subprotocol this client speaks. */
export const PROTOCOL = 'switchboard.v1.json';

/** A failed request or connection. `code` is a protocol error code
 * (`not_member`, `forbidden`, `unavailable`, …) or one of the client's own:
 * `timeout`, `queue_full`, `disconnected`, `closed`. */
export class SwitchboardError extends Error {
  constructor(code, message, closeCode) {
    super(message);
    this.name = 'SwitchboardError';
    this.code = code;
    if (closeCode !== undefined) this.closeCode = closeCode;
  }
}

const DEFAULTS = {
  transport: 'auto',
  timeout: 10_000,
  connectTimeout: 10_000,
  maxQueue: 100,
  backoffBase: 500,
  backoffCap: 30_000,
  pongTimeout: 10_000,
  refreshAhead: true,
};

// setTimeout takes a signed 32-bit delay; longer ones fire at once.
const MAX_TIMER = 2 ** 30;
// Typing, as the Socket.IO chat example does it: say so at most every 2 s,
// and a typist who has said nothing for 3 s has stopped.
const TYPING_EVERY_MS = 2000;
const TYPING_TTL_MS = 3000;
// Ops that change nothing when repeated: safe to send again after a drop.
const IDEMPOTENT = new Set(['members', 'presence', 'watch', 'unwatch', 'refresh']);
const STATES = ['connecting', 'connected', 'reconnecting', 'disconnected'];

/**
 * Connects to a gateway and returns the client at once; it keeps connecting
 * in the background. `url` is the gateway's `/ws` URL (in a browser it may be
 * relative, and `http(s):` is read as `ws(s):`).
 */
export function connect(url, options = {}) {
  return new Client(url, options);
}

/** The claims of a JWT, unverified (for `exp`), or null. */
export function decodeToken(token) {
  try {
    const part = String(token).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      Array.from(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')))
        .map((c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0'))
        .join(''),
    );
    const claims = JSON.parse(json);
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/** The upper bound of the `attempt`-th backoff delay (1-based): the delay is
 * uniform in [0, bound) ("full jitter"). */
export function backoffBound(attempt, base = DEFAULTS.backoffBase, cap = DEFAULTS.backoffCap) {
  return Math.min(cap, base * 2 ** Math.min(attempt - 1, 30));
}

export class Client {
  #url;
  #opts;
  #WebSocket;
  #EventSource;
  #sse = false; // speaking SSE (chosen, or fallen back to)
  #token;
  #ws = null;
  #state = 'connecting';
  #hello = null;
  #listeners = new Map();
  #nextId = 1;
  #pending = new Map(); // id -> request entry (queued or sent)
  #queue = []; // entries waiting for a connection, in call order
  #rooms = new Map(); // room -> { handlers, epoch, seq, waiters, retry }
  #watches = new Map(); // user -> { callbacks: Set, online }
  #status = null; // the status set with setStatus, said again after a reconnect
  #attempt = 0; // failed attempts since the last hello
  #renewed = false; // the current token was fetched because of a 4501
  #timers = { retry: null, connect: null, heartbeat: null, refresh: null };
  #lastRx = 0;
  #pingAt = 0;
  #closed = false;
  #everConnected = false;
  #onlineListener = null;

  constructor(url, options = {}) {
    if (!options.token && !options.getToken && !hasTokenParam(url)) {
      throw new TypeError('switchboard: pass {token} or {getToken} (or a URL with ?token=)');
    }
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.#EventSource = options.EventSource ?? globalThis.EventSource;
    const transport = options.transport ?? DEFAULTS.transport;
    if (!['auto', 'websocket', 'sse'].includes(transport)) {
      throw new TypeError(`switchboard: transport is 'auto', 'websocket' or 'sse', not ${JSON.stringify(transport)}`);
    }
    const ws = typeof this.#WebSocket === 'function';
    const sse = typeof this.#EventSource === 'function' && typeof globalThis.fetch === 'function';
    if (transport === 'sse' && !sse) throw new TypeError('switchboard: transport "sse" needs EventSource and fetch');
    if (!ws && !(transport === 'auto' && sse)) {
      throw new TypeError(
        'switchboard: no WebSocket implementation; on Node.js before 22 pass {WebSocket} (for example from the "ws" package)',
      );
    }
    this.#sse = transport === 'sse' || !ws;
    this.#url = resolveUrl(url);
    this.#opts = { ...DEFAULTS, ...options };
    this.#token = options.token ?? null;
    if (typeof globalThis.addEventListener === 'function' && globalThis.navigator && 'onLine' in globalThis.navigator) {
      // Back on the network: retry now rather than at the end of the backoff.
      this.#onlineListener = () => {
        if (this.#state === 'reconnecting') this.#openNow();
      };
      globalThis.addEventListener('online', this.#onlineListener);
    }
    // Start after the caller had a chance to subscribe to `connecting`.
    queueMicrotask(() => this.#open());
  }

  /** `connecting`, `connected`, `reconnecting` or `disconnected` (final). */
  get state() {
    return this.#state;
  }

  /** `websocket`, or `sse` once the client speaks server-sent events. */
  get transport() {
    return this.#sse ? 'sse' : 'websocket';
  }

  /** The user id from the gateway's `hello`, once connected. */
  get user() {
    return this.#hello?.user ?? null;
  }

  /** The current connection's `hello` (`conn`, `user`, `gateway`, `heartbeat_ms`), or null. */
  get connection() {
    return this.#hello ? { ...this.#hello } : null;
  }

  /** The rooms this client is in (or joining). */
  get rooms() {
    return [...this.#rooms.keys()];
  }

  /**
   * Subscribes to an event; returns a function that unsubscribes. Events:
   * `state` ({state, previous}), `connecting` ({attempt}), `connected`
   * ({user, conn, gateway, reconnected}), `reconnecting` ({attempt, delay,
   * code, reason}), `disconnected` ({code, reason}), `direct` ({from, data,
   * ts}), `subscribed` ({room, epoch, seq, count}: the application's backend
   * joined this connection to a room; give it handlers with `handle(room,
   * handlers)` inside the listener, so no message is missed), `error` (a
   * SwitchboardError the application did not ask for).
   */
  on(event, fn) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this.#listeners.get(event)?.delete(fn);
  }

  /** Resolves with the `connected` details once connected; rejects if the client stops first. */
  ready() {
    if (this.#state === 'connected') return Promise.resolve(this.#connectedInfo(false));
    if (this.#state === 'disconnected') return Promise.reject(new SwitchboardError('closed', 'client is stopped'));
    return new Promise((resolve, reject) => {
      const offs = [
        this.on('connected', (info) => (offs.forEach((f) => f()), resolve(info))),
        this.on('disconnected', (e) => (offs.forEach((f) => f()), reject(closedError(e.code, e.reason)))),
      ];
    });
  }

  /**
   * Joins `room` and keeps it joined across reconnects. Handlers:
   * `onMessage({room, seq, epoch, from, data, ts})`, `onJoin({room, user,
   * info, count})`, `onLeave({room, user, count})`, `onMembersChanged({room,
   * joined: [{user, info}], left: [user], count, truncated})` (rooms whose
   * namespace batches joins and leaves), `onResync({room, epoch, seq,
   * reason})`, `onRemoved({room, reason})` (a refreshed token no longer
   * allows the room) and `onError(error)` (a rejoin after a reconnect was
   * refused), `onRead({room, user, seq})` (a user's read marker moved),
   * `onSignal({room, from, data})` (another member's signal) and
   * `onTyping({room, users})` (who is typing now: a user counts as typing for
   * 3 s after their last `typing()` signal, until they stop, or until their
   * next message). Resolves with `{room, epoch, seq, count}` once the gateway
   * confirms the first join; `memberCount(room)` follows the count.
   */
  join(room, handlers = {}, { timeout = this.#opts.timeout } = {}) {
    if (this.#closed) return Promise.reject(new SwitchboardError('closed', 'client is stopped'));
    if (this.#rooms.has(room)) {
      return Promise.reject(new SwitchboardError('already_joined', `already in room ${room}`));
    }
    return new Promise((resolve, reject) => {
      const rec = newRoom(handlers);
      const timer = setTimeout(() => {
        if (this.#rooms.get(room) !== rec || rec.confirmed) return;
        this.#rooms.delete(room);
        clearTimeout(rec.retry);
        // The join may still land: do not stay in a room the caller gave up on.
        if (this.#hello) this.#send({ op: 'leave', room });
        reject(new SwitchboardError('timeout', `join ${room} got no reply within ${timeout} ms`));
      }, timeout);
      rec.waiter = {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.#rooms.set(room, rec);
      if (this.#hello) this.#sendJoin(room, rec);
    });
  }

  /**
   * Replaces the handlers of a room this client is in: one the backend
   * subscribed it to (see the `subscribed` event), or one it joined.
   */
  handle(room, handlers) {
    const rec = this.#rooms.get(room);
    if (!rec) throw new SwitchboardError('not_member', `not in room ${room}`);
    rec.handlers = handlers;
  }

  /**
   * Users in a joined room, as of its join reply and the `joined`, `left`
   * and `members_changed` events since (exact again at each of these
   * replies and batches); `null` for a room not joined yet.
   */
  memberCount(room) {
    return this.#rooms.get(room)?.count ?? null;
  }

  /** Leaves `room`; no more events arrive for it. */
  async leave(room) {
    const rec = this.#rooms.get(room);
    if (!rec) return;
    this.#rooms.delete(room);
    clearTimeout(rec.retry);
    rec.waiter?.reject(new SwitchboardError('left', `left room ${room} before joining it`));
    // Disconnected: the gateway forgot the membership with the connection.
    if (!this.#hello) return;
    try {
      await this.#request('leave', { room });
    } catch (e) {
      if (e.code !== 'not_member' && e.code !== 'disconnected') throw e;
    }
  }

  /**
   * Publishes `data` (any JSON) to a joined room; resolves with `{room, seq,
   * duplicate}` once the room's owner has it. Every publish carries an
   * idempotency key (yours, or a random one): one whose reply was lost with
   * the connection is sent again after the reconnect with the same key, and
   * the room answers with the first message's seq instead of storing it twice.
   */
  async publish(room, data, { timeout, idempotencyKey } = {}) {
    // Others stop showing this user as typing at the message: the next
    // keystroke must say so again, whatever the throttle.
    const rec = this.#rooms.get(room);
    if (rec) rec.typingSent = 0;
    const key = idempotencyKey ?? randomKey();
    const r = await this.#request('publish', { room, data, idempotency_key: key }, timeout);
    return { room, seq: r.seq, duplicate: r.duplicate === true };
  }

  /**
   * Marks `room` read up to `seq` for this user. The room keeps the highest
   * seq marked (`members` shows it as `read_seq`) and tells its members in
   * `onRead`, unless its namespace has `join_leave = "off"`.
   */
  async markRead(room, seq, { timeout } = {}) {
    await this.#request('read', { room, seq }, timeout);
  }

  /**
   * Sends `data` to the room's other members as a `signal` event: no seq, not
   * stored, never replayed (typing indicators, cursors). At most 4 KiB.
   */
  async signal(room, data, { timeout } = {}) {
    await this.#request('signal', { room, data }, timeout);
  }

  /**
   * Tells the room this user is typing (`typing(room)`, sent at most once per
   * 2 s however often it is called) or stopped (`typing(room, false)`, sent at
   * once). Others see it in `onTyping`.
   */
  async typing(room, on = true) {
    const rec = this.#rooms.get(room);
    if (!rec) throw new SwitchboardError('not_member', `not in room ${room}`);
    const now = Date.now();
    if (on && now - rec.typingSent < TYPING_EVERY_MS) return;
    rec.typingSent = on ? now : 0;
    await this.signal(room, { typing: on });
  }

  /**
   * Sends `data` to every connection of `user` (a `direct` event there).
   * Resolves with `{delivered}`: false when the user had no connection, and
   * the message waits for their next one (`queued: true` there).
   */
  async send(user, data, { timeout } = {}) {
    const r = await this.#request('send', { user, data }, timeout);
    return { delivered: r.delivered !== false };
  }

  /** Resolves with `{members: [{user, info, conns}], count, truncated}`: `count` is exact, the list may be shorter. */
  members(room, { timeout } = {}) {
    return this.#request('members', { room }, timeout).then((r) => ({
      members: r.members ?? [],
      count: r.count ?? 0,
      truncated: r.truncated ?? false,
    }));
  }

  /**
   * Resolves with `[{user, online, last_seen_ms, status}]`; each state has
   * `degraded: true` when the presence service could not be asked and the
   * gateway answered from its own connections alone.
   */
  presence(users, { timeout } = {}) {
    return this.#request('presence', { users: [...users] }, timeout).then(states);
  }

  /**
   * Calls `onPresence({user, online, ts})` whenever one of `users` goes
   * online or offline, across reconnects (changes missed while disconnected
   * are reported after reconnecting). Resolves with their current state,
   * as `presence` does (`degraded` included).
   */
  async watch(users, onPresence) {
    users = [...users];
    const added = [];
    for (const user of users) {
      let w = this.#watches.get(user);
      if (!w) this.#watches.set(user, (w = { callbacks: new Set(), online: undefined }));
      if (onPresence && !w.callbacks.has(onPresence)) {
        w.callbacks.add(onPresence);
        added.push(user);
      }
    }
    try {
      const current = states(await this.#request('watch', { users }));
      for (const s of current) {
        const w = this.#watches.get(s.user);
        if (w) w.online = s.online;
      }
      return current;
    } catch (e) {
      for (const user of added) this.#forgetWatch(user, onPresence);
      throw e;
    }
  }

  /**
   * Sets this user's status (`online`, `away`, `busy` or any string of at most
   * 64 bytes), shown to those who watch or query the user while online. The
   * last status set on any of the user's connections wins; it is said again
   * after a reconnect, and forgotten when the user goes offline.
   */
  async setStatus(status, { timeout } = {}) {
    this.#status = status;
    await this.#request('status', { status }, timeout);
  }

  /** Stops `onPresence` (or every callback, without it) for `users`. */
  async unwatch(users, onPresence) {
    const gone = [];
    for (const user of users) {
      if (this.#forgetWatch(user, onPresence)) gone.push(user);
    }
    if (gone.length && this.#hello) await this.#request('unwatch', { users: gone });
  }

  /**
   * Gives the connection a new token (from `getToken` when `token` is
   * omitted) and uses it for later reconnects too. Resolves with `{exp}`.
   */
  async refresh(token) {
    if (token === undefined) {
      if (!this.#opts.getToken) throw new TypeError('switchboard: refresh() needs a token when there is no getToken');
      token = await this.#opts.getToken();
    }
    if (!this.#hello) {
      // The next connection authenticates with it.
      this.#token = token;
      return { exp: decodeToken(token)?.exp ?? null };
    }
    const r = await this.#request('refresh', { token });
    // Only a token the gateway accepted replaces the one reconnects use.
    this.#token = token;
    this.#scheduleRefresh();
    return { exp: r.exp };
  }

  /** Closes the connection for good; pending and queued requests are rejected. */
  close() {
    if (this.#closed) return Promise.resolve();
    const ws = this.#ws;
    this.#stop(1000, 'closed by the client');
    if (!ws || ws.readyState === 3) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, 1000);
      ws.addEventListener?.('close', () => (clearTimeout(timer), resolve()));
    });
  }

  // --- connection ---------------------------------------------------------

  async #open() {
    if (this.#closed) return;
    this.#setState('connecting', { attempt: this.#attempt });
    let token = this.#token;
    if (this.#opts.getToken && (token === null || this.#renewed === 'fetch' || expiresSoon(token))) {
      try {
        token = await this.#opts.getToken();
      } catch (e) {
        if (this.#closed) return;
        this.#emit('error', asError(e, 'getToken failed'));
        this.#retry(1006, 'getToken failed');
        return;
      }
      if (this.#closed) return;
      this.#token = token;
      if (this.#renewed === 'fetch') this.#renewed = true;
    }
    let ws;
    const sse = this.#sse;
    try {
      ws = sse ? new SseSocket(this.#url, token, this.#EventSource) : new this.#WebSocket(this.#url, PROTOCOL);
    } catch (e) {
      if (!sse && this.#canFallBack()) {
        // Cannot even open one (blocked, or no WebSocket here): use SSE.
        this.#sse = true;
        queueMicrotask(() => this.#open());
        return;
      }
      // A malformed URL: retrying cannot help.
      this.#emit('error', asError(e, 'cannot open WebSocket'));
      this.#stop(1006, String(e?.message ?? e));
      return;
    }
    this.#ws = ws;
    this.#timers.connect = setTimeout(() => this.#drop(1006, 'connect timeout'), this.#opts.connectTimeout);
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      // The auth frame keeps the token out of URLs and access logs (an
      // event stream carries its token in the URL: it cannot send first).
      if (token && !sse) ws.send(JSON.stringify({ op: 'auth', token }));
    };
    ws.onmessage = (ev) => {
      if (ws === this.#ws) this.#onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws === this.#ws) this.#onClose(ev.code, ev.reason);
    };
    ws.onerror = () => {}; // a close event follows, with the code
  }

  /** In `auto` mode, a WebSocket that never reached a `hello` gives way to SSE. */
  #canFallBack() {
    return this.#opts.transport === 'auto' && !this.#everConnected && typeof this.#EventSource === 'function';
  }

  #openNow() {
    clearTimeout(this.#timers.retry);
    this.#timers.retry = null;
    this.#open();
  }

  /** Forgets the socket without waiting for its close handshake. */
  #drop(code, reason) {
    const ws = this.#ws;
    if (!ws) return;
    this.#ws = null;
    try {
      ws.close();
    } catch {
      // already closing
    }
    this.#onClose(code, reason, true);
  }

  #onClose(code, reason, dropped = false) {
    if (!dropped) this.#ws = null;
    const wasConnected = this.#hello !== null;
    this.#hello = null;
    clearTimeout(this.#timers.connect);
    clearInterval(this.#timers.heartbeat);
    clearTimeout(this.#timers.refresh);
    for (const rec of this.#rooms.values()) clearTimeout(rec.retry);
    if (this.#closed) return;

    // Sent requests: repeat the harmless ones, fail the others (they may or
    // may not have taken effect, and only the application can tell).
    const again = [];
    for (const entry of [...this.#pending.values()]) {
      if (!entry.sent) continue;
      if (entry.internal) {
        // Rejoins and rewatches are sent afresh on the next connection.
        this.#pending.delete(entry.id);
        clearTimeout(entry.timer);
        continue;
      }
      entry.sent = false;
      // A keyed publish is safe to repeat: the room recognises the key.
      if (IDEMPOTENT.has(entry.frame.op) || entry.frame.idempotency_key) again.push(entry);
      else this.#settle(entry, closedError(code, reason, 'disconnected'));
    }
    this.#queue = [...again, ...this.#queue];

    // A WebSocket that closed before any hello ever came, not on purpose:
    // something between here and the gateway breaks WebSockets.
    if (!wasConnected && !this.#sse && code < 4000 && code !== 1008 && this.#canFallBack()) this.#sse = true;
    if ((code >= 4500 && code <= 4999) || code === 1008) {
      if (code === 4501 && this.#opts.getToken && this.#renewed !== true) {
        // Expired: one more try with a fresh token; a second 4501 in a row means
        // getToken hands out expired tokens, and retrying would loop.
        this.#renewed = 'fetch';
      } else {
        this.#stop(code, reason);
        return;
      }
    }
    if (wasConnected) this.#attempt = 0;
    this.#retry(code, reason);
  }

  #retry(code, reason) {
    this.#attempt += 1;
    const bound = backoffBound(this.#attempt, this.#opts.backoffBase, this.#opts.backoffCap);
    const random = this.#opts.random ?? Math.random;
    const delay = Math.floor(Math.min(1, Math.max(0, random())) * bound);
    this.#setState('reconnecting', { attempt: this.#attempt, delay, code, reason: reason ?? '' });
    this.#timers.retry = setTimeout(() => {
      this.#timers.retry = null;
      this.#open();
    }, delay);
  }

  #stop(code, reason) {
    this.#closed = true;
    const ws = this.#ws;
    this.#ws = null;
    this.#hello = null;
    for (const t of Object.values(this.#timers)) clearTimeout(t);
    clearInterval(this.#timers.heartbeat);
    if (this.#onlineListener) globalThis.removeEventListener('online', this.#onlineListener);
    if (ws && ws.readyState <= 1) {
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    const error = closedError(code, reason, 'closed');
    for (const entry of [...this.#pending.values()]) this.#settle(entry, error);
    this.#queue = [];
    for (const [room, rec] of this.#rooms) {
      clearTimeout(rec.retry);
      if (!rec.confirmed) {
        this.#rooms.delete(room);
        rec.waiter?.reject(error);
      }
    }
    this.#setState('disconnected', { code, reason: reason ?? '' });
  }

  #onHello(hello) {
    clearTimeout(this.#timers.connect);
    this.#hello = hello;
    this.#renewed = false;
    const reconnected = this.#everConnected;
    this.#everConnected = true;
    this.#attempt = 0;
    this.#lastRx = Date.now();
    this.#pingAt = 0;
    const beat = hello.heartbeat_ms > 0 ? hello.heartbeat_ms : 25_000;
    this.#timers.heartbeat = setInterval(() => this.#checkAlive(beat), Math.min(1000, beat / 4));
    this.#scheduleRefresh();
    // Rooms and watches first, then the queue: the gateway handles a
    // connection's requests in order, so a queued publish finds its room joined.
    for (const [room, rec] of this.#rooms) this.#sendJoin(room, rec);
    if (this.#status !== null) this.#send({ op: 'status', status: this.#status });
    const users = [...this.#watches.keys()];
    for (let i = 0; i < users.length; i += 100) this.#rewatch(users.slice(i, i + 100));
    const queued = this.#queue;
    this.#queue = [];
    for (const entry of queued) this.#transmit(entry);
    this.#setState('connected', this.#connectedInfo(reconnected));
  }

  #connectedInfo(reconnected) {
    const h = this.#hello ?? {};
    return { user: h.user, conn: h.conn, gateway: h.gateway, reconnected, transport: this.transport };
  }

  /** Browsers hide ping frames, so idle connections are probed with the `ping` op. */
  #checkAlive(beat) {
    const now = Date.now();
    if (this.#pingAt && now - this.#pingAt >= this.#opts.pongTimeout) {
      this.#drop(4001, 'no answer from the gateway');
    } else if (!this.#pingAt && now - this.#lastRx >= beat) {
      this.#pingAt = now;
      this.#send({ op: 'ping' });
    }
  }

  #scheduleRefresh() {
    clearTimeout(this.#timers.refresh);
    if (!this.#opts.getToken || !this.#opts.refreshAhead || !this.#hello) return;
    const exp = decodeToken(this.#token)?.exp;
    if (typeof exp !== 'number') return;
    const left = exp * 1000 - Date.now();
    // Refresh a fifth of the remaining time early, at most a minute.
    const delay = Math.max(500, left - Math.min(60_000, left / 5));
    this.#timers.refresh = setTimeout(
      () => {
        if (delay > MAX_TIMER) return this.#scheduleRefresh();
        this.refresh().catch((e) => {
          // The gateway closes with 4501 at expiry; the reconnect fetches a new token.
          if (!this.#closed) this.#emit('error', asError(e, 'token refresh failed'));
        });
      },
      Math.min(delay, MAX_TIMER),
    );
  }

  // --- frames ---------------------------------------------------------------

  #onFrame(text) {
    this.#lastRx = Date.now();
    this.#pingAt = 0;
    let f;
    try {
      f = JSON.parse(typeof text === 'string' ? text : String(text));
    } catch {
      return;
    }
    switch (f.type) {
      case 'hello':
        return this.#onHello(f);
      case 'reply':
        return this.#onReply(f);
      case 'message':
        return this.#onMessage(f);
      case 'joined':
        return this.#onMembers(f.room, 'onJoin', 1, { user: f.user, info: f.info, count: f.count });
      case 'left':
        return this.#onMembers(f.room, 'onLeave', -1, { user: f.user, count: f.count });
      case 'members_changed':
        for (const r of f.reads ?? []) this.#onRead(f.room, r.user, r.seq);
        return this.#onMembers(f.room, 'onMembersChanged', 0, {
          joined: f.joined ?? [],
          left: f.left ?? [],
          truncated: f.truncated ?? false,
          count: f.count,
        });
      case 'resync':
        return this.#resync(f.room, f.epoch, f.seq, 'resync');
      case 'signal':
        return this.#onSignal(f);
      case 'read':
        return this.#onRead(f.room, f.user, f.seq);
      case 'removed':
        return this.#removed(f.room, f.reason);
      case 'subscribed':
        return this.#subscribed(f);
      case 'direct':
        return this.#emit('direct', { from: f.from, data: f.data, ts: f.ts, queued: f.queued === true });
      case 'presence':
        return this.#onPresence(f);
      case 'error':
        return this.#emit('error', new SwitchboardError(f.error?.code ?? 'internal', f.error?.message ?? 'error'));
      default:
        return; // pong, and types from newer gateways
    }
  }

  #onReply(f) {
    const entry = this.#pending.get(f.id);
    if (!entry) return;
    if (f.ok) {
      const { type: _t, id: _i, ok: _o, ...fields } = f;
      this.#settle(entry, null, fields);
    } else {
      this.#settle(entry, new SwitchboardError(f.error?.code ?? 'internal', f.error?.message ?? 'request failed'));
    }
  }

  #onRead(room, user, seq) {
    const rec = this.#rooms.get(room);
    if (rec) this.#call(rec.handlers.onRead, { room, user, seq });
  }

  #onSignal(f) {
    const rec = this.#rooms.get(f.room);
    if (!rec) return;
    this.#call(rec.handlers.onSignal, { room: f.room, from: f.from, data: f.data });
    if (typeof f.data?.typing === 'boolean') this.#setTyping(f.room, rec, f.from, f.data.typing);
  }

  /** Marks `user` typing in a room (for TYPING_TTL_MS) or not; tells onTyping when the set changes. */
  #setTyping(room, rec, user, on) {
    const was = rec.typing.get(user);
    clearTimeout(was);
    if (on) {
      rec.typing.set(
        user,
        setTimeout(() => {
          if (this.#rooms.get(room) === rec) this.#setTyping(room, rec, user, false);
        }, TYPING_TTL_MS),
      );
    } else {
      rec.typing.delete(user);
    }
    if (on !== (was !== undefined)) this.#call(rec.handlers.onTyping, { room, users: [...rec.typing.keys()] });
  }

  #onMessage(m) {
    const rec = this.#rooms.get(m.room);
    if (!rec || rec.hold) return;
    if (rec.typing.has(m.from)) this.#setTyping(m.room, rec, m.from, false);
    // Replays after a resume start after `since`; anything at or before the
    // last delivered seq of the same epoch was already delivered.
    if (rec.epoch === m.epoch && rec.seq !== null && m.seq <= rec.seq) return;
    rec.epoch = m.epoch;
    rec.seq = m.seq;
    this.#call(rec.handlers.onMessage, {
      room: m.room,
      seq: m.seq,
      epoch: m.epoch,
      from: m.from,
      data: m.data,
      ts: m.ts,
    });
  }

  /** A membership event: sets the room's count to `fields.count` (exact, from the owner), or moves it by `delta`. */
  #onMembers(room, handler, delta, fields) {
    const rec = this.#rooms.get(room);
    if (!rec) return;
    if (typeof fields.count === 'number') rec.count = fields.count;
    else if (rec.count !== null) rec.count = Math.max(0, rec.count + delta);
    this.#call(rec.handlers[handler], { room, ...fields, count: rec.count });
  }

  #resync(room, epoch, seq, reason) {
    const rec = this.#rooms.get(room);
    if (!rec) return;
    rec.epoch = epoch;
    rec.seq = seq;
    this.#call(rec.handlers.onResync, { room, epoch, seq, reason });
  }

  #onPresence(p) {
    const w = this.#watches.get(p.user);
    if (!w) return;
    w.online = p.online;
    const event = { user: p.user, online: p.online, ts: p.ts };
    if (p.online) event.status = p.status ?? 'online';
    for (const cb of [...w.callbacks]) this.#call(cb, event);
  }

  // --- rooms and watches ----------------------------------------------------

  #sendJoin(room, rec) {
    clearTimeout(rec.retry);
    const frame = { op: 'join', room };
    const since = rec.epoch !== null && rec.seq !== null ? { epoch: rec.epoch, seq: rec.seq } : null;
    if (since) frame.since = since;
    const ws = this.#ws;
    this.#internal(frame, (err, r) => {
      if (this.#rooms.get(room) !== rec || ws !== this.#ws) return;
      if (err) return this.#joinFailed(room, rec, err);
      const held = rec.hold;
      rec.hold = false;
      if (typeof r.count === 'number') rec.count = r.count;
      if (since && !r.recovered) {
        if (r.epoch !== since.epoch && r.seq > 0) {
          // The room started over (its owner restarted or died): what we
          // missed of the old epoch is gone, but the new epoch's messages may
          // all still be in the history. Ask for them from its start; until
          // that reply, live events are dropped (the replay brings them).
          rec.epoch = r.epoch;
          rec.seq = 0;
          rec.hold = true;
          return this.#sendJoin(room, rec);
        }
        this.#resync(room, r.epoch, r.seq, 'history');
      } else if (since && held) {
        // Told before the replay of the new epoch's messages, which follow.
        this.#resync(room, r.epoch, 0, 'history');
      } else if (!since) {
        rec.epoch = r.epoch;
        rec.seq = Math.max(rec.seq ?? 0, r.seq);
      }
      if (!rec.confirmed) {
        rec.confirmed = true;
        rec.waiter?.resolve({ room, epoch: r.epoch, seq: r.seq, count: rec.count });
        rec.waiter = null;
      }
    });
  }

  /**
   * The backend joined this connection to a room. It is a room like a
   * joined one from now on (rejoined with `since` after a reconnect); the
   * application gives it handlers from the `subscribed` event.
   */
  #subscribed(f) {
    if (this.#rooms.has(f.room)) return;
    const rec = newRoom({});
    Object.assign(rec, { epoch: f.epoch, seq: f.seq, count: f.count, confirmed: true, server: true });
    this.#rooms.set(f.room, rec);
    this.#emit('subscribed', { room: f.room, epoch: f.epoch, seq: f.seq, count: f.count });
  }

  /** The gateway took the connection out of `room` (a refreshed token no longer allows it, or the backend unsubscribed it): never rejoin it. */
  #removed(room, reason) {
    const rec = this.#rooms.get(room);
    if (!rec) return;
    this.#rooms.delete(room);
    clearTimeout(rec.retry);
    this.#call(rec.handlers.onRemoved, { room, reason });
  }

  #joinFailed(room, rec, err) {
    if (['unavailable', 'rate_limited', 'timeout', 'internal'].includes(err.code)) {
      // Worth another try on this connection, a little later.
      rec.tries = (rec.tries ?? 0) + 1;
      const delay = Math.random() * backoffBound(rec.tries, this.#opts.backoffBase, this.#opts.backoffCap);
      rec.retry = setTimeout(() => {
        if (this.#hello && this.#rooms.get(room) === rec) this.#sendJoin(room, rec);
      }, delay);
      return;
    }
    this.#rooms.delete(room);
    if (rec.server && err.code === 'forbidden') {
      // The backend's subscription ended with the connection, and the
      // token alone does not allow the room.
      this.#call(rec.handlers.onRemoved, { room, reason: 'forbidden' });
    } else if (!rec.confirmed) {
      rec.waiter?.reject(err);
    } else {
      this.#call(rec.handlers.onError, err);
      this.#emit('error', err);
    }
  }

  #rewatch(users) {
    this.#internal({ op: 'watch', users }, (err, r) => {
      if (this.#closed) return;
      if (err) return this.#emit('error', err);
      for (const s of r.users ?? []) {
        const w = this.#watches.get(s.user);
        if (!w) continue;
        const before = w.online;
        w.online = s.online;
        // Report what changed while this client was away.
        if (before !== undefined && before !== s.online) {
          for (const cb of [...w.callbacks]) this.#call(cb, { user: s.user, online: s.online, ts: Date.now() });
        }
      }
    });
  }

  #forgetWatch(user, onPresence) {
    const w = this.#watches.get(user);
    if (!w) return false;
    if (onPresence) w.callbacks.delete(onPresence);
    else w.callbacks.clear();
    if (w.callbacks.size) return false;
    this.#watches.delete(user);
    return true;
  }

  // --- requests ---------------------------------------------------------------

  /** A request on behalf of the application: queued while disconnected, with a timeout from the call. */
  #request(op, fields, timeout = this.#opts.timeout) {
    if (this.#closed) return Promise.reject(new SwitchboardError('closed', 'client is stopped'));
    return new Promise((resolve, reject) => {
      const id = this.#nextId++;
      const entry = { id, frame: { op, id, ...fields }, resolve, reject, timer: null, sent: false };
      if (!this.#hello) {
        if (this.#queue.length >= this.#opts.maxQueue) {
          const code = this.#opts.maxQueue > 0 ? 'queue_full' : 'disconnected';
          reject(new SwitchboardError(code, `${op}: not connected and ${this.#queue.length} requests already queued`));
          return;
        }
        this.#queue.push(entry);
      }
      entry.timer = setTimeout(() => {
        // A queued request that times out is never sent.
        this.#queue = this.#queue.filter((e) => e !== entry);
        this.#settle(entry, new SwitchboardError('timeout', `${op} got no reply within ${timeout} ms`));
      }, timeout);
      this.#pending.set(id, entry);
      if (this.#hello) this.#transmit(entry);
    });
  }

  /** A request of the client's own (rejoin, rewatch): only on the current connection. */
  #internal(frame, done) {
    const id = this.#nextId++;
    const entry = {
      id,
      frame: { ...frame, id },
      internal: true,
      sent: true,
      resolve: (r) => done(null, r),
      reject: (e) => done(e),
      timer: null,
    };
    entry.timer = setTimeout(
      () => this.#settle(entry, new SwitchboardError('timeout', `${frame.op} got no reply`)),
      this.#opts.timeout,
    );
    this.#pending.set(id, entry);
    this.#send(entry.frame);
  }

  #transmit(entry) {
    entry.sent = true;
    this.#send(entry.frame);
  }

  #send(frame) {
    try {
      this.#ws?.send(JSON.stringify(frame));
    } catch {
      // The socket is closing; its close event handles the pending requests.
    }
  }

  #settle(entry, error, value) {
    if (!this.#pending.delete(entry.id)) return;
    clearTimeout(entry.timer);
    if (error) entry.reject(error);
    else entry.resolve(value);
  }

  // --- events -----------------------------------------------------------------

  #setState(state, detail) {
    const previous = this.#state;
    this.#state = state;
    if (previous !== state) this.#emit('state', { state, previous });
    if (STATES.includes(state)) this.#emit(state, detail);
  }

  #emit(event, detail) {
    for (const fn of [...(this.#listeners.get(event) ?? [])]) this.#call(fn, detail);
  }

  /** Calls application code; its exceptions surface without breaking the client. */
  #call(fn, arg) {
    if (typeof fn !== 'function') return;
    try {
      fn(arg);
    } catch (e) {
      queueMicrotask(() => {
        throw e;
      });
    }
  }
}

/** 128 random bits as 32 hex digits (an idempotency key). */
/** A `presence` or `watch` reply's states, each marked when the reply was degraded. */
function states(reply) {
  const users = reply.users ?? [];
  return reply.degraded ? users.map((u) => ({ ...u, degraded: true })) : users;
}

function randomKey() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID().replaceAll('-', '');
  let key = '';
  for (let i = 0; i < 4; i++) key += Math.floor(Math.random() * 2 ** 32).toString(16).padStart(8, '0');
  return key;
}

function closedError(code, reason, kind = 'closed') {
  const why = reason ? `${code} ${reason}` : String(code);
  return new SwitchboardError(kind, `connection closed (${why})`, code);
}

function asError(e, message) {
  if (e instanceof SwitchboardError) return e;
  const err = new SwitchboardError('internal', `${message}: ${e?.message ?? e}`);
  err.cause = e;
  return err;
}

/** True when the token's `exp` is (nearly) past: fetch a new one before connecting. */
/** A room's state in the client, before its first join reply. */
function newRoom(handlers) {
  return {
    handlers,
    epoch: null,
    seq: null,
    count: null,
    confirmed: false,
    waiter: null,
    retry: null,
    hold: false,
    server: false, // joined by the backend (`subscribed`), not by join()
    typing: new Map(), // user -> timer that ends their typing
    typingSent: 0, // when this client last said it was typing here
  };
}

function expiresSoon(token) {
  const exp = decodeToken(token)?.exp;
  return typeof exp === 'number' && exp * 1000 < Date.now() + 5000;
}

/** How many ops one POST carries at most (the gateway's bound). */
const SSE_POST_OPS = 64;

/**
 * A WebSocket look-alike over server-sent events, for the client above: the
 * events of `GET /sse?token=…` arrive as messages; each frame sent is POSTed
 * to `/sse/<conn>` with the `post_secret` of the stream's hello, in order,
 * one POST at a time carrying whatever queued meanwhile. A lost stream is a
 * close (1006): the client reconnects and rejoins as after any drop, rather
 * than letting EventSource reconnect by itself.
 */
class SseSocket {
  readyState = 0;
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  #es;
  #base;
  #post = null; // `/sse/<conn>` URL and secret, from the hello
  #out = [];
  #posting = false;

  constructor(url, token, EventSourceImpl) {
    const u = new URL(url);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    u.pathname = u.pathname.replace(/\/ws$/, '/sse');
    if (token) u.searchParams.set('token', token);
    this.#base = u.origin + u.pathname;
    this.#es = new EventSourceImpl(u.toString());
    this.#es.onopen = () => {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this.onopen?.();
    };
    this.#es.onmessage = (ev) => {
      if (this.readyState === 3) return;
      if (!this.#post && ev.data.includes('"hello"')) {
        const hello = JSON.parse(ev.data);
        if (hello.type === 'hello') this.#post = { url: `${this.#base}/${encodeURIComponent(hello.conn)}`, secret: hello.post_secret };
      }
      this.onmessage?.({ data: ev.data });
      this.#flush();
    };
    this.#es.addEventListener('close', (ev) => {
      let close = {};
      try {
        close = JSON.parse(ev.data);
      } catch {
        // a malformed close still closes
      }
      this.#end(close.code ?? 1006, close.reason ?? '');
    });
    this.#es.onerror = () => this.#end(1006, 'event stream lost');
  }

  send(text) {
    if (this.readyState !== 1) throw new Error('not open');
    this.#out.push(text);
    this.#flush();
  }

  close() {
    this.#end(1000, 'closed by the client');
  }

  async #flush() {
    if (this.#posting || !this.#post || this.#out.length === 0) return;
    this.#posting = true;
    try {
      while (this.#out.length > 0 && this.readyState === 1) {
        const batch = this.#out.splice(0, SSE_POST_OPS);
        const r = await fetch(this.#post.url, {
          method: 'POST',
          headers: { authorization: `Bearer ${this.#post.secret}`, 'content-type': 'application/json' },
          body: `[${batch.join(',')}]`,
        });
        if (r.status === 429) {
          // The connection's queue is full: wait, then send the same again.
          this.#out.unshift(...batch);
          await new Promise((resolve) => setTimeout(resolve, 1000));
        } else if (!r.ok) {
          return this.#end(1006, `POST answered ${r.status}`);
        }
      }
    } catch {
      this.#end(1006, 'POST failed');
    } finally {
      this.#posting = false;
    }
  }

  #end(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.#es.close();
    this.onclose?.({ code, reason });
  }
}

function hasTokenParam(url) {
  return /[?&]token=/.test(String(url));
}

function resolveUrl(url) {
  const base = globalThis.location?.href;
  const u = base ? new URL(url, base) : new URL(url);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  return u.toString();
}
