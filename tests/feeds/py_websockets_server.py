#!/usr/bin/python3
"""py_websockets_server.py: a test upstream on Python `websockets` (Debian python3-websockets 10.4).

SPEC §6 over websockets.serve with its defaults for the rest: permessage-deflate accepted as the
library does by default (compression="deflate": 12-bit windows, context takeover), its own keepalive pings every --ping-interval seconds (a
client whose pong does not come within --ping-timeout is closed with 1011). Numbered frames
{"seq":N,"topic":"t","data":"d<N>-0123..."}; replay after {"type":"resume","after":L}; acks
{"type":"ack","id":...} for messages with an "id"; {"type":"ping"} -> {"type":"pong"}.

Run (Debian's interpreter, which has python3-websockets; `python3` on PATH may be another one):
  /usr/bin/python3 tests/feeds/py_websockets_server.py [--port 0] [--compression deflate|none]
      [--server-max-window-bits N] [--server-no-context-takeover] [--ping-interval 0.3]
      [--ping-timeout 0.3] [--rate 100] [--count 0] [--topics t] [--pad 200] [--close-after 0]
      [--no-resume] [--log-received FILE]
stdout, one line each: "listening <port>" once ready; "connected <n> extensions=<header>" per
connection (n counts connections since start); "resume <n> after <L>";
"closed <n> code=<c> sent=<k>". Exits 0 on SIGTERM.
"""

import argparse
import asyncio
import base64
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory  # noqa: E402

from feedlib import Feed, LineLog, feed_frame, resume_after, run_until_signal, say  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0, help="0: chosen by the OS (default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--compression", choices=["deflate", "none"], default="deflate",
                   help="permessage-deflate as websockets offers it by default, or none")
    p.add_argument("--server-max-window-bits", type=int, choices=range(9, 16), metavar="9..15",
                   help="with deflate: use at most this server window (default: the library's 12)")
    p.add_argument("--server-no-context-takeover", action="store_true",
                   help="with deflate: reset the compressor for every message")
    p.add_argument("--ping-interval", type=float, default=0.3, help="seconds; 0: no pings")
    p.add_argument("--ping-timeout", type=float, default=0.3, help="seconds")
    p.add_argument("--rate", type=float, default=100, help="messages/s; 0: as fast as drained")
    p.add_argument("--count", type=int, default=0, help="stop producing after N; 0: never")
    p.add_argument("--topics", default="t", help="comma-separated, round-robin")
    p.add_argument("--pad", type=int, default=200, help='length of "data"')
    p.add_argument("--close-after", type=int, default=0,
                   help="close each connection (1001) after sending it K messages; 0: never")
    p.add_argument("--no-resume", action="store_true",
                   help="stream from seq 1 at once instead of waiting for the resume")
    p.add_argument("--log-received", help="append every message a client sends (but resume "
                   "and ping) to FILE, one per line (binary ones base64)")
    a = p.parse_args()
    if a.rate < 0 or a.count < 0 or a.pad < 0 or a.close_after < 0:
        p.error("--rate, --count, --pad and --close-after must not be negative")
    return a


async def serve(a, stop):
    topics = a.topics.split(",")
    feed = Feed(a.rate, a.count)
    log_received = LineLog(a.log_received)
    connections = 0

    async def handler(ws, path=None):
        nonlocal connections
        connections += 1
        cid = connections
        say(f"connected {cid} extensions={ws.response_headers.get('Sec-WebSocket-Extensions', '')}")
        start = asyncio.Event()  # set by a resume (state["from"]: where the stream restarts)
        state = {"from": 1, "sent": 0}
        if a.no_resume:
            start.set()

        async def sender():
            while True:
                await start.wait()
                start.clear()
                seq = state["from"]
                while not start.is_set():
                    if seq > feed.produced():
                        wait = feed.seconds_until(seq)
                        try:
                            await asyncio.wait_for(start.wait(), None if wait == math.inf
                                                   else max(wait, 0.001))
                        except asyncio.TimeoutError:
                            pass
                        continue
                    await ws.send(feed_frame(seq, topics, a.pad))
                    seq += 1
                    state["sent"] += 1
                    if a.close_after and state["sent"] >= a.close_after:
                        await ws.close(1001, "close-after")
                        return

        send_task = asyncio.create_task(sender())
        try:
            async for message in ws:
                if isinstance(message, str):
                    after = resume_after(message)
                    if after is not None:
                        say(f"resume {cid} after {after}")
                        state["from"] = after + 1
                        start.set()
                        continue
                    try:
                        msg = json.loads(message)
                    except ValueError:
                        msg = None
                    if isinstance(msg, dict) and msg.get("type") == "ping":
                        await ws.send('{"type":"pong"}')
                        continue
                    log_received(message)
                    if isinstance(msg, dict) and "id" in msg:
                        await ws.send(json.dumps({"type": "ack", "id": str(msg["id"])},
                                                 separators=(",", ":")))
                else:
                    log_received(base64.b64encode(message).decode())
        except websockets.ConnectionClosed:
            pass
        finally:
            send_task.cancel()
            await asyncio.gather(send_task, return_exceptions=True)
            say(f"closed {cid} code={ws.close_code} sent={state['sent']}")

    # The library's own permessage-deflate settings (compression="deflate": server and client
    # windows 12 bits, memLevel 5) unless a flag tunes them.
    compression = "deflate" if a.compression == "deflate" else None
    extensions = None
    if compression and (a.server_max_window_bits or a.server_no_context_takeover):
        extensions = [ServerPerMessageDeflateFactory(
            server_max_window_bits=a.server_max_window_bits or 12,
            client_max_window_bits=12,
            server_no_context_takeover=a.server_no_context_takeover,
            compress_settings={"memLevel": 5},
        )]
    async with websockets.serve(
        handler, a.host, a.port,
        compression=compression, extensions=extensions,
        ping_interval=a.ping_interval or None, ping_timeout=a.ping_timeout or None,
        max_size=None,
    ) as server:
        say(f"listening {server.sockets[0].getsockname()[1]}")
        sig = await stop
        say(f"stopping on signal {sig}")


if __name__ == "__main__":
    args = parse_args()
    run_until_signal(lambda stop: serve(args, stop))
