// Tokens: refreshed on the same connection before they expire; a token that
// expires with nobody to renew it ends the client for good; a refused
// upgrade is final without getToken and retried with a fresh token with it.

import assert from "node:assert/strict";
import { test } from "node:test";

import { WshubClient } from "../src/index.js";
import { Server, WebSocket, jwt, record, sleep, waitFor } from "./harness.js";

const SECRET = "js-client-test-secret-js-client-test-secret";
const JWT = `
[auth]
mode = "jwt"
secret = "${SECRET}"
expiry_warning = "2s"

[permissions.namespaces.chat]
join = "authenticated"
publish = "authenticated"
`;

test("token_expiring: getToken is asked and refresh keeps the same connection past the first token's exp", async (t) => {
  const server = await Server.start({ config: JWT });
  t.after(() => server.kill());
  let asked = 0;
  const firstExp = Math.floor(Date.now() / 1000) + 3;
  const hub = new WshubClient(server.url, {
    WebSocket,
    getToken: async () => {
      asked += 1;
      return jwt(SECRET, "alice", 3);
    },
  });
  t.after(() => hub.close());
  const seen = record(hub);
  const welcome = await hub.connect();
  assert.equal(welcome.user, "alice");
  const sub = await hub.join("chat:refresh", () => {});
  while (Date.now() < (firstExp + 1.5) * 1000) await sleep(100);
  assert.equal(hub.state, "connected");
  assert.equal(hub.id, welcome.id, "the same connection");
  assert.equal(seen.disconnects.length, 0);
  assert.ok(asked >= 2, `getToken asked ${asked} times`);
  assert.deepEqual(seen.errors, []);
  await sub.publish("still here");
});

test("a token that expires without getToken ends in closed, with no further attempt", async (t) => {
  const server = await Server.start({ config: JWT });
  t.after(() => server.kill());
  const hub = new WshubClient(server.url, {
    WebSocket,
    token: jwt(SECRET, "bob", 3),
    minReconnectDelayMs: 10,
    maxReconnectDelayMs: 20,
  });
  t.after(() => hub.close());
  const seen = record(hub);
  let warned = 0;
  hub.on("token_expiring", () => warned++);
  await hub.connect();
  await waitFor(() => hub.state === "closed", { timeoutMs: 8_000, what: "the 4001 close" });
  assert.equal(warned, 1);
  assert.equal(seen.closed[0].code, 4001);
  assert.equal(seen.closed[0].error.code, "token_expired");
  assert.equal(seen.disconnects.length, 0);
  await sleep(500);
  assert.equal(await server.metric("wshub_connections_total"), 1, "one connection, never retried");
});

test("an upgrade refused with 401: final without getToken, retried with a fresh token with it", async (t) => {
  const server = await Server.start({ config: JWT });
  t.after(() => server.kill());
  const expired = jwt(SECRET, "carol", -60);
  const fixed = new WshubClient(server.url, { WebSocket, token: expired, minReconnectDelayMs: 10 });
  t.after(() => fixed.close());
  await assert.rejects(fixed.connect(), { code: "unauthorized" });
  assert.equal(fixed.state, "closed");

  let asked = 0;
  const renewing = new WshubClient(server.url, {
    WebSocket,
    token: expired,
    getToken: async () => {
      asked += 1;
      return jwt(SECRET, "carol", 60);
    },
    minReconnectDelayMs: 10,
  });
  t.after(() => renewing.close());
  const seen = record(renewing);
  const welcome = await renewing.connect();
  assert.equal(welcome.user, "carol");
  assert.equal(asked, 1);
  assert.equal(seen.disconnects[0].status, 401);
});
