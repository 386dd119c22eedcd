"""Recovery with the `websockets` library (not ours).

Usage: python_recover.py URL ROOM [OFFSET EPOCH COUNT].
Without a position: joins ROOM, prints `POSITION {"offset":..,"epoch":..}`
from the join's ack, and leaves. With one: joins with `since`, checks the ack
says recovered, reads COUNT messages and prints `RECOVERED [contents]`.
"""
import asyncio
import json
import sys

import websockets


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def main(url, room, position):
    async with websockets.connect(url) as ws:
        welcome = await recv_json(ws)
        assert welcome["type"] == "welcome", welcome
        join = {"type": "join", "room": room, "ref": "j"}
        if position:
            offset, epoch, count = position
            join["since"] = {"offset": int(offset), "epoch": epoch}
        await ws.send(json.dumps(join))
        ack = await recv_json(ws)
        assert ack["type"] == "ack" and ack["ref"] == "j", ack
        if not position:
            print("POSITION " + json.dumps({"offset": ack["offset"], "epoch": ack["epoch"]}), flush=True)
            return
        assert ack["recovered"] is True, ack
        contents = []
        offsets = []
        while len(contents) < int(count):
            message = await recv_json(ws)
            assert message["type"] == "message", message
            contents.append(message["content"])
            offsets.append(message["offset"])
        assert offsets == list(range(int(offset) + 1, int(offset) + 1 + int(count))), offsets
        print("RECOVERED " + json.dumps(contents), flush=True)


asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2], sys.argv[3:]), 30))
