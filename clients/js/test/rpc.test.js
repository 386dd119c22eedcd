// rpc over the open socket: the real binary with its rpc hook pointed at the
// documented Node backend (docs/examples/proxy_backend.mjs).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { WshubClient, WshubError } from "../src/index.js";
import { Server, WebSocket } from "./harness.js";

const example = path.join(path.dirname(fileURLToPath(import.meta.url)), "../../../docs/examples/proxy_backend.mjs");

async function startBackend(t) {
  const child = spawn(process.execPath, [example, "0"], { stdio: ["ignore", "pipe", "inherit"] });
  t.after(() => child.kill());
  const [line] = await once(child.stdout, "data");
  const address = /listening on (\S+)/.exec(line.toString())?.[1];
  assert.ok(address, `the backend printed ${line}`);
  return `http://${address}`;
}

test("hub.rpc resolves with the backend's data and rejects with its error code", async (t) => {
  const backend = await startBackend(t);
  const server = await Server.start({ config: `[proxy.rpc]\nurl = "${backend}/wshub/rpc"\n` });
  t.after(() => server.kill());
  const hub = new WshubClient(server.url, { WebSocket });
  t.after(() => hub.close());
  await hub.connect();

  assert.equal(await hub.rpc("sum", [1, 2, 39]), 42);
  await assert.rejects(hub.rpc("nope"), (err) => err instanceof WshubError && err.code === "no_such_method");
});
