// Compiled (never run) by types.test.js: the shipped .d.ts describes the API
// the way an application uses it, under `strict`.

import { backoffBound, connect, decodeToken, SwitchboardError, type Message, type State } from '../switchboard.js';

declare const WebSocketImpl: import('../switchboard.js').WebSocketConstructor;

async function example(): Promise<void> {
  const client = connect('ws://127.0.0.1:8080/ws', { getToken: async () => 'jwt', WebSocket: WebSocketImpl, maxQueue: 10 });
  const off: () => void = client.on('reconnecting', ({ attempt, delay, code }) => console.log(attempt, delay, code));
  off();
  client.on('connected', ({ user, reconnected }) => console.log(user, reconnected));
  client.on('disconnected', ({ code, reason }) => console.log(code, reason));
  client.on('direct', ({ from, data }) => console.log(from, data));
  client.on('error', (e: SwitchboardError) => console.log(e.code, e.closeCode));
  const state: State = client.state;
  const joined = await client.join('lobby', {
    onMessage: (m: Message) => console.log(m.seq, m.epoch, m.from, m.data, m.ts),
    onJoin: ({ user, info, count }) => console.log(user, info, count),
    onLeave: ({ user }) => console.log(user),
    onMembersChanged: ({ joined, left, count, truncated }) => console.log(joined[0]?.user, left[0], count, truncated),
    onResync: ({ epoch, seq, reason }) => console.log(epoch, seq, reason),
    onSignal: ({ from, data }) => console.log(from, data),
    onTyping: ({ users }) => console.log(users.join(', ')),
    onRead: ({ user, seq }) => console.log(user, seq),
  });
  await client.signal('lobby', { cursor: [1, 2] });
  await client.markRead('lobby', 3);
  await client.typing('lobby');
  await client.typing('lobby', false);
  const seq: number = (await client.publish('lobby', { text: 'hi', n: [1, null] }, { timeout: 5000 })).seq;
  const { delivered }: { delivered: boolean } = await client.send('bob', 'psst');
  client.on('direct', ({ queued }) => console.log(delivered, queued));
  const { members, count } = await client.members('lobby');
  const online: boolean[] = (await client.presence(['bob'])).map((u) => u.online);
  await client.watch(new Set(['bob']), ({ user, online: now }) => console.log(user, now));
  await client.unwatch(['bob']);
  await client.setStatus('away');
  const statuses: (string | undefined)[] = (await client.presence(['bob'])).map((u) => u.status);
  console.log(statuses);
  const seated: number | null = client.memberCount('lobby') ?? joined.count;
  const { exp } = await client.refresh();
  await client.leave('lobby');
  await client.close();
  console.log(state, seated, joined.epoch, seq, members[0]?.conns, count, online, exp, backoffBound(3), decodeToken('x')?.sub);
}

void example;
