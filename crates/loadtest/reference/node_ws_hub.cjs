// The Node `ws` reference for `cargo xtask bench`: the part of wshub's
// protocol the load generator speaks (welcome, join, publish -> message to
// the room's other members, ack), written as a Node service would write it
// with `ws`. With `deflate`, permessage-deflate as `ws` is usually set up:
// on, a 256-byte threshold, context takeover (a zlib context per
// connection), each recipient's copy compressed by `ws` on its own.
//
// Usage: node node_ws_hub.cjs PORT [deflate]; prints "listening on ADDR".
// `ws` comes from NODE_PATH (the JS client's pinned dev dependency).
'use strict';
const http = require('node:http');
const { WebSocketServer } = require('ws');

const [port = '0', mode] = process.argv.slice(2);
const server = http.createServer((_, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('ok\n');
});
const wss = new WebSocketServer({
  server,
  path: '/ws',
  maxPayload: 64 * 1024,
  perMessageDeflate: mode === 'deflate' ? { threshold: 256 } : false,
});
const rooms = new Map();
let next = 0;

wss.on('connection', (ws) => {
  const id = `node.${++next}`;
  const joined = [];
  ws.send(JSON.stringify({ type: 'welcome', id, heartbeat_ms: 0 }));
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let frame;
    try {
      frame = JSON.parse(data.toString('utf8'));
    } catch {
      return;
    }
    const room = String(frame.room ?? '');
    if (frame.type === 'join') {
      if (!rooms.has(room)) rooms.set(room, new Set());
      rooms.get(room).add(ws);
      joined.push(room);
    } else if (frame.type === 'publish') {
      const message = JSON.stringify({ type: 'message', room, from: id, content: frame.content, time: Date.now() });
      for (const member of rooms.get(room) ?? []) {
        if (member !== ws && member.readyState === 1) member.send(message);
      }
    } else {
      return;
    }
    if (frame.ref !== undefined) ws.send(JSON.stringify({ type: 'ack', ref: frame.ref }));
  });
  ws.on('close', () => {
    for (const room of joined) rooms.get(room)?.delete(ws);
  });
});

server.listen(Number(port), '127.0.0.1', () => {
  const { address, port: bound } = server.address();
  console.log(`listening on ${address}:${bound}`);
});
