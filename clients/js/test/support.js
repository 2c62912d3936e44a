// Test helpers: real gateway processes, tokens, the admin gRPC API, waiting.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import WebSocket from 'ws';

import { connect as sbConnect } from '../switchboard.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const ARTIFACTS = path.join(ROOT, 'target/artifacts');

/** A project binary: `$SWITCHBOARD_<NAME>` or target/debug/<name>. */
export function binary(name) {
  const p = process.env[`SWITCHBOARD_${name.toUpperCase()}`] ?? path.join(ROOT, 'target/debug', name);
  if (!existsSync(p)) throw new Error(`${p} not built: run \`cargo build -p gateway -p router -p presence\``);
  return p;
}

let logs = 0;

/** A child process whose stdout lines are collected; its stderr goes to a log file. */
export class Proc {
  constructor(name, program, args, env = {}) {
    this.name = name;
    this.log = path.join(os.tmpdir(), `switchboard-js-${name}-${process.pid}-${logs++}.log`);
    const fd = openSync(this.log, 'w');
    this.child = spawn(program, args, { stdio: ['ignore', 'pipe', fd], env: { ...process.env, RUST_LOG: 'info', ...env } });
    closeSync(fd);
    this.lines = [];
    this.waiters = [];
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
    let buf = '';
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.lines.push(line);
        for (const w of [...this.waiters]) w();
      }
    });
    this.child.on('exit', () => {
      for (const w of [...this.waiters]) w();
    });
  }

  /** Waits for a stdout line starting with `prefix` (after trimming). */
  waitLine(prefix, timeout = 30_000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const line = this.lines.find((l) => l.trimStart().startsWith(prefix));
        if (line !== undefined) return done(null, line);
        if (this.child.exitCode !== null || this.child.signalCode !== null) {
          return done(new Error(`${this.name} exited before printing ${prefix}:\n${this.logText()}`));
        }
      };
      const timer = setTimeout(() => done(new Error(`${this.name} never printed ${prefix}:\n${this.logText()}`)), timeout);
      const done = (err, line) => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
        err ? reject(err) : resolve(line);
      };
      this.waiters.push(check);
      check();
    });
  }

  /** The second word of the first stdout line starting with `label`. */
  printed(label) {
    return this.lines.find((l) => l.trimStart().startsWith(label))?.trim().split(/\s+/)[1];
  }

  signal(sig) {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(sig);
  }

  /** Stops the process (SIGKILL by default) and waits for it. */
  async stop(sig = 'SIGKILL') {
    this.signal(sig);
    return this.exited;
  }

  logText() {
    try {
      return readFileSync(this.log, 'utf8').split('\n').slice(-40).join('\n');
    } catch {
      return '';
    }
  }
}

/**
 * Starts `gateway --standalone` on loopback and waits for its address lines.
 * `port` pins the WebSocket port (to restart on the same one); `secret`
 * configures `--jwt-secret` (null: the gateway generates one).
 */
export async function startGateway({ port = 0, secret = null, args = [] } = {}) {
  const all = [
    '--standalone',
    '--listen',
    `127.0.0.1:${port}`,
    '--admin-listen',
    '127.0.0.1:0',
    '--grpc-listen',
    '127.0.0.1:0',
    '--api-listen',
    '127.0.0.1:0',
    '--drain-window',
    '200ms',
    ...(secret ? ['--jwt-secret', secret] : []),
    ...args,
  ];
  return Gateway.start('gateway', all, secret);
}

export class Gateway {
  static async start(name, args, secret) {
    const proc = new Proc(name, binary('gateway'), args);
    await proc.waitLine('admin');
    return new Gateway(proc, secret);
  }

  constructor(proc, secret) {
    this.proc = proc;
    this.secret = secret;
    this.ws = proc.printed('websocket');
    this.http = this.ws.replace(/^ws:/, 'http:').replace(/\/ws$/, '');
    this.port = Number(new URL(this.http).port);
    this.demo = proc.printed('demo');
    this.grpc = proc.printed('grpc');
    this.api = proc.printed('api');
    this.admin = proc.printed('admin').replace(/\/metrics$/, '');
  }

  /** The demo token from the printed demo URL. */
  get demoToken() {
    return new URL(this.demo).searchParams.get('token');
  }

  token(sub, { ttl = 3600, rooms } = {}) {
    return mintToken(this.secret, { sub, exp: Math.floor(Date.now() / 1000) + ttl, rooms });
  }

  stop(sig) {
    return this.proc.stop(sig);
  }
}

/** An HS256 JWT. */
export function mintToken(secret, claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/** A client on Node (with `ws`), closed by `cleanup`. */
export function client(url, options, cleanup) {
  const c = sbConnect(url, { WebSocket, ...options });
  cleanup?.push(() => c.close());
  return c;
}

/** A protobuf varint. */
function varint(n) {
  const out = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** A length-delimited protobuf field (string or bytes). */
function lenField(field, value) {
  const b = Buffer.from(value);
  return Buffer.concat([varint((field << 3) | 2), varint(b.length), b]);
}

/** Reads field 1 of a protobuf message when it is a varint (absent: 0). */
function firstVarint(body) {
  let n = 0;
  if (body[0] === 0x08) {
    let shift = 0;
    for (let i = 1; i < body.length; i++) {
      n += (body[i] & 0x7f) * 2 ** shift;
      shift += 7;
      if (!(body[i] & 0x80)) break;
    }
  }
  return n;
}

/**
 * One unary gRPC call over HTTP/2 with a hand-encoded protobuf message, as
 * a backend makes it; resolves with the reply message's bytes.
 */
function grpcCall(grpc, path, msg) {
  const frame = Buffer.alloc(5 + msg.length);
  frame.writeUInt32BE(msg.length, 1);
  msg.copy(frame, 5);
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${grpc}`);
    session.on('error', reject);
    const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
    const chunks = [];
    let status = null;
    let message = '';
    req.on('trailers', (t) => ((status = t['grpc-status']), (message = t['grpc-message'] ?? '')));
    req.on('response', (h) => ((status = h['grpc-status'] ?? status), (message = h['grpc-message'] ?? message)));
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      session.close();
      if (String(status) !== '0') return reject(new Error(`${path}: grpc-status ${status} ${decodeURIComponent(message)}`));
      resolve(Buffer.concat(chunks).subarray(5));
    });
    req.on('error', reject);
    req.end(frame);
  });
}

/** GatewayAdmin.Disconnect: closes every connection of `user` with `code`; resolves with the number closed. */
export async function adminDisconnect(grpc, user, code) {
  const msg = Buffer.concat([lenField(1, user), varint(3 << 3), varint(code)]);
  // DisconnectResult { uint64 closed = 1; }
  return firstVarint(await grpcCall(grpc, '/switchboard.v1.GatewayAdmin/Disconnect', msg));
}

/** Rooms.Publish from the server: `data` (any JSON) into `room`; resolves with its seq. */
export async function serverPublish(grpc, room, data) {
  const msg = Buffer.concat([lenField(1, room), lenField(2, JSON.stringify(data))]);
  // PublishResult { uint64 seq = 1; }
  return firstVarint(await grpcCall(grpc, '/switchboard.v1.Rooms/Publish', msg));
}

/** A server API call over HTTP/JSON: the parsed answer, or throws with its error. */
export async function apiCall(gw, method, body) {
  const res = await fetch(`${gw.api}${method}`, { method: 'POST', body: JSON.stringify(body) });
  const answer = await res.json();
  if (!res.ok) throw new Error(`${method}: ${res.status} ${JSON.stringify(answer)}`);
  return answer;
}

/** Polls `fn` until it returns a truthy value; rejects with `what` after `timeout` ms. */
export async function until(fn, what, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the next `event` of `client` that passes `pred`. */
export function next(client, event, pred = () => true, timeout = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => (off(), reject(new Error(`no ${event} event within ${timeout} ms`))), timeout);
    const off = client.on(event, (d) => {
      if (!pred(d)) return;
      clearTimeout(timer);
      off();
      resolve(d);
    });
  });
}

export function artifactsDir() {
  mkdirSync(ARTIFACTS, { recursive: true });
  return ARTIFACTS;
}

/** nats-server: `$NATS_SERVER`, on PATH, or where `make deps` puts it; null when absent. */
export function natsServer() {
  if (process.env.NATS_SERVER) return process.env.NATS_SERVER;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const p = path.join(dir, 'nats-server');
    if (dir && existsSync(p)) return p;
  }
  const local = path.join(ROOT, 'target/tools/venv/bin/nats-server');
  return existsSync(local) ? local : null;
}

/** Why the cluster cannot be started here, or null when it can. */
function clusterMissing() {
  if (!natsServer()) return 'nats-server not found (make deps-py installs it)';
  for (const name of ['gateway', 'router', 'presence']) {
    try {
      binary(name);
    } catch (e) {
      return e.message;
    }
  }
  return null;
}

/** Waits until `url` answers 200. */
export async function waitHttp(url, what, timeout = 20_000) {
  await until(
    () =>
      fetch(url)
        .then((r) => r.ok)
        .catch(() => false),
    what,
    timeout,
  );
}

/** A cluster on loopback: nats-server, presence, one router, gateways on fixed ports (so they can restart in place). */
export class Cluster {
  static async start({ gateways = 2, secret }) {
    // Never skipped: a missing nats-server or binary fails the run loudly.
    const missing = clusterMissing();
    if (missing) throw new Error(`cannot start the cluster: ${missing} (run make deps)`);
    const c = new Cluster();
    c.secret = secret;
    // Ports of their own choosing: a port found free may be taken before use.
    c.nats = new Proc('nats', natsServer(), ['-a', '127.0.0.1', '-p', '-1']);
    c.natsPort = await until(() => {
      const m = c.nats.logText().match(/client connections on [\d.]+:(\d+)/);
      return m && Number(m[1]);
    }, 'nats-server to say its port');
    c.natsUrl = `nats://127.0.0.1:${c.natsPort}`;
    await until(
      () =>
        new Promise((resolve) => {
          const s = net.connect(c.natsPort, '127.0.0.1', () => (s.destroy(), resolve(true)));
          s.on('error', () => resolve(false));
        }),
      'nats-server',
    );
    c.presence = new Proc('presence', binary('presence'), [
      '--nats-url',
      c.natsUrl,
      '--id',
      'presence-1',
      '--listen',
      '127.0.0.1:0',
      '--admin-listen',
      '127.0.0.1:0',
    ]);
    await c.presence.waitLine('admin');
    c.presencePort = Number(c.presence.printed('grpc').split(':').pop());
    c.router = new Proc('router', binary('router'), [
      '--nats-url',
      c.natsUrl,
      '--id',
      'r-1',
      '--admin-listen',
      '127.0.0.1:0',
      '--grpc-listen',
      '127.0.0.1:0',
      '--api-listen',
      '127.0.0.1:0',
    ]);
    await c.router.waitLine('admin');
    c.ports = [];
    c.gateways = [];
    for (let i = 0; i < gateways; i++) {
      c.ports.push(0);
      c.gateways.push(await c.startGateway(i));
      c.ports[i] = c.gateways[i].port; // a restart takes the same port
    }
    return c;
  }

  /** Starts gateway `i` on its port and waits until it is ready. */
  async startGateway(i) {
    const gw = await Gateway.start(
      `gw-${i + 1}`,
      [
        '--nats-url',
        this.natsUrl,
        '--presence-url',
        `http://127.0.0.1:${this.presencePort}`,
        '--id',
        `gw-${i + 1}`,
        '--jwt-secret',
        this.secret,
        '--listen',
        `127.0.0.1:${this.ports[i]}`,
        '--admin-listen',
        '127.0.0.1:0',
        '--grpc-listen',
        '127.0.0.1:0',
        '--drain-window',
        '200ms',
      ],
      this.secret,
    );
    await waitHttp(`${gw.admin}/readyz`, `gw-${i + 1} ready`);
    this.gateways[i] = gw;
    return gw;
  }

  async stop() {
    for (const gw of this.gateways) await gw.stop();
    await this.router?.stop();
    await this.presence?.stop();
    await this.nats?.stop();
  }
}

/** Fails when the gateway serves other files than clients/js holds: its binary embeds them at build time. */
export async function assertServesCurrentFiles(gw) {
  const files = { '/': 'demo/index.html', '/demo.js': 'demo/demo.js', '/demo.css': 'demo/demo.css', '/switchboard.js': 'switchboard.js' };
  for (const [route, file] of Object.entries(files)) {
    const served = await (await fetch(gw.http + route)).text();
    if (served !== readFileSync(path.join(ROOT, 'clients/js', file), 'utf8')) {
      throw new Error(`${gw.proc.name} serves an older ${file}: the gateway embeds clients/js when built; run \`cargo build -p gateway\``);
    }
  }
}
