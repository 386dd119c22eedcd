// WshubClient: one logical connection to a wshub node that survives network
// drops, restarts and rolling deploys. It reconnects with backoff (or at the
// server's hint), re-joins every room (recovering missed messages where the
// room keeps history), refreshes its token on the same connection, and
// notices a silent server that a browser's hidden WebSocket pings cannot.

import { Emitter } from "./emitter.js";
import { WshubError } from "./errors.js";
import { afterClose, backoffDelay, refusedStatus } from "./policy.js";
import { Subscription, acked, deliver, joinFrame, refused, removed, serverSubscribed } from "./subscription.js";

const DEFAULTS = {
  minReconnectDelayMs: 500,
  maxReconnectDelayMs: 20_000,
  timeoutMs: 10_000,
  livenessMarginMs: 10_000,
  reconnect: true,
};

export class WshubClient {
  #url;
  #options;
  #WebSocket;
  #events;
  #state = "disconnected";
  #socket = null;
  #generation = 0;
  #attempt = 0;
  #token;
  #givenTokenUsed = false;
  #welcome = null;
  #subs = new Map();
  #pending = new Map();
  #nextRef = 1;
  #waiters = [];
  #timers = { reconnect: null, welcome: null, liveness: null };
  #hintMs;
  #lastFrameAt = 0;
  #pinged = false;
  #lastError = "";
  #onOffline = () => this.#lost(1006, "the browser went offline");
  #onOnline = () => {
    if (this.#state === "disconnected" && this.#timers.reconnect) this.#open();
  };

  /**
   * @param {string} url `ws://host:port/ws` or `wss://…`
   * @param {object} [options] see README.md
   */
  constructor(url, options = {}) {
    this.#url = url;
    this.#options = { ...DEFAULTS, ...options };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass one as the `WebSocket` option (e.g. the `ws` package)");
    }
    this.#token = options.token;
    this.#events = new Emitter((err) => this.#events.emit("error", err));
  }

  /** `"connecting" | "connected" | "disconnected" | "closed"`. */
  get state() {
    return this.#state;
  }

  /** The current connection's id (the welcome's `id`); undefined while not connected. */
  get id() {
    return this.#state === "connected" ? this.#welcome?.id : undefined;
  }

  /** The current connection's welcome frame (`id`, `user`, `heartbeat_ms`). */
  get welcome() {
    return this.#welcome;
  }

  on(event, listener) {
    return this.#events.on(event, listener);
  }

  off(event, listener) {
    this.#events.off(event, listener);
  }

  /** Connects (if not already) and resolves with the welcome frame. */
  connect() {
    if (this.#state === "connected") return Promise.resolve(this.#welcome);
    const waiting = new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
    if (this.#state === "closed" || (this.#state === "disconnected" && !this.#timers.reconnect)) {
      this.#attempt = 0;
      this.#open();
    }
    return waiting;
  }

  /** Ends the connection for good: no more attempts, pending calls reject with `closed`. */
  close() {
    if (this.#state === "closed") return;
    this.#finish(new WshubError("closed", "the client was closed"), { code: 1000, reason: "closed by the client" });
  }

  /**
   * Joins `room`; `handler` gets each of its messages. Resolves on the
   * server's ack with the subscription; while not connected, the join is sent
   * once the connection is (re)established.
   */
  async join(room, handler, options = {}) {
    if (typeof handler !== "function") throw new TypeError("join(room, handler): handler must be a function");
    if (this.#state === "closed") throw new WshubError("closed", "the client is closed; call connect() first");
    const existing = this.#subs.get(room);
    if (existing && (existing.state === "joining" || existing.state === "joined")) {
      throw new WshubError("already_joined", `already joined room "${room}"; use its subscription`);
    }
    const sub = new Subscription(this, room, (message) => this.#call(handler, message), options, (err) =>
      this.#events.emit("error", err),
    );
    this.#subs.set(room, sub);
    if (this.#state === "connected") this.#sendJoin(sub);
    else if (this.#state === "disconnected" && !this.#timers.reconnect) this.connect().catch(() => {});
    return sub.ready;
  }

  /** The subscription of `room`, if the client is in it. */
  subscription(room) {
    return this.#subs.get(room);
  }

  /** Publishes to a room this client has joined; resolves on the ack. */
  publish(room, content) {
    return this.request({ type: "publish", room, content });
  }

  /** The room's stored messages: `{ room, offset, epoch, messages }`. */
  history(room, { limit, since } = {}) {
    const frame = { type: "history", room };
    if (limit !== undefined) frame.limit = limit;
    if (since !== undefined) frame.since = since;
    return this.request(frame).then(strip);
  }

  /** Who is in the room: `{ room, members: [{ id, user }] }` (members only). */
  presence(room) {
    return this.request({ type: "presence", room }).then(strip);
  }

  /**
   * Calls `method` on the application's backend over this connection (the
   * server's rpc hook); resolves with the backend's `data`, rejects with
   * its error code.
   */
  rpc(method, data = null) {
    return this.request({ type: "rpc", method, data }).then((answer) => answer.data);
  }

  /** How many are in the room: `{ room, connections, users }`. */
  presenceStats(room) {
    return this.request({ type: "presence_stats", room }).then(strip);
  }

  /**
   * Sends one frame with a fresh `ref` and resolves with the server's answer
   * (ack, history, presence), or rejects with its error. While not connected
   * it rejects at once with `disconnected`: nothing is queued silently.
   */
  request(frame) {
    if (this.#state !== "connected") {
      const code = this.#state === "closed" ? "closed" : "disconnected";
      return Promise.reject(new WshubError(code, `not connected (${this.#state})`));
    }
    return new Promise((resolve, reject) => {
      const ref = String(this.#nextRef++);
      const timer = setTimeout(() => {
        this.#pending.delete(ref);
        reject(new WshubError("timeout", `no answer to ${frame.type} within ${this.#options.timeoutMs} ms`));
      }, this.#options.timeoutMs);
      this.#pending.set(ref, { resolve, reject, timer, kind: frame.type });
      this.#send({ ...frame, ref });
    });
  }

  // ---- connection lifecycle ----

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.#events.emit("state", state);
  }

  async #open() {
    clearTimeout(this.#timers.reconnect);
    this.#timers.reconnect = null;
    const generation = ++this.#generation;
    this.#setState("connecting");
    this.#listenForNetwork(true);
    let token;
    try {
      token = await this.#freshToken();
    } catch (err) {
      if (generation !== this.#generation) return;
      this.#events.emit("error", err);
      this.#retry({ code: 1006, reason: `getToken failed: ${err?.message ?? err}` });
      return;
    }
    if (generation !== this.#generation) return;
    if (token === null || token === "") {
      this.#finish(new WshubError("unauthorized", "getToken() gave no token"), { code: 4001, reason: "no token" });
      return;
    }
    const protocols = ["wshub.v1", ...(this.#options.protocols ?? [])];
    if (token !== undefined) protocols.push(`token.${token}`);
    let socket;
    try {
      socket = new this.#WebSocket(this.#url, protocols);
    } catch (err) {
      this.#finish(new WshubError("bad_url", `cannot open ${this.#url}: ${err?.message ?? err}`), {
        code: 1006,
        reason: "bad url",
      });
      return;
    }
    this.#socket = socket;
    this.#lastError = "";
    this.#hintMs = undefined;
    socket.onmessage = (event) => socket === this.#socket && this.#receive(event.data);
    socket.onerror = (event) => {
      if (socket === this.#socket) this.#lastError = String(event?.message ?? event?.error?.message ?? "");
    };
    socket.onclose = (event) => {
      if (socket !== this.#socket) return;
      this.#socketEnded(event.code, event.reason);
    };
    this.#timers.welcome = setTimeout(
      () => this.#lost(1006, `no welcome within ${this.#options.timeoutMs} ms`),
      this.#options.timeoutMs,
    );
  }

  async #freshToken() {
    const { getToken } = this.#options;
    // A given token serves the first attempt; with getToken, every later
    // attempt asks for a fresh one (the given one may be what was refused).
    if (getToken && (this.#givenTokenUsed || this.#token === undefined)) {
      this.#token = await getToken();
    }
    this.#givenTokenUsed = true;
    return this.#token;
  }

  #socketEnded(code, reason) {
    const status = refusedStatus(this.#lastError);
    this.#detach();
    const decision = afterClose({
      code,
      reason,
      status,
      canRefreshToken: typeof this.#options.getToken === "function",
      hintMs: this.#hintMs,
    });
    if (decision.final || !this.#options.reconnect) {
      const why = decision.why ?? "closed";
      this.#finish(new WshubError(why, `connection ended: ${code} ${reason || this.#lastError}`.trim()), {
        code,
        reason,
        status,
      });
      return;
    }
    this.#retry({ code, reason, status }, decision.hintMs);
  }

  /** The connection is unusable (silent server, no welcome, offline): drop it now, without waiting for TCP. */
  #lost(code, reason) {
    if (!this.#socket) return;
    const socket = this.#socket;
    this.#detach();
    try {
      socket.close(4000, "client gave up");
    } catch {
      // Already closing.
    }
    this.#retry({ code, reason });
  }

  #detach() {
    const socket = this.#socket;
    this.#socket = null;
    if (socket) {
      socket.onmessage = socket.onerror = socket.onclose = null;
      // A late error from the abandoned socket must not crash Node's `ws`.
      socket.onerror = () => {};
    }
    clearTimeout(this.#timers.welcome);
    clearTimeout(this.#timers.liveness);
    this.#timers.welcome = this.#timers.liveness = null;
    for (const [ref, pending] of this.#pending) {
      clearTimeout(pending.timer);
      this.#pending.delete(ref);
      // A join is sent again on the next connection; the rest fail now.
      if (pending.kind !== "join") {
        pending.reject(new WshubError("disconnected", `the connection ended before the ${pending.kind} was answered`));
      }
    }
  }

  #retry(ended, hintMs) {
    const delayMs =
      hintMs ?? backoffDelay(this.#attempt++, this.#options.minReconnectDelayMs, this.#options.maxReconnectDelayMs);
    this.#setState("disconnected");
    this.#events.emit("disconnected", { ...ended, reconnectInMs: delayMs });
    this.#timers.reconnect = setTimeout(() => this.#open(), delayMs);
  }

  #finish(error, ended) {
    ++this.#generation;
    const socket = this.#socket;
    this.#detach();
    if (socket) {
      try {
        socket.close(1000, "");
      } catch {
        // Already closing.
      }
    }
    clearTimeout(this.#timers.reconnect);
    this.#timers.reconnect = null;
    this.#listenForNetwork(false);
    for (const sub of [...this.#subs.values()]) {
      if (sub.joined !== undefined) continue;
      this.#subs.delete(sub.room);
      sub[refused](error, { final: true });
    }
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
    this.#setState("closed");
    this.#events.emit("closed", { ...ended, error });
  }

  #listenForNetwork(on) {
    const target = globalThis;
    if (typeof target.addEventListener !== "function") return;
    const method = on ? "addEventListener" : "removeEventListener";
    target[method]("offline", this.#onOffline);
    target[method]("online", this.#onOnline);
  }

  /**
   * The liveness check: after `heartbeat_ms` of silence ask for a pong; no
   * frame within the margin after that means a dead path. One timer that
   * looks at when the last frame came, so a busy connection costs no timer
   * per message.
   */
  #armLiveness(delayMs = this.#welcome?.heartbeat_ms) {
    clearTimeout(this.#timers.liveness);
    if (!this.#welcome?.heartbeat_ms) return;
    this.#timers.liveness = setTimeout(() => this.#checkLiveness(), delayMs);
  }

  #checkLiveness() {
    const heartbeatMs = this.#welcome.heartbeat_ms;
    const marginMs = this.#options.livenessMarginMs;
    const silentMs = Date.now() - this.#lastFrameAt;
    if (silentMs >= heartbeatMs + marginMs) {
      this.#lost(1006, `the server was silent for ${silentMs} ms`);
      return;
    }
    if (silentMs < heartbeatMs) {
      this.#pinged = false;
      this.#armLiveness(heartbeatMs - silentMs);
      return;
    }
    if (!this.#pinged) {
      this.#send({ type: "ping" });
      this.#pinged = true;
    }
    this.#armLiveness(heartbeatMs + marginMs - silentMs);
  }

  #send(frame) {
    try {
      this.#socket?.send(JSON.stringify(frame));
    } catch (err) {
      this.#events.emit("error", err);
    }
  }

  #call(handler, message) {
    try {
      handler(message);
    } catch (err) {
      this.#events.emit("error", err);
    }
  }

  // ---- frames from the server ----

  #receive(data) {
    let frame;
    try {
      frame = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data));
    } catch (err) {
      this.#events.emit("error", new WshubError("bad_frame", `the server sent a frame that is not JSON: ${err}`));
      return;
    }
    this.#lastFrameAt = Date.now();
    switch (frame.type) {
      case "welcome":
        return this.#welcomed(frame);
      case "message":
        return this.#message(frame);
      case "ack":
      case "pong":
      case "history":
      case "presence":
      case "presence_stats":
      case "rpc":
        return this.#answer(frame);
      case "error":
        return this.#error(frame);
      case "system":
        return this.#system(frame);
      default:
        // Future types: their arrival already counted as life.
        return undefined;
    }
  }

  #welcomed(frame) {
    clearTimeout(this.#timers.welcome);
    this.#timers.welcome = null;
    this.#welcome = frame;
    this.#attempt = 0;
    this.#setState("connected");
    this.#pinged = false;
    this.#armLiveness();
    this.#events.emit("connected", frame);
    for (const waiter of this.#waiters.splice(0)) waiter.resolve(frame);
    for (const sub of this.#subs.values()) {
      if (sub.state === "joining" || sub.state === "joined") this.#sendJoin(sub);
    }
  }

  #sendJoin(sub) {
    this.request(sub[joinFrame]()).then(
      (ack) => this.#subs.get(sub.room) === sub && sub[acked](ack),
      (err) => {
        if (this.#subs.get(sub.room) !== sub || err.code === "disconnected") return;
        const rejoin = sub.joined !== undefined;
        if (rejoin && (err.code === "unavailable" || err.code === "timeout")) {
          // The broker is away for a moment: try again on this connection.
          const delay = backoffDelay(1, this.#options.minReconnectDelayMs, this.#options.maxReconnectDelayMs);
          setTimeout(() => this.#state === "connected" && this.#subs.get(sub.room) === sub && this.#sendJoin(sub), delay);
          return;
        }
        if (!rejoin) this.#subs.delete(sub.room);
        sub[refused](err, { final: true });
      },
    );
  }

  #message(frame) {
    const sub = frame.room === undefined ? undefined : this.#subs.get(frame.room);
    if (sub && (sub.state === "joining" || sub.state === "joined")) sub[deliver](frame);
    else this.#events.emit("message", frame);
  }

  #answer(frame) {
    const pending = this.#pending.get(String(frame.ref));
    if (!pending) return;
    this.#pending.delete(String(frame.ref));
    clearTimeout(pending.timer);
    pending.resolve(frame);
  }

  #error(frame) {
    const error = new WshubError(frame.code, frame.message, frame.reason);
    const pending = frame.ref === undefined ? undefined : this.#pending.get(String(frame.ref));
    if (!pending) {
      this.#events.emit("error", error);
      return;
    }
    this.#pending.delete(String(frame.ref));
    clearTimeout(pending.timer);
    pending.reject(error);
  }

  #system(frame) {
    this.#events.emit("system", frame);
    const sub = frame.room === undefined ? undefined : this.#subs.get(frame.room);
    switch (frame.event) {
      case "shutdown":
        this.#hintMs = frame.reconnect_after_ms;
        return;
      case "token_expiring":
        this.#refreshToken();
        return;
      case "unsubscribed":
        if (!sub) return;
        if (frame.reason === "insufficient_state" && sub.state === "joined") {
          // The node missed messages: join again from our position to recover them.
          this.#sendJoin(sub);
          return;
        }
        sub[refused](new WshubError("unsubscribed", `taken out of room "${frame.room}"`, frame.reason), {
          final: true,
        });
        return;
      case "subscribed":
        if (sub && sub.state !== "left") sub[serverSubscribed](frame);
        else this.#events.emit("subscribed", { room: frame.room, offset: frame.offset, epoch: frame.epoch });
        return;
      case "join":
      case "leave":
        sub?.emitEvent(frame.event, { id: frame.id, user: frame.user, info: frame.info });
        return;
      default:
        return;
    }
  }

  async #refreshToken() {
    const { getToken } = this.#options;
    if (typeof getToken !== "function") {
      this.#events.emit("token_expiring");
      return;
    }
    try {
      const token = await getToken();
      if (!token) throw new WshubError("unauthorized", "getToken() gave no token");
      await this.request({ type: "refresh", token });
      this.#token = token;
    } catch (err) {
      this.#events.emit("error", err);
    }
  }

  /** @internal A subscription left. */
  [removed](sub) {
    if (this.#subs.get(sub.room) === sub) this.#subs.delete(sub.room);
  }
}

function strip(frame) {
  const { type: _type, ref: _ref, ...rest } = frame;
  return rest;
}
