// The wshub web console: live figures from this node's /debug/stats, and a
// "try it" panel that talks to the node's WebSocket endpoint through
// wshub-client. Everything comes from this listener; nothing from elsewhere.

import { WshubClient } from "/client/index.js";

const KEY_STORAGE = "wshub-console-api-key";
const HISTORY = 120;
const $ = (id) => document.getElementById(id);
const stat = (name) => document.querySelector(`[data-stat="${name}"]`);

const samples = [];
let previous = null;
let endpoint = null;

function showStatus(text, ok) {
  const status = $("status");
  status.textContent = text;
  status.className = `pill ${ok ? "ok" : "bad"}`;
}

async function poll() {
  const headers = {};
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers["X-API-Key"] = key;
  let answer;
  try {
    answer = await fetch("/debug/stats", { headers, cache: "no-store" });
  } catch {
    showStatus("node unreachable", false);
    return;
  }
  if (answer.status === 401) {
    $("key-form").hidden = false;
    showStatus(key ? "wrong API key" : "API key needed", false);
    return;
  }
  if (!answer.ok) {
    showStatus(`stats answered ${answer.status}`, false);
    return;
  }
  $("key-form").hidden = true;
  render(await answer.json());
}

function render(stats) {
  const now = performance.now();
  let published = 0;
  let delivered = 0;
  if (previous) {
    const seconds = Math.max((now - previous.at) / 1000, 0.001);
    published = Math.max(0, stats.messages_published_total - previous.stats.messages_published_total) / seconds;
    delivered = Math.max(0, stats.messages_delivered_total - previous.stats.messages_delivered_total) / seconds;
  }
  previous = { at: now, stats };
  showStatus(`up ${formatDuration(stats.uptime_seconds)}`, true);
  $("node").textContent = `node ${stats.node}`;
  stat("connections").textContent = String(stats.connections);
  stat("rooms").textContent = String(stats.rooms);
  stat("messages_per_second").textContent = String(Math.round(published));
  stat("deliveries_per_second").textContent = String(Math.round(delivered));
  stat("slow_consumer_disconnects").textContent = String(stats.slow_consumer_disconnects);
  stat("queued_bytes").textContent = String(stats.queued_bytes_total);
  stat("rss_bytes").textContent = String(stats.process_rss_bytes);
  stat("rss_bytes").title = formatBytes(stats.process_rss_bytes);

  const rows = stats.largest_rooms.map((room) => {
    const row = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = room.room;
    const members = document.createElement("td");
    members.textContent = String(room.members);
    row.append(name, members);
    return row;
  });
  $("rooms").replaceChildren(...rows);

  samples.push({ published, delivered, connections: stats.connections });
  if (samples.length > HISTORY) samples.shift();
  drawChart();

  if (!endpoint) {
    endpoint = stats.websocket;
    const url = $("try-url");
    if (!url.value) {
      const scheme = endpoint.tls ? "wss" : "ws";
      url.value = `${scheme}://${location.hostname}:${endpoint.port}${endpoint.path}`;
    }
  }
}

function drawChart() {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== width * ratio) {
    canvas.width = width * ratio;
    canvas.height = height * ratio;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.strokeStyle = "#e5e7eb";
  ctx.lineWidth = 1;
  for (let i = 1; i < 4; i++) {
    const y = Math.round((height * i) / 4) + 0.5;
    ctx.beginPath();
    ctx.moveTo(0, y);
    ctx.lineTo(width, y);
    ctx.stroke();
  }
  const rateTop = Math.max(1, ...samples.map((s) => Math.max(s.published, s.delivered)));
  const connTop = Math.max(1, ...samples.map((s) => s.connections));
  const series = [
    ["published", "#2563eb", rateTop],
    ["delivered", "#15803d", rateTop],
    ["connections", "#b45309", connTop],
  ];
  const step = width / (HISTORY - 1);
  const offset = HISTORY - samples.length;
  for (const [field, color, top] of series) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    samples.forEach((sample, i) => {
      const x = (offset + i) * step;
      const y = height - 4 - (sample[field] / top) * (height - 12);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#66707a";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "left";
  ctx.fillText(`${Math.round(rateTop)}/s`, 4, 12);
  ctx.textAlign = "right";
  ctx.fillText(`${connTop} conn`, width - 4, 12);
}

function formatDuration(seconds) {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h`;
}

function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

// ---- try it ----

let client = null;
let clientUrl = "";
let subscription = null;

// Received messages only: each one's content, as text.
function log(text) {
  const item = document.createElement("li");
  item.textContent = text;
  $("try-log").append(item);
  item.scrollIntoView({ block: "nearest" });
}

// What this page did (joined, sent, refused).
function note(text) {
  $("try-note").textContent = text;
}

function describe(content) {
  return typeof content === "string" ? content : JSON.stringify(content);
}

async function join() {
  const room = $("try-room").value.trim();
  const url = $("try-url").value.trim();
  if (!client || clientUrl !== url) {
    client?.close();
    const token = $("try-token").value.trim();
    client = new WshubClient(url, token ? { token } : {});
    clientUrl = url;
    client.on("state", (state) => {
      $("try-state").textContent = state;
      $("try-publish").disabled = !(state === "connected" && subscription);
    });
    client.on("message", (message) => log(describe(message.content)));
    client.on("error", (err) => note(`error: ${err.code ?? ""} ${err.message ?? err}`));
  }
  try {
    await subscription?.leave();
    subscription = await client.join(room, (message) => log(describe(message.content)));
    $("try-publish").disabled = false;
    note(`joined ${room}`);
  } catch (err) {
    note(`join refused: ${err.code ?? ""} ${err.message ?? err}`);
  }
}

async function publish() {
  const input = $("try-message");
  let content = input.value;
  try {
    content = JSON.parse(content);
  } catch {
    // Plain text is sent as a JSON string.
  }
  try {
    await subscription.publish(content);
    note(`sent ${describe(content)}`);
    input.value = "";
  } catch (err) {
    note(`publish refused: ${err.code ?? ""} ${err.message ?? err}`);
  }
}

$("try-join").addEventListener("click", join);
$("try-publish").addEventListener("click", publish);
$("try-message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !$("try-publish").disabled) publish();
});
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("key").value);
  $("key").value = "";
  poll();
});

poll();
setInterval(poll, 1000);
