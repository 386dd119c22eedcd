"""A protocol v1 peer built on the `websockets` library (not ours).

Usage: python_peer.py URL ROOM [deflate]. Prints READY once joined, expects
the test's message, publishes one of its own, checks an error frame, prints
DONE. With `deflate`, it checks that permessage-deflate was negotiated, and
the messages both ways carry 2 KB of padding (compressed on the wire).
"""
import asyncio
import json
import sys

import websockets


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


PAD = "wshub " * 400


async def main(url, room, deflate):
    async with websockets.connect(url) as ws:
        if deflate:
            offered = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert offered.startswith("permessage-deflate"), offered
        welcome = await recv_json(ws)
        assert welcome["type"] == "welcome", welcome
        await ws.send(json.dumps({"type": "join", "room": room, "ref": "j"}))
        ack = await recv_json(ws)
        assert ack == {"type": "ack", "ref": "j"}, ack
        print("READY", flush=True)

        message = await recv_json(ws)
        assert message["type"] == "message", message
        assert message["room"] == room, message
        content = {"hello": "from rust", "pad": PAD} if deflate else {"hello": "from rust"}
        assert message["content"] == content, message

        mine = {"hello": "from python", "pad": PAD} if deflate else {"hello": "from python"}
        await ws.send(json.dumps({"type": "publish", "room": room, "content": mine, "ref": "p"}))
        ack = await recv_json(ws)
        assert ack == {"type": "ack", "ref": "p"}, ack

        await ws.send("not json")
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "bad_json", error
        print("DONE " + json.dumps({"id": welcome["id"]}), flush=True)


asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2], sys.argv[3:] == ["deflate"]), 30))
