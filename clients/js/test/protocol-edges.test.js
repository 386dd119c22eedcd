// Protocol cases a single wshub node cannot be made to produce on demand
// (insufficient_state comes from a cluster node that lost messages between
// Redis and itself), played by a scripted peer on `ws`'s server: what the
// client sends back is asserted frame by frame.

import assert from "node:assert/strict";
import { test } from "node:test";

import { WshubClient } from "../src/index.js";
import { WebSocket, devDependency, waitFor } from "./harness.js";

const { WebSocketServer } = devDependency("ws");

/** A peer that records every frame the client sends and lets the test answer. */
async function scriptedPeer(t) {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.once("listening", resolve));
  const peer = { frames: [], socket: null };
  server.on("connection", (socket) => {
    peer.socket = socket;
    socket.on("message", (data) => peer.frames.push(JSON.parse(data.toString())));
    socket.send(JSON.stringify({ type: "welcome", id: "n.1", heartbeat_ms: 25_000 }));
  });
  peer.url = `ws://127.0.0.1:${server.address().port}/ws`;
  peer.send = (frame) => peer.socket.send(JSON.stringify(frame));
  peer.next = async (type) => {
    const frame = await waitFor(() => peer.frames.find((f) => f.type === type && !f.seen), { what: `a ${type} frame` });
    frame.seen = true;
    return frame;
  };
  t.after(() => {
    for (const client of server.clients) client.terminate();
    return new Promise((resolve) => server.close(resolve));
  });
  return peer;
}

const message = (room, offset) => ({ type: "message", room, from: "n.2", content: offset, time: 1, offset });

test("insufficient_state: the client re-joins from its position on the same connection; no duplicate reaches the handler", async (t) => {
  const peer = await scriptedPeer(t);
  const hub = new WshubClient(peer.url, { WebSocket });
  t.after(() => hub.close());
  await hub.connect();
  const got = [];
  const joining = hub.join("chat:1", (m) => got.push(m.offset));
  const join = await peer.next("join");
  assert.equal(join.since, undefined, "a first join has no position");
  peer.send({ type: "ack", ref: join.ref, offset: 10, epoch: "e1" });
  const sub = await joining;
  const rejoins = [];
  sub.on("joined", (info) => rejoins.push(info));
  peer.send(message("chat:1", 11));
  peer.send(message("chat:1", 12));
  peer.send({ type: "system", event: "unsubscribed", room: "chat:1", reason: "insufficient_state" });
  const rejoin = await peer.next("join");
  assert.deepEqual(rejoin.since, { offset: 12, epoch: "e1" });
  peer.send({ type: "ack", ref: rejoin.ref, offset: 14, epoch: "e1", recovered: true });
  for (const offset of [12, 13, 14, 15]) peer.send(message("chat:1", offset));
  await waitFor(() => got.length === 5, { what: "the recovered messages" });
  assert.deepEqual(got, [11, 12, 13, 14, 15], "offset 12 came twice and reached the handler once");
  assert.deepEqual(rejoins, [{ room: "chat:1", recovered: true, offset: 14, epoch: "e1" }]);
  assert.deepEqual(sub.position, { offset: 15, epoch: "e1" });
  assert.equal(hub.id, "n.1", "the same connection");
});

test("the server takes the client out of a room and a backend puts it back: unsubscribed, then joined", async (t) => {
  const peer = await scriptedPeer(t);
  const hub = new WshubClient(peer.url, { WebSocket });
  t.after(() => hub.close());
  await hub.connect();
  const got = [];
  const joining = hub.join("orders:1", (m) => got.push(m.content));
  peer.send({ type: "ack", ref: (await peer.next("join")).ref });
  const sub = await joining;
  const events = [];
  sub.on("unsubscribed", (info) => events.push(["unsubscribed", info.reason]));
  sub.on("joined", (info) => events.push(["joined", info.recovered]));
  peer.send({ type: "system", event: "unsubscribed", room: "orders:1", reason: "permission_revoked" });
  await waitFor(() => events.length === 1, { what: "unsubscribed" });
  assert.equal(sub.state, "unsubscribed");
  await assert.rejects(sub.publish(1), { code: "not_joined" });
  peer.send({ type: "system", event: "subscribed", room: "orders:1" });
  peer.send({ type: "message", room: "orders:1", from: "server", content: "back", time: 1 });
  await waitFor(() => got.length === 1, { what: "the message after the re-subscribe" });
  assert.deepEqual(events, [
    ["unsubscribed", "permission_revoked"],
    ["joined", undefined],
  ]);
  const others = [];
  hub.on("subscribed", (info) => others.push(info.room));
  hub.on("message", (m) => others.push(m.content));
  peer.send({ type: "system", event: "subscribed", room: "orders:2" });
  peer.send({ type: "message", room: "orders:2", from: "server", content: "elsewhere", time: 1 });
  await waitFor(() => others.length === 2, { what: "the hub-level events" });
  assert.deepEqual(others, ["orders:2", "elsewhere"]);
});

test("leaving while the join is in flight sends the leave after it, and nothing reaches the handler", async (t) => {
  const peer = await scriptedPeer(t);
  const hub = new WshubClient(peer.url, { WebSocket });
  t.after(() => hub.close());
  await hub.connect();
  const joining = hub.join("chat:2", () => assert.fail("left before the ack"));
  joining.catch(() => {});
  const join = await peer.next("join");
  const leaving = hub.subscription("chat:2").leave();
  const leave = await peer.next("leave");
  assert.ok(Number(leave.ref) > Number(join.ref));
  await assert.rejects(joining, { code: "left" });
  peer.send({ type: "ack", ref: join.ref });
  peer.send({ type: "ack", ref: leave.ref });
  await leaving;
  assert.equal(hub.subscription("chat:2"), undefined);
});

test("a backend's subscribe into a room with history gives the subscription the room's position", async (t) => {
  const peer = await scriptedPeer(t);
  const hub = new WshubClient(peer.url, { WebSocket });
  t.after(() => hub.close());
  await hub.connect();
  const got = [];
  const joining = hub.join("chat:h", (m) => got.push(m.offset));
  peer.send({ type: "ack", ref: (await peer.next("join")).ref, offset: 3, epoch: "e1" });
  const sub = await joining;
  const joined = [];
  sub.on("joined", (info) => joined.push(info));
  peer.send({ type: "system", event: "unsubscribed", room: "chat:h", reason: "server" });
  peer.send({ type: "system", event: "subscribed", room: "chat:h", offset: 9, epoch: "e2" });
  await waitFor(() => joined.length === 1, { what: "joined" });
  assert.deepEqual(joined, [{ room: "chat:h", recovered: undefined, offset: 9, epoch: "e2" }]);
  assert.deepEqual(sub.position, { offset: 9, epoch: "e2" });
  peer.send(message("chat:h", 10));
  await waitFor(() => got.length === 1, { what: "the next message" });
  assert.deepEqual(got, [10]);
  // The node missed some later: the re-join asks from the backend's position onwards.
  peer.send({ type: "system", event: "unsubscribed", room: "chat:h", reason: "insufficient_state" });
  assert.deepEqual((await peer.next("join")).since, { offset: 10, epoch: "e2" });
});
