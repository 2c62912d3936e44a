// The demo page in headless Chromium against real gateways: two people chat,
// the gateway restarts under them, and a page on a cluster gateway resumes
// after its gateway restarts. A screenshot goes to target/artifacts/.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

import { artifactsDir, assertServesCurrentFiles, Cluster, serverPublish, startGateway } from './support.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
// Without these, Chromium waits on the (closed) network at start-up.
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const SECRET = `js-browser-secret-of-32-bytes-${process.pid}`;
const T = { timeout: 60_000 };
const WAIT = { timeout: 20_000 };

let browser;
let profile;
let cleanup = [];
let pageErrors = [];

before(async () => {
  // launch() adds a fresh --user-data-dir of its own; this one keeps
  // Chromium's other scratch files out of the shared temp directory.
  profile = mkdtempSync(path.join(os.tmpdir(), 'switchboard-chromium-'));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    env: { ...process.env, TMPDIR: profile, HOME: profile },
  });
});

after(async () => {
  await browser?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

afterEach(async () => {
  const fns = cleanup.reverse();
  cleanup = [];
  for (const fn of fns) await fn();
  const errors = pageErrors;
  pageErrors = [];
  assert.deepEqual(errors, [], 'no uncaught errors in the pages');
});

/** A page in its own browser context (its own storage), as a separate person would have. */
async function open(url) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  cleanup.push(() => context.close());
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(url);
  return page;
}

/** A page in which WebSockets do not exist (as behind a proxy that breaks
 * them), so the client falls back to server-sent events. */
async function openWithoutWebSocket(url, { broken = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  cleanup.push(() => context.close());
  if (broken) {
    // WebSockets exist but every one dies before it opens, as behind a
    // proxy that drops the upgrade.
    await context.addInitScript(() => {
      window.WebSocket = class {
        constructor() {
          this.readyState = 0;
          setTimeout(() => {
            this.readyState = 3;
            this.onclose?.({ code: 1006, reason: '' });
          }, 10);
        }
        send() {}
        close() {}
      };
    });
  } else {
    await context.addInitScript(() => {
      delete window.WebSocket;
    });
  }
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(url);
  return page;
}

/** Picks a name on the demo page and waits until connected. */
async function pickName(page, name) {
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Start chatting' }).click();
  await connected(page, name);
}

async function connected(page, name) {
  const status = page.getByRole('status');
  await status.filter({ hasText: `Connected as ${name}` }).waitFor(WAIT);
}

async function say(page, text) {
  const box = page.getByLabel('Message', { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

/** The texts of the messages in `room`'s log, in order. */
function messages(page, room) {
  return page.locator(`.log[data-room="${room}"] li.message .text`).allTextContents();
}

/** Waits until `room`'s log on `page` holds exactly `expected` (in order). */
async function expectMessages(page, room, expected) {
  const deadline = Date.now() + WAIT.timeout;
  let got;
  while (Date.now() < deadline) {
    got = await messages(page, room);
    if (got.length >= expected.length) break;
    await page.waitForTimeout(50);
  }
  assert.deepEqual(got, expected);
}

describe('the demo page', () => {
  it('chats over server-sent events when the page has no WebSocket', T, async () => {
    const gw = await startGateway({ args: [] });
    cleanup.push(() => gw.stop());
    const sse = await openWithoutWebSocket(gw.demo);
    assert.equal(await sse.evaluate(() => typeof window.WebSocket), 'undefined');
    await pickName(sse, 'sam');
    assert.equal(await sse.locator('#status').getAttribute('data-transport'), 'sse');
    await sse.locator('#status', { hasText: 'server-sent events' }).waitFor(WAIT);
    const ws = await open(gw.demo);
    await pickName(ws, 'wes');
    assert.equal(await ws.locator('#status').getAttribute('data-transport'), 'websocket');

    await say(sse, 'over sse');
    await expectMessages(ws, 'lobby', ['over sse']);
    await say(ws, 'over ws');
    await expectMessages(sse, 'lobby', ['over sse', 'over ws']);
    await sse.locator('#members li[data-user="wes"]').waitFor(WAIT);
    await sse.locator('#people li.online[data-user="wes"]').waitFor(WAIT);
    await ws.getByLabel('Message', { exact: true }).pressSequentially('hm', { delay: 20 });
    await sse.locator('#typing', { hasText: 'wes is typing…' }).waitFor(WAIT);
    await ws.getByLabel('To', { exact: true }).fill('sam');
    await ws.getByLabel('Direct message', { exact: true }).fill('psst');
    await ws.getByRole('button', { name: 'Send privately' }).click();
    await sse.locator('#directs li', { hasText: 'wes: psst' }).waitFor(WAIT);
    await sse.screenshot({ path: path.join(artifactsDir(), 'demo-sse.png') });

    // A WebSocket that closes before its hello: the client falls back too.
    const blocked = await openWithoutWebSocket(gw.demo, { broken: true });
    await pickName(blocked, 'bea');
    assert.equal(await blocked.locator('#status').getAttribute('data-transport'), 'sse');
    await say(blocked, 'through the proxy');
    await expectMessages(ws, 'lobby', ['over sse', 'over ws', 'through the proxy']);
  });

  it('two pages chat through the demo page served by a standalone gateway', T, async () => {
    const gw = await startGateway({ args: ['--offline-grace', '500ms'] }); // a generated secret: the page mints tokens
    cleanup.push(() => gw.stop());
    await assertServesCurrentFiles(gw);
    assert.match(gw.demo, /^http:\/\/127\.0\.0\.1:\d+\/\?token=/);

    const alice = await open(gw.demo);
    assert.equal(await alice.title(), 'Switchboard chat');
    assert.ok(!alice.url().includes('token='), 'the token leaves the address bar');
    await alice.screenshot({ path: path.join(artifactsDir(), 'demo-login.png') });
    await pickName(alice, 'alice');
    const bob = await open(gw.demo);
    await pickName(bob, 'bob');

    await say(alice, 'hello bob');
    await expectMessages(bob, 'lobby', ['hello bob']);
    await say(bob, 'hi alice');
    await expectMessages(alice, 'lobby', ['hello bob', 'hi alice']);
    await expectMessages(bob, 'lobby', ['hello bob', 'hi alice']);

    // Members of the room and who is online.
    await alice.locator('#members li[data-user="bob"]').waitFor(WAIT);
    await bob.locator('#members li[data-user="alice"]').waitFor(WAIT);
    await alice.locator('#people li.online[data-user="bob"]').waitFor(WAIT);
    await bob.locator('#people li.online[data-user="alice"]').waitFor(WAIT);

    // Typing shows on the other page, and goes 3 s after the last keystroke.
    await bob.getByLabel('Message', { exact: true }).pressSequentially('hm', { delay: 20 });
    await alice.locator('#typing', { hasText: 'bob is typing…' }).waitFor(WAIT);
    const typed = Date.now();
    await alice.locator('#typing:empty').waitFor({ timeout: 6000 });
    assert.ok(Date.now() - typed >= 2000, 'typing lasts about 3 s');
    await bob.getByLabel('Message', { exact: true }).fill('');

    // A status picked on one page shows next to the name on the other.
    await alice.getByLabel('My status').selectOption('away');
    await bob.locator('#people li[data-user="alice"][data-status="away"]').waitFor(WAIT);
    await alice.getByLabel('My status').selectOption('online');
    await bob.locator('#people li[data-user="alice"][data-status="online"]').waitFor(WAIT);

    // Direct messages: delivered now, or when the user comes online.
    await bob.getByLabel('To', { exact: true }).fill('alice');
    await bob.getByLabel('Direct message', { exact: true }).fill('psst');
    await bob.getByRole('button', { name: 'Send privately' }).click();
    await bob.locator('#dm-result', { hasText: 'Delivered to alice.' }).waitFor(WAIT);
    await alice.locator('#directs li', { hasText: 'bob: psst' }).waitFor(WAIT);
    await bob.getByLabel('To', { exact: true }).fill('carol');
    await bob.getByLabel('Direct message', { exact: true }).fill('see you');
    await bob.getByRole('button', { name: 'Send privately' }).click();
    await bob.locator('#dm-result', { hasText: 'it will be delivered when carol comes online' }).waitFor(WAIT);
    const carol = await open(gw.demo);
    await pickName(carol, 'carol');
    await carol.locator('#directs li.queued', { hasText: 'bob: see you' }).waitFor(WAIT);
    await carol.context().close();

    // A second room, joined by both.
    for (const page of [alice, bob]) {
      await page.getByLabel('Join a room').fill('random');
      await page.getByRole('button', { name: 'Join', exact: true }).click();
      await page.getByRole('heading', { name: '# random' }).waitFor(WAIT);
    }
    await say(bob, 'over here');
    await expectMessages(alice, 'random', ['over here']);
    // Alice looks at #random: what is said in the lobby counts as unread there.
    await bob.getByRole('button', { name: /# lobby/ }).click();
    await say(bob, 'psst, lobby');
    await alice.getByRole('button', { name: '# lobby 1 new' }).waitFor(WAIT);
    await alice.getByRole('button', { name: /# lobby/ }).click();
    await say(alice, 'back in the lobby');
    await expectMessages(bob, 'lobby', ['hello bob', 'hi alice', 'psst, lobby', 'back in the lobby']);
    await bob.getByRole('button', { name: /# lobby/ }).click();
    await bob.locator('#members li[data-user="alice"]').waitFor(WAIT);

    // The read-only announcements: posted by the server API, refused from a page.
    await serverPublish(gw.grpc, 'news:announcements', { text: 'maintenance at noon' });
    for (const page of [alice, bob]) {
      await page.locator('#news li', { hasText: 'maintenance at noon' }).waitFor(WAIT);
    }
    const refused = await alice.evaluate(() =>
      import('/switchboard.js').then(async ({ connect }) => {
        const token = sessionStorage.getItem('switchboard.token');
        const c = connect('/ws', { token: token });
        try {
          await c.ready();
          await c.join('news:announcements');
          await c.publish('news:announcements', 'spam');
          return 'accepted';
        } catch (e) {
          return `${e.code}: ${e.message}`;
        } finally {
          await c.close();
        }
      }),
    );
    assert.match(refused, /^forbidden: namespace "news:" has publish = "none"/);
    assert.equal(await alice.locator('#member-count').textContent(), '(2)');

    const shot = path.join(artifactsDir(), 'demo-page.png');
    await bob.screenshot({ path: shot, fullPage: true });

    // Bob leaves: alice sees him go, then offline.
    await bob.context().close();
    await alice.locator('.log[data-room="lobby"] li.notice', { hasText: 'bob left' }).waitFor(WAIT);
    await alice.locator('#people li[data-user="bob"]:not(.online)').waitFor(WAIT);
  });

  it('refuses to mint without the demo token', T, async () => {
    const gw = await startGateway();
    cleanup.push(() => gw.stop());
    const page = await open(gw.demo.replace(/token=[^&]+/, 'token=not-the-demo-token'));
    await page.getByLabel('Your name').fill('eve');
    await page.getByRole('button', { name: 'Start chatting' }).click();
    await page.getByRole('alert').filter({ hasText: 'no longer accepted' }).waitFor(WAIT);
  });

  it('both pages reconnect after the gateway restarts and see every message once', T, async () => {
    let gw = await startGateway({ secret: SECRET });
    // Restarts reuse the port it got.
    const port = gw.port;
    cleanup.push(() => gw.stop());
    // With a configured secret there is no minting: the page uses the user's token as is.
    const alice = await open(`${gw.http}/?token=${gw.token('alice')}`);
    const bob = await open(`${gw.http}/?token=${gw.token('bob')}`);
    await connected(alice, 'alice');
    await connected(bob, 'bob');
    await say(alice, 'one');
    await expectMessages(bob, 'lobby', ['one']);

    await gw.stop('SIGTERM');
    for (const page of [alice, bob]) {
      await page.locator('#status:not([data-state="connected"])').waitFor(WAIT);
    }
    // Typed while the gateway is down: queued by the client.
    await say(alice, 'two');
    await say(bob, 'three');
    await alice.locator('#outbox', { hasText: 'waiting for the connection' }).waitFor(WAIT);

    gw = await startGateway({ port, secret: SECRET });
    await connected(alice, 'alice');
    await connected(bob, 'bob');
    await say(bob, 'four');
    const expected = ['one', ...(await settle(alice, bob)), 'four'];
    await expectMessages(alice, 'lobby', expected);
    await expectMessages(bob, 'lobby', expected);
    assert.deepEqual(expected.slice(1, 3).sort(), ['three', 'two']);
  });
});

/** The order the gateway gave the two queued messages, as alice saw it. */
async function settle(alice, bob) {
  for (const page of [alice, bob]) {
    await page.locator('.log[data-room="lobby"] li.message .text', { hasText: 'four' }).waitFor(WAIT);
  }
  return (await messages(alice, 'lobby')).filter((t) => t === 'two' || t === 'three');
}

describe('the demo page on a cluster', () => {
  let cluster;
  before(async () => {
    cluster = await Cluster.start({ gateways: 2, secret: SECRET });
  });
  after(() => cluster?.stop());

  it('pages on two gateways chat; one gateway restarts and its page resumes without a gap', T, async () => {
    const [gw1, gw2] = cluster.gateways;
    const alice = await open(`${gw1.http}/?token=${gw1.token('alice')}`);
    const bob = await open(`${gw2.http}/?token=${gw2.token('bob')}`);
    await connected(alice, 'alice');
    await connected(bob, 'bob');
    await bob.locator('#members li[data-user="alice"]').waitFor(WAIT);
    await say(alice, 'from gateway 1');
    await expectMessages(bob, 'lobby', ['from gateway 1']);
    await say(bob, 'from gateway 2');
    await expectMessages(alice, 'lobby', ['from gateway 1', 'from gateway 2']);
    await bob.locator('#people li.online[data-user="alice"]').waitFor(WAIT);

    // Alice's gateway restarts; bob keeps talking; the room's owner keeps its history.
    await cluster.gateways[0].stop('SIGTERM');
    await alice.locator('#status:not([data-state="connected"])').waitFor(WAIT);
    for (const text of ['while you were away 1', 'while you were away 2']) await say(bob, text);
    await expectMessages(bob, 'lobby', ['from gateway 1', 'from gateway 2', 'while you were away 1', 'while you were away 2']);
    await cluster.startGateway(0);
    await connected(alice, 'alice');
    await say(alice, 'back');
    const all = ['from gateway 1', 'from gateway 2', 'while you were away 1', 'while you were away 2', 'back'];
    await expectMessages(alice, 'lobby', all);
    await expectMessages(bob, 'lobby', all);
    assert.equal(await alice.locator('li.notice', { hasText: 'may be missing' }).count(), 0, 'resumed, not resynced');
  });
});
