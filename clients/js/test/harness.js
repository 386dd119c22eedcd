// Test harness: runs the real `wshub` binary on free loopback ports, a TCP
// relay that a test can sever, and small helpers. Every wait is bounded.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../../..");

/** The `wshub` binary under test: `WSHUB_BIN`, or the workspace's debug build. */
export const WSHUB_BIN = process.env.WSHUB_BIN ?? path.join(repo, "target/debug/wshub");

/** Loads a dev dependency: from `WSHUB_NODE_MODULES` (what `cargo xtask test` installs under target/) or this package's own node_modules. */
export function devDependency(name) {
  return devRequire()(name);
}

/** Where a dev dependency's file is (e.g. `typescript/package.json`). */
export function devDependencyPath(specifier) {
  return devRequire().resolve(specifier);
}

function devRequire() {
  const from = process.env.WSHUB_NODE_MODULES
    ? path.join(process.env.WSHUB_NODE_MODULES, "..", "package.json")
    : path.join(here, "..", "package.json");
  return createRequire(from);
}

export const WebSocket = devDependency("ws");

export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor(check, { timeoutMs = 10_000, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * A running `wshub` process. `config` is TOML appended to the harness's own
 * (listen addresses); `port`/`adminPort` pin the ports (for restarts).
 */
export class Server {
  static async start({ config = "", port, adminPort } = {}) {
    const server = new Server(config, port ?? (await freePort()), adminPort ?? (await freePort()));
    await server.#spawn();
    return server;
  }

  #config;
  #child = null;
  #log = [];

  constructor(config, port, adminPort) {
    this.#config = config;
    this.port = port;
    this.adminPort = adminPort;
    this.url = `ws://127.0.0.1:${port}/ws`;
    this.admin = `http://127.0.0.1:${adminPort}`;
  }

  async #spawn() {
    const dir = mkdtempSync(path.join(tmpdir(), "wshub-js-"));
    const file = path.join(dir, "wshub.toml");
    writeFileSync(
      file,
      `listen = "127.0.0.1:${this.port}"\n${this.#config}\n[admin]\nlisten = "127.0.0.1:${this.adminPort}"\n`,
    );
    const child = spawn(WSHUB_BIN, ["--config", file], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, WSHUB_LOG__LEVEL: "warn" },
    });
    this.#child = child;
    const keep = (chunk) => {
      this.#log.push(chunk.toString());
      if (this.#log.length > 200) this.#log.shift();
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    const exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    this.exited = exited;
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`wshub exited (${child.exitCode}):\n${this.#log.join("")}`);
        try {
          return (await fetch(`${this.admin}/readyz`)).status === 200;
        } catch {
          return false;
        }
      },
      { timeoutMs: 15_000, what: "wshub to be ready" },
    );
  }

  /** Starts the same configuration again on the same ports (after a kill). */
  async restart() {
    await this.#spawn();
  }

  signal(name) {
    this.#child?.kill(name);
  }

  async kill() {
    if (!this.#child || this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    this.#child.kill("SIGKILL");
    await this.exited;
  }

  get log() {
    return this.#log.join("");
  }

  async stats() {
    const answer = await fetch(`${this.admin}/debug/stats`);
    return answer.json();
  }

  async metric(name) {
    const text = await (await fetch(`${this.admin}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.split(" ")[1]);
  }

  /** Publishes through the HTTP API, as a backend would. */
  async publish(room, content) {
    const answer = await fetch(`${this.admin}/api/publish`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ room, content }),
    });
    if (answer.status !== 200) throw new Error(`publish answered ${answer.status}: ${await answer.text()}`);
    return answer.json();
  }
}

/** A TCP relay on a loopback port to `targetPort`; `sever()` cuts every connection through it at once. */
export async function relay(targetPort) {
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ]) {
      sockets.add(a);
      a.on("error", () => b.destroy());
      a.on("close", () => {
        sockets.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    get connections() {
      return sockets.size / 2;
    },
    sever() {
      for (const socket of sockets) socket.destroy();
    },
    close() {
      this.sever();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** An HS256 JWT for `sub` expiring in `ttlSeconds`. */
export function jwt(secret, sub, ttlSeconds) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub, iat: now, exp: now + ttlSeconds })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** Records a client's state changes and lifecycle events for assertions. */
export function record(hub) {
  const seen = { states: [], disconnects: [], closed: [], errors: [] };
  hub.on("state", (state) => seen.states.push({ state, at: Date.now() }));
  hub.on("disconnected", (info) => seen.disconnects.push({ ...info, at: Date.now() }));
  hub.on("closed", (info) => seen.closed.push(info));
  hub.on("error", (err) => seen.errors.push(err));
  return seen;
}
