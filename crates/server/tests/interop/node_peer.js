// A protocol v1 peer built on the `ws` library (not ours).
// Usage: node node_peer.js URL ROOM [deflate]. Prints READY once joined,
// expects the test's message, publishes one of its own, checks an error
// frame, prints DONE. With `deflate`, it checks that permessage-deflate was
// negotiated, and the messages both ways carry 2 KB of padding (compressed
// on the wire: the threshold is 0).
'use strict';
const assert = require('node:assert/strict');
const WebSocket = require('ws');

const [url, room, mode] = process.argv.slice(2);
const deflate = mode === 'deflate';
const PAD = 'wshub '.repeat(400);
const ws = new WebSocket(url, { perMessageDeflate: deflate ? { threshold: 0 } : false });
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
  if (deflate) assert.match(ws.extensions, /^permessage-deflate/);
  const welcome = await next();
  assert.equal(welcome.type, 'welcome');
  ws.send(JSON.stringify({ type: 'join', room, ref: 'j' }));
  assert.deepEqual(await next(), { type: 'ack', ref: 'j' });
  console.log('READY');

  const message = await next();
  assert.equal(message.type, 'message');
  assert.equal(message.room, room);
  assert.deepEqual(message.content, deflate ? { hello: 'from rust', pad: PAD } : { hello: 'from rust' });

  const mine = deflate ? { hello: 'from node', pad: PAD } : { hello: 'from node' };
  ws.send(JSON.stringify({ type: 'publish', room, content: mine, ref: 'p' }));
  assert.deepEqual(await next(), { type: 'ack', ref: 'p' });

  ws.send(Buffer.from([1, 2, 3]), { binary: true });
  const error = await next();
  assert.equal(error.code, 'binary_unsupported');
  console.log('DONE ' + JSON.stringify({ id: welcome.id }));
  ws.close(1000);
});
