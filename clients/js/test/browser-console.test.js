// The server's web console in real headless Chromium (Debian's `chromium`,
// driven by puppeteer-core): it loads with no console error and no failed
// request, shows the node's live figures, and its "try it" panel runs
// wshub-client in the browser against the node's WebSocket endpoint.

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { WshubClient } from "../src/index.js";
import { Server, WebSocket, devDependency, waitFor } from "./harness.js";

const puppeteer = devDependency("puppeteer-core");
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const SCREENSHOT = path.join(process.env.CARGO_TARGET_DIR ?? path.join(repo, "target"), "console", "console.png");

/** The system Chromium: `CHROMIUM`, or `chromium` on the PATH (Debian's package). */
function chromium() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  const found = (process.env.PATH ?? "")
    .split(path.delimiter)
    .map((dir) => path.join(dir, "chromium"))
    .find((file) => existsSync(file));
  assert.ok(found, "chromium is installed (apt-get install chromium; .ci/run does it)");
  return found;
}

let browser;
before(async () => {
  browser = await puppeteer.launch({
    executablePath: chromium(),
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic"],
    defaultViewport: { width: 1100, height: 900 },
  });
});
after(() => browser?.close());

/** A page that records every console error, page error and failed request. */
async function openConsole(url) {
  const page = await browser.newPage();
  const problems = [];
  const urls = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("requestfailed", (request) => problems.push(`failed: ${request.url()} ${request.failure()?.errorText}`));
  page.on("request", (request) => urls.push(request.url()));
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.url()}`);
  });
  await page.goto(url, { waitUntil: "load" });
  return { page, problems, urls };
}

const text = (page, selector) => page.$eval(selector, (element) => element.textContent);

async function clients(server, count) {
  const all = [];
  for (let i = 0; i < count; i++) {
    const hub = new WshubClient(server.url, { WebSocket });
    await hub.connect();
    all.push(hub);
  }
  return all;
}

test("the console shows live figures and its try-it panel joins, receives and publishes", async (t) => {
  const server = await Server.start();
  t.after(() => server.kill());
  const connected = await clients(server, 3);
  t.after(() => connected.forEach((hub) => hub.close()));

  const { page, problems, urls } = await openConsole(`${server.admin}/`);
  await page.waitForFunction(() => document.querySelector('[data-stat="connections"]').textContent === "3", {
    timeout: 10_000,
  });
  const rss = Number(await text(page, '[data-stat="rss_bytes"]'));
  assert.ok(rss > 1_000_000, `rss_bytes ${rss}`);
  assert.equal(await text(page, '[data-stat="rooms"]'), "0");

  // Try it: the page joins "lobby" through wshub-client in the browser.
  await page.$eval('[data-try="room"]', (input) => (input.value = "lobby"));
  await page.click('[data-try="join"]');
  await waitFor(async () => (await server.stats()).largest_rooms.some((r) => r.room === "lobby"), {
    what: "the page to join lobby",
  });

  const [other] = connected;
  const heard = [];
  const sub = await other.join("lobby", (message) => heard.push(message.content));
  await sub.publish({ hello: "from node" });
  await page.waitForFunction(
    () => [...document.querySelectorAll('[data-try="log"] li')].some((li) => li.textContent === '{"hello":"from node"}'),
    { timeout: 10_000 },
  );

  await page.type('[data-try="message"]', "hi from chromium");
  await page.click('[data-try="publish"]');
  await waitFor(() => heard.includes("hi from chromium"), { what: "the page's message" });

  // Deliveries per second follow the node's counters.
  for (let n = 0; n < 50; n++) await server.publish("lobby", { n });
  await page.waitForFunction(
    () => Number(document.querySelector('[data-stat="deliveries_per_second"]').textContent) > 0,
    { timeout: 5_000 },
  );
  assert.equal(await text(page, '[data-stat="connections"]'), "4", "the page's own connection counts");
  assert.equal(await text(page, '[data-stat="rooms"]'), "1");

  mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.deepEqual(problems, []);
  assert.ok(
    urls.every((url) => url.startsWith(server.admin) || url.startsWith("data:")),
    `a request left the node: ${urls.join(", ")}`,
  );

  // The browser's own network signal: offline drops the socket at once
  // (no waiting for a liveness timeout), online brings it back.
  const tryState = () => text(page, '[data-try="state"]');
  await page.setOfflineMode(true);
  await page.waitForFunction(() => document.querySelector('[data-try="state"]').textContent !== "connected", {
    timeout: 2_000,
  });
  assert.notEqual(await tryState(), "closed");
  await page.setOfflineMode(false);
  await page.waitForFunction(() => document.querySelector('[data-try="state"]').textContent === "connected", {
    timeout: 10_000,
  });
});

test("with api.key set the console asks for the key and sends it as X-API-Key, never in a URL", async (t) => {
  const key = "console-test-key-0123456789";
  const server = await Server.start({ config: `[api]\nkey = "${key}"` });
  t.after(() => server.kill());
  const { page, urls } = await openConsole(`${server.admin}/`);
  await page.waitForSelector("#key-form:not([hidden])", { timeout: 10_000 });
  assert.equal(await text(page, '[data-stat="connections"]'), "–");
  const sentKeys = [];
  page.on("request", (request) => sentKeys.push(request.headers()["x-api-key"]));
  await page.type("#key", key);
  await page.click('#key-form button[type="submit"]');
  await page.waitForFunction(() => document.querySelector('[data-stat="connections"]').textContent === "0", {
    timeout: 10_000,
  });
  assert.ok(sentKeys.includes(key));
  assert.ok(urls.every((url) => !url.includes(key)));
  await page.close();
});
