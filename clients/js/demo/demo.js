// The demo chat served by `gateway --standalone` at `/`.
//
// The page's URL carries a token (`/?token=…`). If it is the gateway's demo
// token (user `demo`), the page asks for a name and has the gateway mint a
// short-lived token for it at `/demo/token`; any other token is used as is,
// as the user it names. Everything else is the client library: it reconnects,
// resumes rooms and queues messages by itself, so this file only draws.

import { connect, decodeToken } from '/switchboard.js';

const $ = (id) => document.getElementById(id);
const LOBBY = 'lobby';
// Read-only (namespace `news:` has publish = "none"): the server API posts here.
const NEWS = 'news:announcements';
const ID = /^[A-Za-z0-9_:@-]{1,128}$/;

const ui = {
  status: $('status'),
  login: $('login'),
  loginForm: $('login-form'),
  name: $('name'),
  tokenField: $('token-field'),
  token: $('token'),
  loginError: $('login-error'),
  chat: $('chat'),
  rooms: $('rooms'),
  joinForm: $('join-form'),
  room: $('room'),
  roomTitle: $('room-title'),
  logs: $('logs'),
  outbox: $('outbox'),
  sendForm: $('send-form'),
  text: $('text'),
  members: $('members'),
  memberCount: $('member-count'),
  news: $('news'),
  newsHint: $('news-hint'),
  people: $('people'),
  typing: $('typing'),
  myStatusField: $('my-status-field'),
  myStatus: $('my-status'),
  directs: $('directs'),
  dmForm: $('dm-form'),
  dmTo: $('dm-to'),
  dmText: $('dm-text'),
  dmResult: $('dm-result'),
};

let client = null;
let me = null;
let current = null;
const rooms = new Map(); // name -> { log, list, tab, unread, lastSeq, typing: [users], members: Map(user -> info) }
const people = new Map(); // user -> { online (true/false/undefined), status }
let sending = 0;

// --- the token in the URL -----------------------------------------------

const pageToken = takeUrlToken();
const claims = pageToken ? decodeToken(pageToken) : null;

/** Reads `?token=`, keeps it for this tab only, and takes it out of the address bar. */
function takeUrlToken() {
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  if (token) {
    sessionStorage.setItem('switchboard.token', token);
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : '') + location.hash);
    return token;
  }
  return sessionStorage.getItem('switchboard.token');
}

/** A token for `user` from the gateway's demo endpoint; null when it has none (a configured key). */
async function mint(user) {
  const r = await fetch(`/demo/token?user=${encodeURIComponent(user)}`, {
    headers: { Authorization: `Bearer ${pageToken}` },
    cache: 'no-store',
  });
  if (r.status === 404) return null;
  if (r.status === 401) throw new Error('The link’s token is no longer accepted (was the gateway restarted?). Open the link it printed again.');
  if (!r.ok) throw new Error(`The gateway refused the name (${r.status}): ${(await r.text()).trim()}`);
  return (await r.json()).token;
}

// A suggestion, selected, so Enter alone starts chatting.
ui.name.value = `guest-${Math.floor(1000 + Math.random() * 9000)}`;
ui.name.select();

if (!pageToken) {
  // No token at all: ask for one (a gateway with a configured key).
  ui.tokenField.hidden = false;
  ui.token.required = true;
} else if (claims?.sub && claims.sub !== 'demo') {
  // A user's own token: nothing to pick.
  start(claims.sub, () => pageToken);
}

ui.loginForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  ui.loginError.textContent = '';
  const name = ui.name.value.trim();
  if (!ID.test(name)) {
    ui.loginError.textContent = 'Use 1–128 letters, digits, _ : @ or -.';
    ui.name.focus();
    return;
  }
  const button = ui.loginForm.querySelector('button');
  button.disabled = true;
  try {
    if (!pageToken) {
      const token = ui.token.value.trim();
      start(decodeToken(token)?.sub ?? name, () => token);
      return;
    }
    const token = await mint(name);
    if (token === null) {
      // This gateway does not mint tokens: chat as the link's own user.
      start(claims?.sub ?? name, () => pageToken);
    } else {
      start(name, async () => (await mint(name)) ?? pageToken, token);
    }
  } catch (e) {
    ui.loginError.textContent = e.message;
  } finally {
    button.disabled = false;
  }
});

// --- the connection ---------------------------------------------------------

function start(name, getToken, firstToken) {
  me = name;
  ui.login.hidden = true;
  ui.chat.hidden = false;
  let first = firstToken;
  client = connect('/ws', {
    getToken: () => {
      if (first) {
        const t = first;
        first = null;
        return t;
      }
      return getToken();
    },
  });
  client.on('connecting', ({ attempt }) => status('connecting', attempt ? `Connecting (attempt ${attempt})…` : 'Connecting…'));
  client.on('reconnecting', ({ delay, code }) =>
    status('reconnecting', `Connection lost${code ? ` (${code})` : ''}. Reconnecting in ${(delay / 1000).toFixed(1)} s…`),
  );
  client.on('disconnected', ({ code, reason }) => {
    status('disconnected', `Disconnected: ${reason || 'closed'} (${code}). Reload the page to start again.`);
  });
  client.on('connected', ({ user, reconnected, transport }) => {
    ui.status.dataset.transport = transport;
    me = user;
    status('connected', `Connected as ${user} (${transport === 'sse' ? 'server-sent events' : 'WebSocket'})`);
    if (reconnected) for (const room of rooms.keys()) refreshMembers(room);
  });
  client.on('state', drawOutbox);
  client.on('direct', ({ from, data, ts, queued }) => direct(`${from}: ${text(data)}`, ts, queued));
  client.on('error', (e) => console.warn('switchboard:', e.code, e.message));
  joinRoom(LOBBY);
  joinNews();
  ui.myStatusField.hidden = false;
  ui.text.focus();
}

ui.myStatus.addEventListener('change', () => {
  client?.setStatus(ui.myStatus.value).catch((e) => console.warn('status', e));
});

// Say "typing" while the box changes; the client sends at most one per 2 s.
ui.text.addEventListener('input', () => {
  if (client && current && ui.text.value) client.typing(current).catch((e) => console.warn('typing', e.code, e.message));
});

function status(state, message) {
  ui.status.dataset.state = state;
  ui.status.textContent = message;
}

// --- rooms --------------------------------------------------------------------

/** The announcements beside the chat: messages only, nothing to send. */
async function joinNews() {
  try {
    await client.join(NEWS, {
      onMessage: (m) => ui.news.append(timedLine('message', m.ts, text(m.data))),
    });
  } catch (e) {
    ui.newsHint.textContent = `No announcements here: ${e.message}`;
  }
}

async function joinRoom(name) {
  if (rooms.has(name)) return select(name);
  const log = document.createElement('div');
  log.className = 'log';
  log.dataset.room = name;
  log.setAttribute('role', 'log');
  log.setAttribute('aria-label', `Messages in ${name}`);
  log.hidden = true;
  const list = document.createElement('ol');
  log.append(list);
  ui.logs.append(log);

  const li = document.createElement('li');
  const tab = document.createElement('button');
  tab.type = 'button';
  tab.className = 'room';
  tab.addEventListener('click', () => select(name));
  const leave = document.createElement('button');
  leave.type = 'button';
  leave.className = 'leave';
  leave.textContent = '×';
  leave.setAttribute('aria-label', `Leave ${name}`);
  leave.addEventListener('click', () => leaveRoom(name));
  li.append(tab, leave);
  ui.rooms.append(li);

  const room = { log, list, item: li, tab, unread: 0, lastSeq: 0, readSeq: 0, typing: [], members: new Map() };
  rooms.set(name, room);
  drawTab(name);
  select(name);
  try {
    const joined = await client.join(name, {
      onMessage: (m) => onMessage(name, m),
      onMembersChanged: ({ joined, left, truncated }) => {
        for (const { user, info } of joined) room.members.set(user, info);
        for (const user of left) room.members.delete(user);
        const names = (list) => list.slice(0, 5).join(', ') + (list.length > 5 || truncated ? ' and others' : '');
        if (joined.length) notice(name, `${names(joined.map((j) => j.user))} joined`);
        if (left.length) notice(name, `${names(left)} left`);
        see(joined.map((j) => j.user));
        if (name === current) drawMembers();
      },
      onJoin: ({ user, info }) => {
        room.members.set(user, info);
        notice(name, `${user} joined`);
        see([user]);
        if (name === current) drawMembers();
      },
      onLeave: ({ user }) => {
        room.members.delete(user);
        notice(name, `${user} left`);
        if (name === current) drawMembers();
      },
      onResync: () => {
        notice(name, 'Some messages may be missing here: the room’s history no longer reaches back.');
        refreshMembers(name);
      },
      onTyping: ({ users }) => {
        room.typing = users;
        if (name === current) drawTyping();
      },
    });
    room.lastSeq = Math.max(room.lastSeq, joined.seq);
    await refreshMembers(name);
    // Unread: what came after this user's read marker, which the room keeps.
    if (name === current) markRead(name);
    else {
      room.unread = Math.max(room.unread, room.lastSeq - room.readSeq);
      drawTab(name);
    }
  } catch (e) {
    notice(name, `Could not join ${name}: ${e.message}`);
    removeRoom(name);
  }
}

async function leaveRoom(name) {
  removeRoom(name);
  try {
    await client.leave(name);
  } catch (e) {
    console.warn('leave', name, e);
  }
}

function removeRoom(name) {
  const room = rooms.get(name);
  if (!room) return;
  rooms.delete(name);
  room.log.remove();
  room.item.remove();
  if (current === name) {
    current = null;
    const next = rooms.keys().next();
    if (!next.done) select(next.value);
    else {
      ui.roomTitle.textContent = 'No room';
      drawMembers();
    }
  }
}

function select(name) {
  const room = rooms.get(name);
  if (!room) return;
  current = name;
  room.unread = 0;
  for (const [n, r] of rooms) {
    r.log.hidden = n !== name;
    drawTab(n);
  }
  ui.roomTitle.textContent = `# ${name}`;
  drawMembers();
  drawTyping();
  markRead(name);
  room.log.scrollTop = room.log.scrollHeight;
}

/** Tells the room this user has read it to the end (a room keeps the marker). */
function markRead(name) {
  const room = rooms.get(name);
  if (!room || room.lastSeq <= room.readSeq || !client) return;
  room.readSeq = room.lastSeq;
  client.markRead(name, room.lastSeq).catch((e) => console.warn('read', name, e));
}

function drawTyping() {
  const users = ((current && rooms.get(current)?.typing) || []).filter((u) => u !== me);
  ui.typing.textContent =
    users.length === 0 ? '' : users.length === 1 ? `${users[0]} is typing…` : `${users.slice(0, 3).join(', ')} are typing…`;
}

function drawTab(name) {
  const room = rooms.get(name);
  room.tab.textContent = `# ${name}`;
  room.tab.setAttribute('aria-current', String(name === current));
  if (room.unread) {
    const badge = document.createElement('span');
    badge.className = 'unread';
    badge.textContent = `${room.unread} new`;
    room.tab.append(' ', badge);
  }
}

async function refreshMembers(name) {
  try {
    const { members } = await client.members(name);
    const room = rooms.get(name);
    if (!room) return;
    room.members = new Map(members.map((m) => [m.user, m.info]));
    room.readSeq = Math.max(room.readSeq, members.find((m) => m.user === me)?.read_seq ?? 0);
    see(members.map((m) => m.user));
    if (name === current) drawMembers();
  } catch (e) {
    console.warn('members', name, e);
  }
}

function drawMembers() {
  const room = current && rooms.get(current);
  const users = room ? [...room.members.keys()].sort() : [];
  ui.members.replaceChildren(...users.map((u) => personItem(u)));
  const count = current ? client.memberCount(current) : null;
  ui.memberCount.textContent = count === null ? '' : `(${count})`;
}

// --- messages -----------------------------------------------------------------

function onMessage(name, m) {
  const room = rooms.get(name);
  if (!room) return;
  const li = document.createElement('li');
  li.className = 'message';
  li.dataset.seq = m.seq;
  const from = document.createElement('span');
  from.className = 'from';
  from.textContent = m.from;
  li.append(from, timeOf(m.ts), textOf(text(m.data)));
  append(room, li);
  see([m.from]);
  room.lastSeq = Math.max(room.lastSeq, m.seq);
  if (name !== current) {
    room.unread += 1;
    drawTab(name);
  } else if (!document.hidden) markRead(name);
}

function notice(name, message) {
  const room = rooms.get(name);
  if (!room) return;
  const li = document.createElement('li');
  li.className = 'notice';
  li.textContent = message;
  append(room, li);
}

function append(room, li) {
  const atEnd = room.log.scrollHeight - room.log.scrollTop - room.log.clientHeight < 40;
  room.list.append(li);
  if (atEnd) room.log.scrollTop = room.log.scrollHeight;
}

/** A `<time>` for `ts` (ms since the Unix epoch), as hours and minutes. */
function timeOf(ts) {
  const time = document.createElement('time');
  time.dateTime = new Date(ts).toISOString();
  time.textContent = new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return time;
}

function textOf(body) {
  const span = document.createElement('span');
  span.className = 'text';
  span.textContent = body;
  return span;
}

/** A list item of class `className`: the time, then the text. */
function timedLine(className, ts, body) {
  const li = document.createElement('li');
  li.className = className;
  li.append(timeOf(ts), ' ', textOf(body));
  return li;
}

function text(data) {
  return typeof data?.text === 'string' ? data.text : JSON.stringify(data);
}

ui.sendForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const message = ui.text.value.trim();
  if (!message || !current || !client) return;
  const room = current;
  ui.text.value = '';
  sending += 1;
  drawOutbox();
  try {
    await client.publish(room, { text: message }, { timeout: 30_000 });
  } catch (e) {
    notice(room, `Not sent (${e.code}): “${message}”`);
    if (!ui.text.value) ui.text.value = message;
  } finally {
    sending -= 1;
    drawOutbox();
  }
});

function drawOutbox() {
  ui.outbox.textContent =
    sending === 0 ? '' : client.state === 'connected' ? 'Sending…' : `${sending} waiting for the connection…`;
}

ui.joinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = ui.room.value.trim();
  if (!ID.test(name) || !client) return;
  ui.room.value = '';
  joinRoom(name);
});

// --- who is online ----------------------------------------------------------

function see(users) {
  const fresh = users.filter((u) => !people.has(u));
  if (!fresh.length || !client) return;
  for (const u of fresh) people.set(u, undefined);
  client
    .watch(fresh, ({ user, online, status }) => {
      people.set(user, { online, status });
      drawPeople();
    })
    .then((states) => {
      for (const s of states) people.set(s.user, { online: s.online, status: s.status });
      drawPeople();
    })
    .catch((e) => {
      for (const u of fresh) people.delete(u);
      console.warn('watch', e);
    });
}

function drawPeople() {
  const on = (u) => people.get(u)?.online === true;
  const users = [...people.keys()].sort((a, b) => on(b) - on(a) || a.localeCompare(b));
  ui.people.replaceChildren(
    ...users.map((u) => {
      const li = personItem(u);
      const online = on(u);
      li.classList.toggle('online', online);
      const state = document.createElement('span');
      state.className = 'hint presence';
      state.textContent = online ? ` · ${people.get(u).status ?? 'online'}` : ' · offline';
      li.dataset.status = online ? (people.get(u).status ?? 'online') : 'offline';
      li.append(state);
      return li;
    }),
  );
}

// --- direct messages -----------------------------------------------------------

function direct(line, ts, queued) {
  const body = queued ? `${line} (sent while you were away)` : line;
  ui.directs.append(timedLine(queued ? 'message queued' : 'message', ts, body));
}

ui.dmForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const to = ui.dmTo.value.trim();
  const message = ui.dmText.value.trim();
  if (!ID.test(to) || !message || !client) return;
  ui.dmText.value = '';
  try {
    const { delivered } = await client.send(to, { text: message });
    ui.dmResult.textContent = delivered ? `Delivered to ${to}.` : `${to} is offline: it will be delivered when ${to} comes online.`;
    direct(`to ${to}: ${message}`, Date.now(), false);
  } catch (e) {
    ui.dmResult.textContent = `Not sent (${e.code}): ${e.message}`;
    if (!ui.dmText.value) ui.dmText.value = message;
  }
});

function personItem(user) {
  const li = document.createElement('li');
  li.dataset.user = user;
  li.append(user);
  if (user === me) {
    const you = document.createElement('span');
    you.className = 'me';
    you.textContent = ' (you)';
    li.append(you);
  }
  return li;
}
