// Type declarations of wshub-client (the runtime is plain JavaScript in this folder).

/** What any WebSocket implementation offers that the client uses: the browser's, Node's global one, or the `ws` package's. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export type ConnectionState = "connecting" | "connected" | "disconnected" | "closed";

export type SubscriptionState = "joining" | "joined" | "unsubscribed" | "left";

/** Any JSON value: what `content` may be. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

export interface WshubClientOptions {
  /** A WebSocket implementation where there is no global one (Node 20: `import WebSocket from "ws"`). */
  WebSocket?: WebSocketConstructor;
  /** A fixed token (JWT), sent as the `token.<jwt>` subprotocol entry. */
  token?: string;
  /** Asked for a fresh token on `token_expiring` and before every reconnect; `null` or `""` means "logged out": the client closes. */
  getToken?: () => Promise<string | null> | string | null;
  /** More subprotocol entries, after `wshub.v1`. */
  protocols?: string[];
  /** Reconnect backoff bounds: each delay is min + random(0, min(max, min·2^attempt)), at most max. Defaults 500 and 20000. */
  minReconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
  /** How long a call waits for its answer, and a connection for its welcome. Default 10000. */
  timeoutMs?: number;
  /** After `heartbeat_ms` of silence the client pings; no frame within this margin means a dead path. Default 10000. */
  livenessMarginMs?: number;
  /** `false`: never reconnect by itself. Default true. */
  reconnect?: boolean;
}

export interface Welcome {
  type: "welcome";
  id: string;
  user?: string;
  heartbeat_ms: number;
}

/** A `message` frame, parsed. */
export interface Message<T = Json> {
  type: "message";
  room?: string;
  from: string;
  user?: string;
  user_target?: string;
  content: T;
  time: number;
  /** Rooms with history: the message's position in the room. */
  offset?: number;
}

export interface SystemFrame {
  type: "system";
  event: "shutdown" | "token_expiring" | "unsubscribed" | "subscribed" | "disconnect" | "join" | "leave" | (string & {});
  room?: string;
  reason?: string;
  /** `subscribed` into a room with history: the room's position. */
  offset?: number;
  epoch?: string;
  reconnect_after_ms?: number;
  id?: string;
  user?: string;
}

export interface Ack {
  type: "ack";
  ref: string;
  offset?: number;
  epoch?: string;
  recovered?: boolean;
}

export interface JoinedInfo {
  room: string;
  /** `true`: every missed message was replayed; `false`: some were lost, reload your state; `undefined`: a first join, or a room without history. */
  recovered: boolean | undefined;
  offset: number | undefined;
  epoch: string | undefined;
}

export interface Position {
  offset: number;
  epoch: string;
}

export interface History {
  room: string;
  offset: number;
  epoch: string;
  messages: Message[];
}

export interface Presence {
  room: string;
  members: { id: string; user?: string; info?: unknown }[];
}

export interface PresenceStats {
  room: string;
  connections: number;
  users: number;
}

export interface Ended {
  /** The close code (1006 when the connection dropped without one). */
  code: number;
  reason: string;
  /** The HTTP status of a refused upgrade, where the WebSocket implementation shows it (Node `ws`; never a browser). */
  status?: number;
}

export interface Disconnected extends Ended {
  /** When the next attempt starts: the server's `reconnect_after_ms` after a drain, otherwise the backoff. */
  reconnectInMs: number;
}

export interface Closed extends Ended {
  error: WshubError;
}

export interface ClientEvents {
  state: (state: ConnectionState) => void;
  connected: (welcome: Welcome) => void;
  disconnected: (info: Disconnected) => void;
  closed: (info: Closed) => void;
  /** Messages of no joined room: broadcasts, messages to this user, rooms a backend subscribed the connection to. */
  message: (message: Message) => void;
  system: (frame: SystemFrame) => void;
  /** A backend subscribed the connection to a room it has no subscription for. */
  subscribed: (info: { room: string; offset?: number; epoch?: string }) => void;
  /** The token expires soon and there is no `getToken` to renew it. */
  token_expiring: () => void;
  error: (error: unknown) => void;
}

export interface SubscriptionEvents {
  /** Every re-join after a reconnect or a recovery, and a backend's re-subscribe. */
  joined: (info: JoinedInfo) => void;
  /** The server took the connection out of the room for good (`reason`: `permission_revoked`, `server`, or the re-join's error code). */
  unsubscribed: (info: { room: string; reason: string }) => void;
  /** Presence events (namespaces with `join_leave`). */
  join: (who: { id: string; user?: string; info?: unknown }) => void;
  leave: (who: { id: string; user?: string; info?: unknown }) => void;
}

export declare class WshubError extends Error {
  /** The server's error code (`forbidden`, `not_joined`, `rate_limited`, …) or the client's own (`disconnected`, `closed`, `timeout`, `already_joined`, `left`, `unauthorized`, `token_expired`, `forbidden`). */
  readonly code: string;
  readonly reason?: string;
  constructor(code: string, message?: string, reason?: string);
}

export declare class Subscription<T = Json> {
  readonly room: string;
  /** The first join's answer. */
  readonly joined: JoinedInfo | undefined;
  readonly state: SubscriptionState;
  /** The last offset delivered to the handler and its epoch (rooms with history). */
  readonly position: Position | undefined;
  on<E extends keyof SubscriptionEvents>(event: E, listener: SubscriptionEvents[E]): () => void;
  off<E extends keyof SubscriptionEvents>(event: E, listener: SubscriptionEvents[E]): void;
  publish(content: Json): Promise<Ack>;
  leave(): Promise<void>;
}

export declare class WshubClient {
  constructor(url: string, options?: WshubClientOptions);
  readonly state: ConnectionState;
  /** The welcome's id of the current connection; undefined while not connected. */
  readonly id: string | undefined;
  readonly welcome: Welcome | null;
  on<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): () => void;
  off<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): void;
  connect(): Promise<Welcome>;
  close(): void;
  join<T = Json>(room: string, handler: (message: Message<T>) => void, options?: { recover?: boolean }): Promise<Subscription<T>>;
  subscription(room: string): Subscription | undefined;
  publish(room: string, content: Json): Promise<Ack>;
  history(room: string, options?: { limit?: number; since?: Position }): Promise<History>;
  presence(room: string): Promise<Presence>;
  presenceStats(room: string): Promise<PresenceStats>;
  /** Calls `method` on the application's backend (the rpc hook); resolves with its `data`. */
  rpc<T = Json>(method: string, data?: Json): Promise<T>;
  request(frame: { type: string; [field: string]: unknown }): Promise<Record<string, unknown>>;
}

export declare function backoffDelay(attempt: number, minMs: number, maxMs: number, random?: () => number): number;

export default WshubClient;
