// A protocol v1 peer built on the `ws` library (not ours).
// Usage: node node_peer.js URL ROOM. Prints READY once joined, expects the
// test's message, publishes one of its own, checks an error frame, prints DONE.
'use strict';
const assert = require('node:assert/strict');
const WebSocket = require('ws');

const [url, room] = process.argv.slice(2);
const ws = new WebSocket(url);
const frames = [];
let waiting = null;

ws.on('message', (data, isBinary) => {
  assert.equal(isBinary, false);
  frames.push(JSON.parse(data.toString('utf8')));
  if (waiting) { const wake = waiting; waiting = null; wake(); }
});
ws.on('error', (err) => { console.error(err); process.exit(1); });

async function next() {
  while (frames.length === 0) await new Promise((resolve) => { waiting = resolve; });
  return frames.shift();
}

setTimeout(() => { console.error('timed out'); process.exit(1); }, 30000).unref();

ws.on('open', async () => {
  const welcome = await next();
  assert.equal(welcome.type, 'welcome');
  ws.send(JSON.stringify({ type: 'join', room, ref: 'j' }));
  assert.deepEqual(await next(), { type: 'ack', ref: 'j' });
  console.log('READY');

  const message = await next();
  assert.equal(message.type, 'message');
  assert.equal(message.room, room);
  assert.deepEqual(message.content, { hello: 'from rust' });

  ws.send(JSON.stringify({ type: 'publish', room, content: { hello: 'from node' }, ref: 'p' }));
  assert.deepEqual(await next(), { type: 'ack', ref: 'p' });

  ws.send(Buffer.from([1, 2, 3]), { binary: true });
  const error = await next();
  assert.equal(error.code, 'binary_unsupported');
  console.log('DONE ' + JSON.stringify({ id: welcome.id }));
  ws.close(1000);
});
