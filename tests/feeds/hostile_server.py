#!/usr/bin/python3
"""hostile_server.py: test upstreams that send what a bridge must survive (SPEC §9 bad input).

One mode per run (first argument):

  gzip-bomb          numbered frames {"seq":N,...} each compressed (--codec, default gzip) in a
                     binary frame; after --good of them, one binary frame of about 1 MiB that
                     inflates to --bomb-bytes (default 1 GiB) of zeros (built from one compressed
                     16 MiB block repeated: never a GiB in memory), then seq --good+1 .. --count.
                     The bomb goes to the first connection that reaches it only (--bomb-every-time:
                     to every one), so a client that drops the connection and resumes after
                     --good gets the rest.
  truncated-gzip     the same stream; between seq --good and --good+1, the compressed frame of
                     seq --good+1 cut in half (every connection that passes that point gets it).
  bad-extension      a raw socket server: answers the upgrade with 101, a correct
                     Sec-WebSocket-Accept and "Sec-WebSocket-Extensions: --extension" (default
                     "permessage-deflate; server_max_window_bits=7", a value no client may
                     accept; try also "permessage-deflate; foo=1"), then keeps the socket open
                     and only counts what arrives. "--extension ''" sends no such header.
  engineio-malformed speaks Engine.IO v4 by hand: sends the open packet 0{...}, answers 40 (or
                     40{...}) with 40{"sid":"x"}, then sends, one text frame each unless said:
                       42["t",{"seq":1}]   42   42{not json   9   (empty text)   42[1,2]
                       (binary frame 04 01 02)   42["t",{"seq":2}]   42[]   42["t"   4
                       42["t",{"seq":3}]
                     then 42["t",{"seq":N}] for N = 4 .. --count; pings "2" every --ping-interval
                     ms and counts the "3"s.
  ping-missing-path  plain text frames, in order:
                       {"seq":1,...}  {"ping":123}  {"op":"ping"}  {"seq":2,...}
                       {"op":"ping","ts":5}  {"seq":3,...}  then {"seq":N,...} up to --count
                     For a reply rule field="op", equals="ping", reply={"pong":{{ts}}}: the bridge
                     must not answer {"op":"ping"} (no ts) and must answer {"op":"ping","ts":5}
                     with {"pong":5}, which comes after any wrong answer (same connection, in
                     order): wait for it in --log-received, then check nothing else came.

Every mode but bad-extension waits for the resume {"type":"resume","after":L} first (not
engineio-malformed, which waits for 40) and then sends what comes after seq L (--no-resume: at
once from the start); logs each message a client sends (but the resume) to --log-received.

Run (Debian's interpreter, which has python3-websockets 10.4):
  /usr/bin/python3 tests/feeds/hostile_server.py MODE [--port 0] [--codec gzip|zlib|deflate]
      [--good 3] [--count 10] [--bomb-bytes 1073741824] [--bomb-every-time]
      [--extension VALUE] [--ping-interval 300] [--ping-timeout 200] [--topics t] [--pad 40]
      [--no-resume] [--log-received FILE]
stdout, one line each: "listening <port>" once ready; "connected <n>" per connection
("handshake <n> offer=<client's Sec-WebSocket-Extensions>" in bad-extension); "resume <n> after
<L>"; "sent-bad <n> <what> <bytes on the wire>"; "closed <n> ...". Exits 0 on SIGTERM.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402

from feedlib import LineLog, feed_frame, resume_after, run_until_signal, say  # noqa: E402

MODES = ["gzip-bomb", "truncated-gzip", "bad-extension", "engineio-malformed", "ping-missing-path"]
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:]))
    p.add_argument("mode", choices=MODES)
    p.add_argument("--port", type=int, default=0, help="0: chosen by the OS (default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--codec", choices=["gzip", "zlib", "deflate"], default="gzip",
                   help="compression of the frames in gzip-bomb and truncated-gzip")
    p.add_argument("--good", type=int, default=3, help="good frames before the bad one")
    p.add_argument("--count", type=int, default=10, help="good numbered frames in all")
    p.add_argument("--bomb-bytes", type=int, default=1 << 30, help="what the bomb inflates to")
    p.add_argument("--bomb-every-time", action="store_true",
                   help="send the bomb to every connection that passes its place")
    p.add_argument("--extension", default="permessage-deflate; server_max_window_bits=7",
                   help="bad-extension: the Sec-WebSocket-Extensions value of the 101")
    p.add_argument("--ping-interval", type=int, default=300, help="engineio-malformed: ms")
    p.add_argument("--ping-timeout", type=int, default=200, help="engineio-malformed: ms")
    p.add_argument("--topics", default="t")
    p.add_argument("--pad", type=int, default=40)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--log-received", help="append every message a client sends to FILE")
    a = p.parse_args()
    if not 0 <= a.good <= a.count:
        p.error("--good must be between 0 and --count")
    if a.bomb_bytes <= 0:
        p.error("--bomb-bytes must be positive")
    return a


# ---- compression -----------------------------------------------------------------------------

def compress(data: bytes, codec: str) -> bytes:
    wbits = {"gzip": 31, "zlib": 15, "deflate": -15}[codec]
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


def bomb(size: int, codec: str) -> bytes:
    """A complete gzip/zlib/raw stream inflating to `size` zero bytes, built without holding them.

    A raw deflate encoding of one chunk of zeros ended by a full flush references nothing before
    it and ends on a byte boundary, so repeating it gives a valid stream of many chunks; an empty
    final block closes it. The check value is computed chunk by chunk."""
    chunk = min(size, 16 << 20)
    zeros = bytes(chunk)

    def block(n: int) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(zeros[:n]) + c.flush(zlib.Z_FULL_FLUSH)

    full, rest = divmod(size, chunk)
    body = [block(chunk)] * full
    if rest:
        body.append(block(rest))
    body.append(zlib.compressobj(9, zlib.DEFLATED, -15).flush())  # the empty final block
    if codec == "deflate":
        return b"".join(body)
    if codec == "gzip":
        crc = 0
        for _ in range(full):
            crc = zlib.crc32(zeros, crc)
        crc = zlib.crc32(zeros[:rest], crc)
        head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"  # deflate, no name, mtime 0, max, Unix
        return head + b"".join(body) + struct.pack("<II", crc, size & 0xFFFFFFFF)
    adler = 1
    for _ in range(full):
        adler = zlib.adler32(zeros, adler)
    adler = zlib.adler32(zeros[:rest], adler)
    return b"\x78\xda" + b"".join(body) + struct.pack(">I", adler)


# ---- modes over websockets --------------------------------------------------------------------

class Stream:
    """The items of a numbered stream with one bad item: (seq or None, payload, what)."""

    def __init__(self, a):
        self.a = a
        self.topics = a.topics.split(",")
        self.bomb_sent = False
        self.bomb = None
        if a.mode == "gzip-bomb":
            self.bomb = bomb(a.bomb_bytes, a.codec)

    def frame(self, seq: int) -> str:
        return feed_frame(seq, self.topics, self.a.pad)

    def items(self, after: int):
        a = self.a
        for seq in range(after + 1, a.count + 1):
            if seq == a.good + 1:  # the bad item sits between seq good and good+1
                if a.mode == "gzip-bomb" and (a.bomb_every_time or not self.bomb_sent):
                    self.bomb_sent = True
                    yield None, self.bomb, f"bomb {a.codec} inflating to {a.bomb_bytes}"
                elif a.mode == "truncated-gzip":
                    whole = compress(self.frame(seq).encode(), a.codec)
                    yield None, whole[: len(whole) // 2], f"truncated {a.codec} of seq {seq}"
            if a.mode in ("gzip-bomb", "truncated-gzip"):
                yield seq, compress(self.frame(seq).encode(), a.codec), None
            elif a.mode == "ping-missing-path":
                yield seq, self.frame(seq), None
                if seq == 1:
                    yield None, '{"ping":123}', "ping without op"
                    yield None, '{"op":"ping"}', "op ping without ts"
                elif seq == 2:
                    yield None, '{"op":"ping","ts":5}', "op ping with ts 5 (to be answered)"


async def websockets_modes(a, stop):
    stream = Stream(a)
    log_received = LineLog(a.log_received)
    connections = 0

    async def numbered(ws, cid):
        state = {"sent": 0}
        resumed = asyncio.get_running_loop().create_future()
        if a.no_resume:
            resumed.set_result(0)

        async def reader():
            async for message in ws:
                if isinstance(message, str):
                    after = resume_after(message)
                    if after is not None:
                        say(f"resume {cid} after {after}")
                        if not resumed.done():
                            resumed.set_result(after)
                        continue
                    log_received(message)
                else:
                    log_received(base64.b64encode(message).decode())

        read_task = asyncio.create_task(reader())
        try:
            done, _ = await asyncio.wait({read_task, resumed}, return_when=asyncio.FIRST_COMPLETED)
            if resumed.done():
                for seq, payload, what in stream.items(resumed.result()):
                    await ws.send(payload)
                    state["sent"] += 1
                    if what:
                        say(f"sent-bad {cid} {what} {len(payload)}")
            await read_task
        except websockets.ConnectionClosed:
            pass
        finally:
            read_task.cancel()
            await asyncio.gather(read_task, return_exceptions=True)
        return f"sent={state['sent']}"

    async def engineio(ws, cid):
        sid = "x"
        opened = json.dumps({"sid": sid, "upgrades": [], "pingInterval": a.ping_interval,
                             "pingTimeout": a.ping_timeout, "maxPayload": 1000000},
                            separators=(",", ":"))
        await ws.send("0" + opened)
        state = {"pongs": 0, "pings": 0}
        connected = asyncio.get_running_loop().create_future()

        async def reader():
            async for message in ws:
                if message == "3":
                    state["pongs"] += 1
                    continue
                if isinstance(message, str) and message.startswith("40") and not connected.done():
                    connected.set_result(None)
                    continue
                log_received(message if isinstance(message, str)
                             else base64.b64encode(message).decode())

        async def pinger():
            while True:
                await asyncio.sleep(a.ping_interval / 1000)  # the protocol's cadence, not a wait
                await ws.send("2")
                state["pings"] += 1

        read_task = asyncio.create_task(reader())
        ping_task = None
        try:
            done, _ = await asyncio.wait({read_task, connected}, return_when=asyncio.FIRST_COMPLETED)
            if connected.done():
                say(f"connected-namespace {cid}")
                await ws.send('40{"sid":"' + sid + '"}')
                ping_task = asyncio.create_task(pinger())
                bad = ["42", "42{not json", "9", "", "42[1,2]", b"\x04\x01\x02"]
                await ws.send('42["t",{"seq":1}]')
                for m in bad:
                    await ws.send(m)
                    say(f"sent-bad {cid} {m!r} {len(m)}")
                await ws.send('42["t",{"seq":2}]')
                for m in ["42[]", '42["t"', "4"]:
                    await ws.send(m)
                    say(f"sent-bad {cid} {m!r} {len(m)}")
                for seq in range(3, a.count + 1):
                    await ws.send('42["t",{"seq":%d}]' % seq)
            await read_task
        except websockets.ConnectionClosed:
            pass
        finally:
            for t in (read_task, ping_task):
                if t:
                    t.cancel()
            await asyncio.gather(*(t for t in (read_task, ping_task) if t), return_exceptions=True)
        return f"pings={state['pings']} pongs={state['pongs']}"

    async def handler(ws, path=None):
        nonlocal connections
        connections += 1
        cid = connections
        say(f"connected {cid}")
        body = engineio if a.mode == "engineio-malformed" else numbered
        summary = await body(ws, cid)
        say(f"closed {cid} code={ws.close_code} {summary}")

    async with websockets.serve(handler, a.host, a.port, compression=None, max_size=None,
                                ping_interval=None) as server:
        say(f"listening {server.sockets[0].getsockname()[1]}")
        sig = await stop
        say(f"stopping on signal {sig}")


# ---- bad-extension: the handshake by hand ---------------------------------------------------

async def bad_extension(a, stop):
    connections = 0
    writers = set()

    async def handle(reader, writer):
        nonlocal connections
        connections += 1
        cid = connections
        writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            key = headers.get("sec-websocket-key", "")
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            say(f"handshake {cid} offer={headers.get('sec-websocket-extensions', '')}")
            resp = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n")
            if a.extension:
                resp += f"Sec-WebSocket-Extensions: {a.extension}\r\n"
            writer.write((resp + "\r\n").encode())
            await writer.drain()
            received = 0
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                received += len(data)
            say(f"closed {cid} received={received}")
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            say(f"closed {cid} {type(e).__name__}")
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(handle, a.host, a.port)
    say(f"listening {server.sockets[0].getsockname()[1]}")
    sig = await stop
    say(f"stopping on signal {sig}")
    server.close()
    for w in list(writers):
        w.close()


def main():
    a = parse_args()
    run_until_signal(lambda stop: bad_extension(a, stop) if a.mode == "bad-extension"
                     else websockets_modes(a, stop))


if __name__ == "__main__":
    main()
