// Types for switchboard.js, the Switchboard client for browsers and Node.js.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type State = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

/** The subprotocol the client speaks: `switchboard.v1.json`. */
export const PROTOCOL: string;

/** A WebSocket constructor with the browser's API (e.g. the `ws` package's). */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[]): WebSocketLike;
}

export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  addEventListener?(type: string, listener: (ev: any) => void): void;
}

export interface ConnectOptions {
  /** A JWT for the user. One of `token` and `getToken` is required (or a URL with `?token=`). */
  token?: string;
  /** Called for the first token, again after close 4501 (token expired), and before expiry when `refreshAhead`. */
  getToken?: () => string | Promise<string>;
  /** The WebSocket implementation; default `globalThis.WebSocket` (pass one on Node.js before 22). */
  WebSocket?: WebSocketConstructor;
  /**
   * `auto` (default): a WebSocket, and server-sent events when a WebSocket cannot be opened or closes
   * before its first `hello` (or when there is no WebSocket); `websocket` or `sse` to choose.
   * Over SSE the token goes in the stream's URL and requests are POSTed.
   */
  transport?: 'auto' | 'websocket' | 'sse';
  /** The EventSource implementation for SSE; default `globalThis.EventSource`. */
  EventSource?: new (url: string) => {
    onopen: ((ev: any) => void) | null;
    onmessage: ((ev: { data: string }) => void) | null;
    onerror: ((ev: any) => void) | null;
    addEventListener(type: string, listener: (ev: { data: string }) => void): void;
    close(): void;
  };
  /** Milliseconds a request may wait for its reply, counted from the call (queue time included). Default 10000. */
  timeout?: number;
  /** Milliseconds to open the socket and receive `hello`. Default 10000. */
  connectTimeout?: number;
  /** Requests held while disconnected; past it they fail with `queue_full` (0: fail at once with `disconnected`). Default 100. */
  maxQueue?: number;
  /** First reconnect delay bound in ms; the n-th is `min(backoffCap, backoffBase * 2^(n-1))`. Default 500. */
  backoffBase?: number;
  /** Largest reconnect delay bound in ms. Default 30000. */
  backoffCap?: number;
  /** Source of jitter in [0, 1): the delay is `random() * bound`. Default `Math.random`. */
  random?: () => number;
  /** Silence, after a `ping` op, before the connection is considered dead (ms). Default 10000. */
  pongTimeout?: number;
  /** With `getToken`: refresh the connection's token before it expires. Default true. */
  refreshAhead?: boolean;
}

export interface RequestOptions {
  /** Overrides the client's `timeout` for this call. */
  timeout?: number;
}

export interface Message {
  room: string;
  seq: number;
  epoch: string;
  from: string;
  data: Json;
  /** Milliseconds since the Unix epoch. */
  ts: number;
}

export interface MemberEvent {
  room: string;
  user: string;
  info?: Json;
  /** Users in the room after this change, exact (null before the join reply). */
  count: number | null;
}

/** A batch of joins and leaves, in rooms whose namespace has `join_leave = "batched"`. */
export interface MembersChangedEvent {
  room: string;
  /** Users who joined in the window (at most 100). */
  joined: { user: string; info?: Json }[];
  /** Users who left in the window (at most 100). */
  left: string[];
  /** Users in the room now (exact). */
  count: number;
  /** More changed in the window than the lists hold. */
  truncated: boolean;
}

export interface SignalEvent {
  room: string;
  from: string;
  data: Json;
}

export interface ResyncEvent {
  room: string;
  epoch: string;
  /** The room's latest seq: messages after it follow. */
  seq: number;
  /** `history`: the room's history no longer reached back after a reconnect; `resync`: the gateway lost continuity. */
  reason: 'history' | 'resync';
}

export interface RoomHandlers {
  /** Each message once, in order. */
  onMessage?(message: Message): void;
  /** Another user's first connection joined the room. */
  onJoin?(event: MemberEvent): void;
  /** Another user's last connection left the room. */
  onLeave?(event: MemberEvent): void;
  /** Joins and leaves of a window, where the room's namespace batches them. */
  onMembersChanged?(event: MembersChangedEvent): void;
  /** Messages may have been missed: refetch your state; newer messages follow `seq`. */
  onResync?(event: ResyncEvent): void;
  /** The gateway took the connection out of the room (`reason` "token": a refreshed token no longer allows it; "server": the backend unsubscribed it; "forbidden": a room the backend had subscribed it to could not be rejoined after a reconnect); the room is dropped. */
  onRemoved?(event: { room: string; reason: string }): void;
  /** A user's read marker moved forward (from a `read` event, or a batch in batched rooms). */
  onRead?(event: { room: string; user: string; seq: number }): void;
  /** Another member's signal (no seq, never stored or replayed). */
  onSignal?(event: SignalEvent): void;
  /** Who is typing in the room now changed (see `Client.typing`); a typist counts for 3 s after their last signal. */
  onTyping?(event: { room: string; users: string[] }): void;
  /** Rejoining after a reconnect was refused (e.g. `forbidden`); the room is dropped. */
  onError?(error: SwitchboardError): void;
}

export interface Joined {
  room: string;
  epoch: string;
  seq: number;
  /** Users in the room, this one included. */
  count: number | null;
}

export interface Member {
  user: string;
  info?: Json;
  conns: number;
  /** The highest seq this user marked read in the room (0: none). */
  read_seq: number;
}

export interface PresenceState {
  user: string;
  online: boolean;
  last_seen_ms?: number;
  /** While online: the user's status (`online` unless they set another). */
  status?: string;
  /**
   * The presence service could not be asked: the answering gateway's own
   * view (online only if connected to that gateway).
   */
  degraded?: boolean;
}

export interface PresenceEvent {
  user: string;
  online: boolean;
  ts: number;
  /** While online: the user's status (`online` unless they set another); a change of it is an event too. */
  status?: string;
}

export interface DirectMessage {
  from: string;
  data: Json;
  /** When it was sent (ms since the Unix epoch). */
  ts: number;
  /** It waited for this user to connect. */
  queued: boolean;
}

export interface ConnectedEvent {
  user: string;
  conn: string;
  gateway: string;
  /** False for the first connection of this client. */
  reconnected: boolean;
  /** What this connection speaks. */
  transport: 'websocket' | 'sse';
}

export interface Events {
  state: { state: State; previous: State };
  connecting: { attempt: number };
  connected: ConnectedEvent;
  reconnecting: { attempt: number; delay: number; code: number; reason: string };
  disconnected: { code: number; reason: string };
  direct: DirectMessage;
  /** The application's backend joined this connection to a room (server API `subscribe`). */
  subscribed: { room: string; epoch: string; seq: number; count: number };
  error: SwitchboardError;
}

export class SwitchboardError extends Error {
  /** A protocol error code (`not_member`, `forbidden`, `unavailable`, …) or
   * `timeout`, `queue_full`, `disconnected` (the request may or may not have
   * taken effect), `closed`, `already_joined`, `left`. */
  readonly code: string;
  /** The WebSocket close code, for `disconnected` and `closed`. */
  readonly closeCode?: number;
}

export class Client {
  readonly state: State;
  /** `websocket`, or `sse` once the client speaks server-sent events. */
  readonly transport: 'websocket' | 'sse';
  /** The user id, once connected. */
  readonly user: string | null;
  readonly connection: { conn: string; user: string; gateway: string; heartbeat_ms: number } | null;
  readonly rooms: string[];
  on<E extends keyof Events>(event: E, fn: (detail: Events[E]) => void): () => void;
  off<E extends keyof Events>(event: E, fn: (detail: Events[E]) => void): void;
  ready(): Promise<ConnectedEvent>;
  join(room: string, handlers?: RoomHandlers, options?: RequestOptions): Promise<Joined>;
  /** Sets the handlers of a room the client is in: call it from the `subscribed` event for a room the backend joined it to. */
  handle(room: string, handlers: RoomHandlers): void;
  leave(room: string): Promise<void>;
  /** Users in a joined room, kept from its join reply and membership events; null if not joined. */
  memberCount(room: string): number | null;
  /** `duplicate: true`: a publish with the same idempotency key was stored before; `seq` is its. */
  publish(
    room: string,
    data: Json,
    options?: RequestOptions & { idempotencyKey?: string },
  ): Promise<{ room: string; seq: number; duplicate: boolean }>;
  /** `delivered: false`: the user had no connection; the message waits for their next one. */
  send(user: string, data: Json, options?: RequestOptions): Promise<{ delivered: boolean }>;
  /** Marks a joined room read up to `seq`; markers only move forward. */
  markRead(room: string, seq: number, options?: RequestOptions): Promise<void>;
  /** An unsequenced, unstored event for the room's other members (at most 4 KiB of JSON). */
  signal(room: string, data: Json, options?: RequestOptions): Promise<void>;
  /** Says this user is typing (sent at most once per 2 s) or, with `false`, stopped. */
  typing(room: string, on?: boolean): Promise<void>;
  members(room: string, options?: RequestOptions): Promise<{ members: Member[]; count: number; truncated: boolean }>;
  presence(users: Iterable<string>, options?: RequestOptions): Promise<PresenceState[]>;
  watch(users: Iterable<string>, onPresence?: (event: PresenceEvent) => void): Promise<PresenceState[]>;
  unwatch(users: Iterable<string>, onPresence?: (event: PresenceEvent) => void): Promise<void>;
  refresh(token?: string): Promise<{ exp: number | null }>;
  /** Sets this user's status (`online`, `away`, `busy` or up to 64 bytes of your own); the last set on any connection wins. */
  setStatus(status: string, options?: RequestOptions): Promise<void>;
  close(): Promise<void>;
}

export function connect(url: string | URL, options?: ConnectOptions): Client;

/** The unverified claims of a JWT, or null. */
export function decodeToken(token: string): { sub?: string; exp?: number; [claim: string]: unknown } | null;

/** The bound of the `attempt`-th reconnect delay (1-based). */
export function backoffBound(attempt: number, base?: number, cap?: number): number;
