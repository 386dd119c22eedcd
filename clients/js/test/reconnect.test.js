// Surviving failures by itself: a server killed and restarted, a network cut
// under a live stream, a draining server's hint, and a stopped server a
// browser could not see.

import assert from "node:assert/strict";
import { test } from "node:test";

import { WshubClient } from "../src/index.js";
import { Server, WebSocket, record, relay, sleep, waitFor } from "./harness.js";

const HISTORY = `
[permissions.namespaces.chat]
join = "anyone"
publish = "anyone"
history_size = 1000
history_ttl = "5m"
`;

const FAST = { WebSocket, minReconnectDelayMs: 50, maxReconnectDelayMs: 400 };

test("SIGKILL and a restart on the same port: it reconnects and re-joins by itself; recovered is false (a new epoch)", async (t) => {
  const server = await Server.start({ config: HISTORY });
  t.after(() => server.kill());
  const hub = new WshubClient(server.url, FAST);
  t.after(() => hub.close());
  await hub.connect();
  const firstId = hub.id;
  const received = [];
  const sub = await hub.join("chat:restart", (message) => received.push(message.content));
  const rejoins = [];
  sub.on("joined", (info) => rejoins.push(info));
  await server.publish("chat:restart", "before");
  await waitFor(() => received.length === 1, { what: "the first message" });

  await server.kill();
  await waitFor(() => hub.state !== "connected", { what: "the client to notice" });
  await server.restart();
  await waitFor(() => rejoins.length === 1, { timeoutMs: 15_000, what: "the re-join" });
  assert.equal(rejoins[0].recovered, false, "memory history restarted with a new epoch");
  assert.notEqual(rejoins[0].epoch, sub.joined.epoch);
  assert.notEqual(hub.id, firstId);
  await server.publish("chat:restart", "after");
  await waitFor(() => received.length === 2, { what: "the message after the restart" });
  assert.deepEqual(received, ["before", "after"]);
});

test("a network cut under a live stream: every number arrives exactly once, in order, recovered", async (t) => {
  const server = await Server.start({ config: HISTORY });
  t.after(() => server.kill());
  const path = await relay(server.port);
  t.after(() => path.close());
  const hub = new WshubClient(path.url, FAST);
  t.after(() => hub.close());
  const seen = record(hub);
  await hub.connect();
  const received = [];
  const sub = await hub.join("chat:stream", (message) => received.push(message.content.n));
  const rejoins = [];
  sub.on("joined", (info) => rejoins.push(info));

  const total = 300;
  for (let n = 1; n <= total; n++) {
    await server.publish("chat:stream", { n });
    if (n % 100 === 50) path.sever();
    if (n % 10 === 0) await sleep(5);
  }
  await waitFor(() => received.length >= total, { timeoutMs: 20_000, what: `${total} messages` });
  await sleep(100);
  assert.deepEqual(
    received,
    Array.from({ length: total }, (_, i) => i + 1),
  );
  assert.equal(seen.disconnects.length, 3, "three cuts");
  assert.equal(rejoins.length, 3);
  assert.ok(
    rejoins.every((info) => info.recovered === true),
    JSON.stringify(rejoins),
  );
});

test("a draining server's reconnect_after_ms is the delay before the next attempt", async (t) => {
  const config = `shutdown_reconnect_jitter = "1500ms"\n${HISTORY}`;
  const server = await Server.start({ config });
  t.after(() => server.kill());
  const hub = new WshubClient(server.url, { ...FAST, minReconnectDelayMs: 10, maxReconnectDelayMs: 20 });
  t.after(() => hub.close());
  const seen = record(hub);
  let hint;
  hub.on("system", (frame) => {
    if (frame.event === "shutdown") hint = frame.reconnect_after_ms;
  });
  await hub.connect();
  await hub.join("chat:drain", () => {});
  server.signal("SIGTERM");
  await waitFor(() => seen.disconnects.length === 1, { what: "the shutdown close" });
  const [ended] = seen.disconnects;
  assert.equal(ended.code, 1001);
  assert.equal(typeof hint, "number");
  assert.equal(ended.reconnectInMs, hint, "the server's hint, not the backoff");
  await server.exited;
  await server.restart();
  await waitFor(() => hub.state === "connected", { timeoutMs: 15_000, what: "the reconnect" });
  const attempt = seen.states.find((s) => s.state === "connecting" && s.at >= ended.at);
  assert.ok(attempt.at - ended.at >= hint - 5, `attempted after ${attempt.at - ended.at} ms, hint ${hint} ms`);
});

test("a stopped server (SIGSTOP) is noticed within heartbeat + margin, and the client is back after SIGCONT", async (t) => {
  const config = `[transport]\nheartbeat_interval = "1s"\nheartbeat_timeout = "30s"\n${HISTORY}`;
  const server = await Server.start({ config });
  t.after(async () => {
    server.signal("SIGCONT");
    await server.kill();
  });
  const hub = new WshubClient(server.url, { ...FAST, livenessMarginMs: 1000, timeoutMs: 1500 });
  t.after(() => hub.close());
  const seen = record(hub);
  const welcome = await hub.connect();
  assert.equal(welcome.heartbeat_ms, 1000);
  await hub.join("chat:stop", () => {});
  const firstId = hub.id;
  server.signal("SIGSTOP");
  const stoppedAt = Date.now();
  await waitFor(() => seen.disconnects.length >= 1, { timeoutMs: 5_000, what: "the silence to be noticed" });
  const noticedAfter = seen.disconnects[0].at - stoppedAt;
  assert.ok(noticedAfter <= 1000 + 1000 + 300, `noticed after ${noticedAfter} ms`);
  assert.match(seen.disconnects[0].reason, /silent/);
  await sleep(500);
  server.signal("SIGCONT");
  await waitFor(() => hub.state === "connected" && hub.id !== firstId, {
    timeoutMs: 10_000,
    what: "the reconnect after SIGCONT",
  });
});
