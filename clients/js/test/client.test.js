// The everyday surface against the real binary: connect, join, publish,
// acks and the server's error codes, history, presence, and what a call does
// while the client is not connected.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { WshubClient, WshubError } from "../src/index.js";
import { Server, WebSocket, record, waitFor } from "./harness.js";

const CONFIG = `
[permissions.namespaces.chat]
join = "anyone"
publish = "anyone"
history_size = 100
history_ttl = "5m"
presence = true
join_leave = true

[permissions.namespaces.readonly]
join = "anyone"
publish = "nobody"
`;

describe("wshub-client against a running wshub", () => {
  let server;
  const clients = [];
  const client = (options = {}) => {
    const hub = new WshubClient(server.url, { WebSocket, ...options });
    clients.push(hub);
    return hub;
  };

  before(async () => {
    server = await Server.start({ config: CONFIG });
  });
  after(async () => {
    for (const hub of clients) hub.close();
    await server.kill();
  });

  test("connect resolves on welcome; states go connecting → connected → closed", async () => {
    const hub = client();
    const seen = record(hub);
    assert.equal(hub.state, "disconnected");
    const welcome = await hub.connect();
    assert.equal(welcome.type, "welcome");
    assert.equal(hub.state, "connected");
    assert.equal(hub.id, welcome.id);
    assert.match(hub.id, /^[A-Za-z0-9_-]+\.\d+$/);
    hub.close();
    assert.deepEqual(
      seen.states.map((s) => s.state),
      ["connecting", "connected", "closed"],
    );
    assert.equal(hub.id, undefined);
  });

  test("join, publish and receive: acks resolve, messages carry room, from, time and offset", async () => {
    const alice = client();
    const bob = client();
    await Promise.all([alice.connect(), bob.connect()]);
    const received = [];
    const bobSub = await bob.join("chat:everyday", (message) => received.push(message));
    assert.equal(bobSub.state, "joined");
    assert.equal(bobSub.joined.recovered, undefined, "a first join recovers nothing");
    assert.equal(typeof bobSub.joined.epoch, "string");
    const aliceSub = await alice.join("chat:everyday", () => assert.fail("the publisher never gets its own message"));
    assert.deepEqual(await aliceSub.publish({ text: "hi" }), { type: "ack", ref: "2" });
    await waitFor(() => received.length === 1, { what: "bob's message" });
    const [message] = received;
    assert.equal(message.room, "chat:everyday");
    assert.equal(message.from, alice.id);
    assert.deepEqual(message.content, { text: "hi" });
    assert.equal(typeof message.time, "number");
    assert.equal(message.offset, bobSub.joined.offset + 1);
  });

  test("refusals reject with the server's code and reason; the connection stays usable", async () => {
    const hub = client();
    await hub.connect();
    await assert.rejects(hub.join("bad room!", () => {}), (err) => {
      assert.ok(err instanceof WshubError);
      assert.equal(err.code, "room_invalid");
      return true;
    });
    const readonly = await hub.join("readonly:news", () => {});
    await assert.rejects(readonly.publish("x"), { code: "forbidden", reason: "not_allowed" });
    await assert.rejects(hub.publish("chat:not-joined", 1), { code: "not_joined" });
    await assert.rejects(hub.join("readonly:news", () => {}), { code: "already_joined" });
    await readonly.leave();
    assert.equal(readonly.state, "left");
    await assert.rejects(readonly.publish("x"), { code: "not_joined" });
    const again = await hub.join("readonly:news", () => {});
    assert.equal(again.state, "joined", "a room left can be joined again");
    assert.equal(hub.state, "connected");
  });

  test("history and presence answer with the server's data", async () => {
    const alice = client();
    const bob = client();
    await Promise.all([alice.connect(), bob.connect()]);
    const sub = await alice.join("chat:stored", () => {});
    const bobJoins = [];
    sub.on("join", (who) => bobJoins.push(who));
    await bob.join("chat:stored", () => {});
    for (const n of [1, 2, 3]) await sub.publish({ n });
    const history = await bob.history("chat:stored", { limit: 2 });
    assert.deepEqual(
      history.messages.map((m) => m.content.n),
      [2, 3],
    );
    assert.equal(history.offset, sub.joined.offset + 3);
    const presence = await alice.presence("chat:stored");
    assert.deepEqual(presence.members.map((m) => m.id).sort(), [alice.id, bob.id].sort());
    assert.deepEqual(await alice.presenceStats("chat:stored"), {
      room: "chat:stored",
      connections: 2,
      users: 0,
    });
    await waitFor(() => bobJoins.length === 1, { what: "the join event" });
    assert.equal(bobJoins[0].id, bob.id);
  });

  test("while not connected, publish rejects with `disconnected` and nothing is queued", async () => {
    const hub = client({ minReconnectDelayMs: 60_000, maxReconnectDelayMs: 60_000 });
    const seen = record(hub);
    await hub.connect();
    const sub = await hub.join("chat:offline", () => {});
    await fetch(`${server.admin}/api/disconnect`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ connection: hub.id, code: 4000, reason: "test" }),
    });
    await waitFor(() => hub.state === "disconnected", { what: "the disconnect" });
    assert.equal(seen.disconnects[0].code, 4000, "4000-4499 from a backend: reconnect");
    await assert.rejects(sub.publish("lost?"), { code: "disconnected" });
    await assert.rejects(hub.history("chat:offline"), { code: "disconnected" });
    hub.close();
    await assert.rejects(sub.publish("lost?"), { code: "closed" });
  });

  test("a backend's 4500-4999 close is final: closed, no further attempt", async () => {
    const hub = client({ minReconnectDelayMs: 10, maxReconnectDelayMs: 20 });
    const seen = record(hub);
    await hub.connect();
    const before = await server.metric("wshub_connections_total");
    await fetch(`${server.admin}/api/disconnect`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ connection: hub.id, code: 4500, reason: "banned" }),
    });
    await waitFor(() => hub.state === "closed", { what: "the final close" });
    assert.equal(seen.closed[0].code, 4500);
    assert.equal(seen.disconnects.length, 0);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(await server.metric("wshub_connections_total"), before, "no reconnect attempt");
  });

  test("an application ping is answered with a pong", async () => {
    const socket = new WebSocket(server.url);
    const frames = [];
    socket.on("message", (data) => frames.push(JSON.parse(data.toString())));
    await new Promise((resolve) => socket.once("open", resolve));
    socket.send(JSON.stringify({ type: "ping", ref: "p" }));
    await waitFor(() => frames.length === 2, { what: "the pong" });
    assert.deepEqual(frames[1], { type: "pong", ref: "p" });
    socket.close();

    const hub = client();
    await hub.connect();
    const pong = await hub.request({ type: "ping" });
    assert.equal(pong.type, "pong", "a ping through the client resolves on its pong");
  });
});
