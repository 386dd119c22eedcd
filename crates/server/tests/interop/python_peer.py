"""A protocol v1 peer built on the `websockets` library (not ours).

Usage: python_peer.py URL ROOM. Prints READY once joined, expects the test's
message, publishes one of its own, checks an error frame, prints DONE.
"""
import asyncio
import json
import sys

import websockets


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def main(url, room):
    async with websockets.connect(url) as ws:
        welcome = await recv_json(ws)
        assert welcome["type"] == "welcome", welcome
        await ws.send(json.dumps({"type": "join", "room": room, "ref": "j"}))
        ack = await recv_json(ws)
        assert ack == {"type": "ack", "ref": "j"}, ack
        print("READY", flush=True)

        message = await recv_json(ws)
        assert message["type"] == "message", message
        assert message["room"] == room, message
        assert message["content"] == {"hello": "from rust"}, message

        await ws.send(json.dumps(
            {"type": "publish", "room": room, "content": {"hello": "from python"}, "ref": "p"}))
        ack = await recv_json(ws)
        assert ack == {"type": "ack", "ref": "p"}, ack

        await ws.send("not json")
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "bad_json", error
        print("DONE " + json.dumps({"id": welcome["id"]}), flush=True)


asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 30))
