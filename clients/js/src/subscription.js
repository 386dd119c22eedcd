// One room the client is in: its handler, its position in the room's
// history (for recovery after a reconnect), and its events.

import { Emitter } from "./emitter.js";
import { WshubError } from "./errors.js";

// Hooks the client calls; not part of the public surface.
export const deliver = Symbol("deliver");
export const joinFrame = Symbol("joinFrame");
export const acked = Symbol("acked");
export const refused = Symbol("refused");
export const removed = Symbol("removed");
export const serverSubscribed = Symbol("serverSubscribed");

export class Subscription {
  #client;
  #handler;
  #recover;
  #events;
  #first;
  #state = "joining";
  #offset;
  #epoch;

  /** @internal */
  constructor(client, room, handler, { recover = true } = {}, report) {
    this.#client = client;
    this.room = room;
    this.#handler = handler;
    this.#recover = recover;
    this.#events = new Emitter(report);
    /** The first join's answer: `{ recovered, offset, epoch }`. */
    this.joined = undefined;
    this.ready = new Promise((resolve, reject) => {
      this.#first = { resolve, reject };
    });
  }

  /** `"joining" | "joined" | "unsubscribed" | "left"`. */
  get state() {
    return this.#state;
  }

  /** The last offset delivered to the handler and its epoch (rooms with history). */
  get position() {
    return this.#epoch === undefined ? undefined : { offset: this.#offset ?? 0, epoch: this.#epoch };
  }

  on(event, listener) {
    return this.#events.on(event, listener);
  }

  off(event, listener) {
    this.#events.off(event, listener);
  }

  /** Publishes `content` (any JSON value) to the room; resolves on the server's ack. */
  publish(content) {
    if (this.#state === "left" || this.#state === "unsubscribed") {
      return Promise.reject(new WshubError("not_joined", `not a member of room "${this.room}"`));
    }
    return this.#client.publish(this.room, content);
  }

  /** Leaves the room; no re-join after a reconnect. */
  async leave() {
    if (this.#state === "left") return;
    const wasAsked = this.#state === "joining" || this.#state === "joined";
    this.#state = "left";
    this.#client[removed](this);
    if (this.joined === undefined) this.#first.reject(new WshubError("left", `left room "${this.room}" before the join was answered`));
    if (!wasAsked || this.#client.state !== "connected") return;
    // Frames are handled in order: this leave follows a join still in flight.
    try {
      await this.#client.request({ type: "leave", room: this.room });
    } catch (err) {
      if (err.code !== "not_joined" && err.code !== "disconnected") throw err;
    }
  }

  /** @internal A `message` frame of this room. Duplicates across a reconnect seam are skipped by offset. */
  [deliver](message) {
    if (this.#state === "left") return;
    if (typeof message.offset === "number") {
      if (this.#offset !== undefined && message.offset <= this.#offset) return;
      this.#offset = message.offset;
    }
    this.#handler(message);
  }

  /** @internal The join frame to send now: with `since` when recovering. */
  [joinFrame]() {
    const frame = { type: "join", room: this.room };
    if (this.#recover && this.#epoch !== undefined) {
      frame.since = { offset: this.#offset ?? 0, epoch: this.#epoch };
    }
    return frame;
  }

  /** @internal The server acked a join. */
  [acked](ack) {
    const first = this.joined === undefined;
    const recovered = first ? undefined : ack.recovered;
    if (typeof ack.epoch === "string") {
      const sameHistory = ack.epoch === this.#epoch;
      // Recovered: the replay follows and moves the offset itself.
      if (!(recovered === true && sameHistory)) {
        this.#offset = sameHistory ? Math.max(this.#offset ?? 0, ack.offset ?? 0) : ack.offset ?? 0;
      }
      this.#epoch = ack.epoch;
    }
    this.#state = "joined";
    const info = { room: this.room, recovered, offset: ack.offset, epoch: ack.epoch };
    if (first) {
      this.joined = info;
      this.#first.resolve(this);
    } else {
      this.#events.emit("joined", info);
    }
  }

  /** @internal A join was refused, or the server took the connection out of the room. */
  [refused](error, { final }) {
    if (this.joined === undefined) {
      this.#state = "left";
      this.#first.reject(error);
      return;
    }
    if (final) {
      this.#state = "unsubscribed";
      this.#events.emit("unsubscribed", { room: this.room, reason: error.reason ?? error.code });
    }
  }

  /** @internal A backend put the connection (back) into this room. */
  [serverSubscribed](frame) {
    this.#state = "joined";
    if (typeof frame.epoch === "string") {
      // The room's position, as a join's ack gives it: later re-joins recover from here.
      this.#offset = frame.epoch === this.#epoch ? Math.max(this.#offset ?? 0, frame.offset ?? 0) : frame.offset ?? 0;
      this.#epoch = frame.epoch;
    }
    this.#events.emit("joined", { room: this.room, recovered: undefined, offset: frame.offset, epoch: frame.epoch });
  }

  /** @internal Presence events of the room (`join`, `leave`). */
  emitEvent(event, info) {
    this.#events.emit(event, info);
  }
}
