#!/usr/bin/python3
"""selfcheck.py: checks every test feed in tests/feeds (and wsbridge-upstream's SPEC §9 switches)
with clients that are neither the bridge nor the server's own library.

  ws_deflate_server.js     Python websockets client + a hand-written raw-socket client
  py_websockets_server.py  Node `ws` client + the raw-socket client
  socketio_server.js       Engine.IO v4 spoken by hand over a Python websockets client
  hostile_server.py        Python websockets client (and the raw client for bad-extension)
  wsbridge-upstream        Python websockets client + the raw-socket client

Run (after tests/feeds/setup.sh BUILD_DIR; ctest runs it as feeds_selfcheck):
  /usr/bin/python3 tests/feeds/selfcheck.py NODE_MODULES_DIR [WSBRIDGE_UPSTREAM_BINARY]
Prints one line per check ("ok ..." or "FAIL ..."), exits 1 if any failed.
"""

import asyncio
import atexit
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zlib

import websockets
from websockets.extensions import permessage_deflate as pmd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from feedlib import feed_data, feed_frame  # noqa: E402

NODE_MODULES = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(HERE, "node_modules")
UPSTREAM = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else None
TMP = tempfile.mkdtemp(prefix="feeds-selfcheck-")
failures = []
children = []  # every server started, killed at exit whatever happened


@atexit.register
def kill_children():
    for p in children:
        if p.poll() is None:
            p.kill()
            p.wait()


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


# ---- servers as child processes ----------------------------------------------------------------

class Server:
    """A feed started as a child; stdout lines collected by a thread-free poll of its file."""

    def __init__(self, argv, tag):
        self.out_path = os.path.join(TMP, tag + ".out")
        self.out = open(self.out_path, "w+")
        env = dict(os.environ, NODE_PATH=NODE_MODULES)
        self.p = subprocess.Popen(argv, stdout=self.out, stderr=open(os.path.join(TMP, tag + ".err"), "w"),
                                  env=env, cwd=HERE)
        children.append(self.p)
        m = self.wait_for(r"^listening(?: on)? (\d+)$")
        self.port = int(m.group(1)) if m else 0
        if not self.port:  # nothing else can be checked with it
            with open(os.path.join(TMP, tag + ".err")) as err:
                check(False, f"{' '.join(argv)} did not start: {err.read()[-2000:]}")
            sys.exit(1)

    def text(self):
        with open(self.out_path) as f:
            return f.read()

    def wait_for(self, pattern, timeout=15.0):
        """Polls stdout for a line matching pattern until it shows or timeout passes."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while time.monotonic() < deadline:
            m = rx.search(self.text())
            if m or self.p.poll() is not None:
                return m or rx.search(self.text())
            time.sleep(0.01)
        return None

    async def await_line(self, pattern, timeout=15.0):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while time.monotonic() < deadline:
            m = rx.search(self.text())
            if m:
                return m
            await asyncio.sleep(0.01)
        return None

    def stop(self):
        self.p.terminate()
        try:
            rc = self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        return rc


def node(script, *args):
    return Server(["node", os.path.join(HERE, script), *args], script + "-" + str(time.monotonic_ns()))


def py(script, *args):
    return Server(["/usr/bin/python3", os.path.join(HERE, script), *args], script + "-" + str(time.monotonic_ns()))


# ---- a raw client: handshake by hand, frames parsed by hand --------------------------------------

class RawClient:
    def __init__(self, port, path="/", offer=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if offer:
            req += f"Sec-WebSocket-Extensions: {offer}\r\n"
        self.s.sendall((req + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = lines[0]
        self.headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
        self.ext = self.headers.get("sec-websocket-extensions", "")
        self.inflater = zlib.decompressobj(-15)
        self.wire = 0

    def send_text(self, text, opcode=1):
        payload = text.encode() if isinstance(text, str) else text
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        self.s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _need(self, n):
        while len(self.buf) < n:
            d = self.s.recv(65536)
            if not d:
                raise EOFError
            self.buf += d

    def frame(self):
        """(opcode, rsv1, payload after inflation)."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, hl = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, hl = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            self._need(10)
            n, hl = int.from_bytes(self.buf[2:10], "big"), 10
        self._need(hl + n)
        data, self.buf = self.buf[hl:hl + n], self.buf[hl + n:]
        self.wire += hl + n
        rsv1 = bool(b0 & 0x40)
        if rsv1:
            data = self.inflater.decompress(data + b"\x00\x00\xff\xff")
            if "server_no_context_takeover" in self.ext:
                self.inflater = zlib.decompressobj(-15)
        return b0 & 0x0F, rsv1, data

    def data_frames(self, n, answer_pings=True):
        """The next n data frames; pings answered (or not), other control frames skipped."""
        out, pings = [], 0
        while len(out) < n:
            op, rsv1, data = self.frame()
            if op == 9:
                pings += 1
                if answer_pings:
                    self.send_text(data, opcode=10)
            elif op == 8:
                raise EOFError(f"close {int.from_bytes(data[:2], 'big') if len(data) >= 2 else None}")
            elif op in (1, 2):
                out.append((rsv1, data))
        return out, pings

    def close(self):
        self.s.close()


def count_rsv1():
    """Patches websockets' permessage-deflate decoder to count data frames with and without RSV1."""
    counts = {"rsv1": 0, "plain": 0}
    orig = pmd.PerMessageDeflate.decode

    def decode(self, frame, *, max_size=None):
        if frame.opcode.value in (1, 2):
            counts["rsv1" if frame.rsv1 else "plain"] += 1
        return orig(self, frame, max_size=max_size)

    pmd.PerMessageDeflate.decode = decode
    return counts


RSV1 = count_rsv1()


async def recv_json(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


# ---- ws_deflate_server.js ----------------------------------------------------------------------

async def check_ws_deflate():
    log = os.path.join(TMP, "ws-received.log")
    srv = node("ws_deflate_server.js", "--rate=0", "--count=60", "--pad=200", "--ping-interval=100",
               "--topics=a,b", f"--log-received={log}")
    check(srv.port > 0, "ws_deflate_server.js prints 'listening <port>'")
    RSV1.update(rsv1=0, plain=0)
    pings = 0
    async with websockets.connect(f"ws://127.0.0.1:{srv.port}/") as ws:
        ext = ws.response_headers.get("Sec-WebSocket-Extensions", "")
        check("server_no_context_takeover" in ext and "server_max_window_bits=10" in ext,
              f"ws tuned: negotiated '{ext}' (Python websockets client)")
        orig_pong = ws.pong

        async def pong(data=b""):
            nonlocal pings
            pings += 1
            return await orig_pong(data)
        ws.pong = pong
        await ws.send('{"type":"resume","after":0}')
        got = [await asyncio.wait_for(ws.recv(), 10) for _ in range(60)]
        check(got == [feed_frame(n, ["a", "b"], 200) for n in range(1, 61)],
              "ws tuned: seq 1..60 byte-exact, in order, topics round-robin")
        check(RSV1["rsv1"] == 60 and RSV1["plain"] == 0, f"ws tuned: every data frame has RSV1 ({RSV1})")
        await ws.send('{"id":"a1","x":1}')
        check(await recv_json(ws) == {"type": "ack", "id": "a1"}, "ws: an outbound message with an id is acked")
        check(await srv.await_line(r"^connected 1 extensions=permessage-deflate") is not None,
              "ws: 'connected 1' with the negotiated extension on stdout")
        # Stay until the server's pings have come (each answered by the client library).
        deadline = time.monotonic() + 5
        while pings < 3 and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(ws.recv(), 0.05)
            except asyncio.TimeoutError:
                pass
        check(pings >= 3, f"ws: WebSocket pings arrive every interval ({pings} answered)")
    async with websockets.connect(f"ws://127.0.0.1:{srv.port}/") as ws:
        await ws.send('{"type":"resume","after":40}')
        got = [await asyncio.wait_for(ws.recv(), 10) for _ in range(20)]
        check(got == [feed_frame(n, ["a", "b"], 200) for n in range(41, 61)], "ws: resume after 40 replays 41..60")
    check(await srv.await_line(r"^connected 2 ") is not None and "connected 3" not in srv.text(),
          "ws: connections counted ('connected 2')")
    check(open(log).read() == '{"id":"a1","x":1}\n', "ws: --log-received has the outbound message only")
    # Raw client that answers no ping: terminated.
    raw = RawClient(srv.port, offer="permessage-deflate; client_max_window_bits")
    raw.send_text('{"type":"resume","after":0}')
    frames, _ = raw.data_frames(60, answer_pings=False)
    check(all(r for r, _ in frames) and [d.decode() for _, d in frames] == [feed_frame(n, ["a", "b"], 200) for n in range(1, 61)],
          f"ws tuned raw client: RSV1 on all 60, inflated byte-exact; wire {raw.wire} B for "
          f"{sum(len(d) for _, d in frames)} B of payload")
    check(await srv.await_line(r"^terminated 3 no pong", 5) is not None, "ws: a client answering no ping is terminated")
    raw.close()
    check(srv.stop() == 0, "ws: exits 0 on SIGTERM")

    srv = node("ws_deflate_server.js", "--deflate=defaults", "--rate=0", "--count=30")
    raw = RawClient(srv.port, offer="permessage-deflate; client_max_window_bits")
    raw.send_text('{"type":"resume","after":0}')
    frames, _ = raw.data_frames(30)
    check(raw.ext == "permessage-deflate" and all(r for r, _ in frames)
          and [d.decode() for _, d in frames] == [feed_frame(n, ["t"], 200) for n in range(1, 31)],
          f"ws defaults: '{raw.ext}' (context takeover, 15 bits), RSV1 on all, byte-exact; wire {raw.wire} B "
          f"for {sum(len(d) for _, d in frames)} B")
    raw.close()
    srv.stop()
    srv = node("ws_deflate_server.js", "--deflate=off", "--rate=0", "--count=5")
    raw = RawClient(srv.port, offer="permessage-deflate; client_max_window_bits")
    raw.send_text('{"type":"resume","after":0}')
    frames, _ = raw.data_frames(5)
    check(raw.ext == "" and not any(r for r, _ in frames), "ws off: no extension, no RSV1")
    raw.close()
    srv.stop()


# ---- py_websockets_server.py, with a Node ws client ---------------------------------------------

NODE_CLIENT = r"""
const WebSocket = require('ws');
const [port, after, n] = process.argv.slice(1).map(Number);
const ws = new WebSocket(`ws://127.0.0.1:${port}/`);  // perMessageDeflate offered by default
const got = []; let pings = 0;
ws.on('ping', () => pings++);
ws.on('open', () => ws.send(JSON.stringify({type: 'resume', after})));
ws.on('message', (d) => {
  got.push(d.toString());
  if (got.length === n) {
    const wait = setInterval(() => {  // until two pings came, then report
      if (pings >= 2) { clearInterval(wait); console.log(JSON.stringify({ext: ws.extensions, got, pings})); ws.close(); }
    }, 10);
  }
});
ws.on('error', (e) => { console.error(e.message); process.exit(1); });
"""


async def check_py_websockets():
    srv = py("py_websockets_server.py", "--rate=0", "--count=40", "--ping-interval=0.1", "--ping-timeout=0.3")
    check(srv.port > 0, "py_websockets_server.py prints 'listening <port>'")
    out = subprocess.run(["node", "-e", NODE_CLIENT, str(srv.port), "0", "40"], capture_output=True, text=True,
                         env=dict(os.environ, NODE_PATH=NODE_MODULES), timeout=30)
    r = json.loads(out.stdout) if out.returncode == 0 else {"got": [], "ext": "", "pings": 0}
    check(r["got"] == [feed_frame(n, ["t"], 200) for n in range(1, 41)], "py: seq 1..40 byte-exact (Node ws client)")
    check("permessage-deflate" in r["ext"], f"py: permessage-deflate negotiated with Node ws ('{r['ext']}')")
    check(r["pings"] >= 2, f"py: the library's keepalive pings arrive ({r['pings']})")
    out = subprocess.run(["node", "-e", NODE_CLIENT, str(srv.port), "30", "10"], capture_output=True, text=True,
                         env=dict(os.environ, NODE_PATH=NODE_MODULES), timeout=30)
    r = json.loads(out.stdout) if out.returncode == 0 else {"got": []}
    check(r["got"] == [feed_frame(n, ["t"], 200) for n in range(31, 41)], "py: resume after 30 replays 31..40")
    check(await srv.await_line(r"^connected 2 ") is not None, "py: connections counted ('connected 2')")
    raw = RawClient(srv.port, offer="permessage-deflate; client_max_window_bits")
    raw.send_text('{"type":"resume","after":0}')
    frames, _ = raw.data_frames(40)
    check(all(r for r, _ in frames) and [d.decode() for _, d in frames] == [feed_frame(n, ["t"], 200) for n in range(1, 41)],
          f"py raw client: '{raw.ext}', RSV1 on all 40; wire {raw.wire} B for {sum(len(d) for _, d in frames)} B")
    raw.close()
    # A client answering no ping is closed by the library after interval + timeout.
    raw = RawClient(srv.port)
    t0 = time.monotonic()
    try:
        raw.data_frames(1000, answer_pings=False)
        closed = None
    except EOFError as e:
        closed = str(e)
    check(closed is not None and time.monotonic() - t0 < 3, f"py: a client answering no ping is closed ({closed})")
    raw.close()
    check(srv.stop() == 0, "py: exits 0 on SIGTERM")


# ---- socketio_server.js, Engine.IO by hand -----------------------------------------------------

async def eio_connect(port, ns_packet, compression=None):
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket",
                                  compression=compression)
    opened = await asyncio.wait_for(ws.recv(), 10)
    await ws.send(ns_packet)
    return ws, opened


async def check_socketio():
    log = os.path.join(TMP, "sio-received.log")
    srv = node("socketio_server.js", "--token=s3cret", "--rate=40", "--count=40", "--pad=16",
               "--disconnect-after=15", f"--log-received={log}")
    check(srv.port > 0, "socketio_server.js prints 'listening <port>'")
    ws, opened = await eio_connect(srv.port, '40{"token":"s3cret"}')
    o = json.loads(opened[1:]) if opened.startswith("0{") else {}
    check(o.get("pingInterval") == 300 and o.get("pingTimeout") == 200 and o.get("upgrades") == [],
          f"sio: open packet {opened}")
    ack = await asyncio.wait_for(ws.recv(), 10)
    check(re.fullmatch(r'40\{"sid":"[^"]+"\}', ack) is not None, f"sio: 40 answered {ack}")
    await ws.send('42["resume",{"after":0}]')
    await ws.send('42["order",{"id":"o1","qty":2}]')
    events, pings, last = [], 0, None
    try:
        while True:
            m = await asyncio.wait_for(ws.recv(), 10)
            if m == "2":
                pings += 1
                await ws.send("3")
            elif m.startswith("42"):
                events.append(m)
            else:
                last = m
                break
    except websockets.ConnectionClosed:
        pass
    want = ['42["%s",{"seq":%d,"data":"%s"}]' % ("trade" if n % 2 else "quote", n, feed_data(n, 16)) for n in range(1, 16)]
    check(events == want, "sio: events 1..15 byte-exact, names trade/quote alternating")
    check(last == "41", f"sio: --disconnect-after 15 sends 41 (got {last!r})")
    check(pings >= 1, f"sio: pings '2' arrive and '3' answers keep it ({pings} in 15 events at 40/s)")
    await ws.close()
    ws, _ = await eio_connect(srv.port, '40{"token":"s3cret"}')
    await asyncio.wait_for(ws.recv(), 10)
    await ws.send('42["resume",{"after":15}]')
    events, pings = [], 0
    while len(events) < 25:
        m = await asyncio.wait_for(ws.recv(), 10)
        if m == "2":
            pings += 1
            await ws.send("3")
        elif m.startswith("42"):
            events.append(m)
    want = ['42["%s",{"seq":%d,"data":"%s"}]' % ("trade" if n % 2 else "quote", n, feed_data(n, 16)) for n in range(16, 41)]
    check(events == want, "sio: reconnect + resume after 15 gives 16..40, no disconnect the second time")
    # Stay a few ping intervals past the end: still connected while pongs are sent.
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:
        try:
            m = await asyncio.wait_for(ws.recv(), 0.1)
            if m == "2":
                pings += 1
                await ws.send("3")
        except asyncio.TimeoutError:
            pass
    check(pings >= 3 and ws.open, f"sio: connection kept through {pings} ping intervals")
    await ws.close()
    lines = [json.loads(l) for l in open(log)]
    check(lines == [["order", {"id": "o1", "qty": 2}]], f"sio: --log-received {lines}")
    for bad in ('40{"token":"nope"}', "40"):
        ws, _ = await eio_connect(srv.port, bad)
        m = await asyncio.wait_for(ws.recv(), 10)
        check(m == '44{"message":"unauthorized"}', f"sio: {bad} answered {m}")
        await ws.close()
    check(await srv.await_line(r"^connected 2 ") is not None and "connected 3" not in srv.text()
          and srv.text().count("connect_error") == 2, "sio: 'connected <n>' once per accepted connect")
    # No pongs: socket.io drops the connection after pingInterval + pingTimeout.
    ws, _ = await eio_connect(srv.port, '40{"token":"s3cret"}')
    t0 = time.monotonic()
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    except websockets.ConnectionClosed:
        pass
    dt = time.monotonic() - t0
    check(0.4 < dt < 1.5, f"sio: no pong -> closed after {dt:.2f} s (300 + 200 ms)")
    check(srv.stop() == 0, "sio: exits 0 on SIGTERM")

    srv = node("socketio_server.js", "--namespace=/feed", "--rate=0", "--count=3", "--no-resume",
               "--disconnect-after=3", "--disconnect-mode=transport", "--per-message-deflate")
    RSV1.update(rsv1=0, plain=0)
    ws, _ = await eio_connect(srv.port, "40/feed,", compression="deflate")
    ack = await asyncio.wait_for(ws.recv(), 10)
    check(ack.startswith('40/feed,{"sid":'), f"sio namespace: {ack}")
    ext = ws.response_headers.get("Sec-WebSocket-Extensions", "")
    events = []
    try:
        while True:
            m = await asyncio.wait_for(ws.recv(), 10)
            events.append(m)
    except websockets.ConnectionClosed as e:
        code = e.code
    check(events[:3] == ['42/feed,["trade",{"seq":1,"data":"d1-0123456789012"}]',
                         '42/feed,["quote",{"seq":2,"data":"d2-0123456789012"}]',
                         '42/feed,["trade",{"seq":3,"data":"d3-0123456789012"}]']
          and "41/feed," not in events, f"sio namespace, --no-resume, transport close: {events} then close {code}")
    check(ext.startswith("permessage-deflate") and RSV1["rsv1"] >= 4 and RSV1["plain"] == 0,
          f"sio --per-message-deflate: '{ext}', RSV1 {RSV1}")
    await ws.close()
    ws, _ = await eio_connect(srv.port, "40/other,")
    m = await asyncio.wait_for(ws.recv(), 10)
    check(m == '44/other,{"message":"Invalid namespace"}', f"sio: another namespace answered {m}")
    await ws.close()
    srv.stop()


# ---- hostile_server.py -------------------------------------------------------------------------

async def check_hostile():
    # The full 1 GiB bomb once (gzip); the other formats at 64 MiB (the same construction).
    for codec, wbits, size in (("gzip", 31, 1 << 30), ("zlib", 15, 64 << 20), ("deflate", -15, 64 << 20)):
        srv = py("hostile_server.py", "gzip-bomb", f"--codec={codec}", f"--bomb-bytes={size}")
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/", compression=None, max_size=None) as ws:
            await ws.send('{"type":"resume","after":0}')
            frames = [await asyncio.wait_for(ws.recv(), 30) for _ in range(11)]
        good = [zlib.decompress(f, wbits).decode() for f in frames[:3] + frames[4:]]
        check(good == [feed_frame(n, ["t"], 40) for n in range(1, 11)], f"bomb {codec}: seq 1..3, bomb, 4..10")
        bomb = frames[3]
        d = zlib.decompressobj(wbits)
        total, data = 0, bomb
        while data and not d.eof:
            out = d.decompress(data, 1 << 24)
            total += len(out)
            check_zero = not any(out[:4096])
            data = d.unconsumed_tail
        check(len(bomb) < 1 << 20 and total == size and d.eof and check_zero,
              f"bomb {codec}: {len(bomb)} B on the wire (< 1 MiB) inflate to {total} zero bytes, valid end")
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/", compression=None) as ws:
            await ws.send('{"type":"resume","after":3}')
            frames = [await asyncio.wait_for(ws.recv(), 10) for _ in range(7)]
        check([zlib.decompress(f, wbits).decode() for f in frames] == [feed_frame(n, ["t"], 40) for n in range(4, 11)],
              f"bomb {codec}: resume after 3 gives 4..10 without the bomb")
        srv.stop()

    srv = py("hostile_server.py", "truncated-gzip", "--good=2", "--count=5")
    async with websockets.connect(f"ws://127.0.0.1:{srv.port}/", compression=None) as ws:
        await ws.send('{"type":"resume","after":0}')
        frames = [await asyncio.wait_for(ws.recv(), 10) for _ in range(6)]
    try:
        zlib.decompress(frames[2], 31)
        truncated = False
    except zlib.error:
        truncated = True
    check(truncated and [zlib.decompress(f, 31).decode() for f in frames[:2] + frames[3:]]
          == [feed_frame(n, ["t"], 40) for n in range(1, 6)], "truncated-gzip: 1, 2, a gzip frame cut short, 3..5")
    srv.stop()

    for ext, why in (("permessage-deflate; server_max_window_bits=7", "server_max_window_bits=7"),
                     ("permessage-deflate; foo=1", "foo=1")):
        srv = py("hostile_server.py", "bad-extension", f"--extension={ext}")
        try:
            async with websockets.connect(f"ws://127.0.0.1:{srv.port}/"):
                refused = None
        except websockets.exceptions.InvalidHandshake as e:
            refused = f"{type(e).__name__}: {e}"
        check(refused is not None, f"bad-extension '{ext}': Python websockets refuses it ({refused})")
        raw = RawClient(srv.port, offer="permessage-deflate; client_max_window_bits")
        check(raw.status.startswith("HTTP/1.1 101") and raw.ext == ext, f"bad-extension: raw 101 with '{raw.ext}'")
        raw.close()
        check(await srv.await_line(r"^handshake 2 offer=permessage-deflate; client_max_window_bits$") is not None
              and await srv.await_line(r"^closed 2 received=0$") is not None, "bad-extension: logs offer and close")
        srv.stop()

    srv = py("hostile_server.py", "engineio-malformed", "--count=5", "--ping-interval=100")
    ws = await websockets.connect(f"ws://127.0.0.1:{srv.port}/socket.io/?EIO=4&transport=websocket", compression=None)
    opened = await asyncio.wait_for(ws.recv(), 10)
    await ws.send("40")
    frames = []
    while len(frames) < 13:
        f = await asyncio.wait_for(ws.recv(), 10)
        if f != "2":
            frames.append(f)
    want = ['40{"sid":"x"}', '42["t",{"seq":1}]', "42", "42{not json", "9", "", "42[1,2]", b"\x04\x01\x02",
            '42["t",{"seq":2}]', "42[]", '42["t"', "4", '42["t",{"seq":3}]']
    check(opened.startswith('0{"sid":"x"') and frames == want, f"engineio-malformed: {frames}")
    await ws.close()
    srv.stop()

    log = os.path.join(TMP, "ping-missing.log")
    srv = py("hostile_server.py", "ping-missing-path", "--count=4", f"--log-received={log}")
    async with websockets.connect(f"ws://127.0.0.1:{srv.port}/", compression=None) as ws:
        await ws.send('{"type":"resume","after":0}')
        frames = [await asyncio.wait_for(ws.recv(), 10) for _ in range(7)]
        await ws.send('{"pong":5}')
        await srv.await_line(r"^resume 1")
    want = [feed_frame(1, ["t"], 40), '{"ping":123}', '{"op":"ping"}', feed_frame(2, ["t"], 40),
            '{"op":"ping","ts":5}', feed_frame(3, ["t"], 40), feed_frame(4, ["t"], 40)]
    deadline = time.monotonic() + 5
    while open(log).read() != '{"pong":5}\n' and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    check(frames == want and open(log).read() == '{"pong":5}\n', "ping-missing-path: frames in order, answers logged")
    srv.stop()


# ---- wsbridge-upstream's SPEC §9 switches --------------------------------------------------------

async def check_upstream():
    srv = Server([UPSTREAM, "--port=0", "--rate=0", "--count=30", "--server-ping=100"], "up-ping")
    async with websockets.connect(f"ws://127.0.0.1:{srv.port}/feed", compression=None) as ws:
        await ws.send('{"type":"resume","after":0}')
        seqs, pings, t0, closed = [], 0, time.monotonic(), None
        while time.monotonic() - t0 < 1.5:
            try:
                m = json.loads(await asyncio.wait_for(ws.recv(), 1))
            except asyncio.TimeoutError:
                continue
            if "ping" in m:
                pings += 1
                await ws.send('{"pong":%d}' % m["ping"])
            else:
                seqs.append(m["seq"])
        check(seqs == list(range(1, 31)) and pings >= 10 and ws.open,
              f"upstream --server-ping 100: {pings} pings echoed, connection kept, data 1..30")
    async with websockets.connect(f"ws://127.0.0.1:{srv.port}/feed", compression=None) as ws:
        t0 = time.monotonic()
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as e:
            closed = (e.code, e.reason, time.monotonic() - t0)
    check(closed and closed[:2] == (4000, "ping not answered") and 0.7 < closed[2] < 1.2,
          f"upstream: unanswered ping -> close {closed}")
    srv.stop()

    srv = Server([UPSTREAM, "--port=0", "--rate=0", "--count=20", "--compress=gzip", "--server-ping=100",
                  "--ping-deadline=700"], "up-gzip")
    async with websockets.connect(f"ws://127.0.0.1:{srv.port}/feed", compression=None) as ws:
        await ws.send(zlib.compress(b'{"type":"resume","after":0}'))
        seqs, pings, t0 = [], 0, time.monotonic()
        while time.monotonic() - t0 < 1.0:
            try:
                b = await asyncio.wait_for(ws.recv(), 1)
            except asyncio.TimeoutError:
                continue
            assert isinstance(b, bytes) and b[:2] == b"\x1f\x8b"
            m = json.loads(zlib.decompress(b, 31))
            if "ping" in m:
                pings += 1
                await ws.send(json.dumps({"pong": m["ping"]}))
            else:
                seqs.append(m["seq"])
        check(seqs == list(range(1, 21)) and pings >= 5 and ws.open,
              f"upstream --compress gzip --server-ping: all frames gzip binary, {pings} pings echoed, data 1..20")
    srv.stop()

    srv = Server([UPSTREAM, "--port=0", "--rate=0", "--count=500", "--payload-bytes=300", "--permessage-deflate"], "up-pmd")
    RSV1.update(rsv1=0, plain=0)
    async with websockets.connect(f"ws://127.0.0.1:{srv.port}/feed") as ws:
        ext = ws.response_headers.get("Sec-WebSocket-Extensions", "")
        await ws.send('{"type":"resume","after":0}')
        seqs = [json.loads(await asyncio.wait_for(ws.recv(), 10))["seq"] for _ in range(500)]
    check(ext.startswith("permessage-deflate") and seqs == list(range(1, 501)) and RSV1 == {"rsv1": 500, "plain": 0},
          f"upstream --permessage-deflate: '{ext}' with Python websockets, 500 in order, RSV1 {RSV1}")
    raw = RawClient(srv.port, "/feed", offer="permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
    raw.send_text('{"type":"resume","after":0}')
    frames, _ = raw.data_frames(500)
    plain = sum(len(d) for _, d in frames)
    check(all(r for r, _ in frames) and raw.wire < plain / 3,
          f"upstream --permessage-deflate raw: '{raw.ext}', wire {raw.wire} B for {plain} B")
    raw.close()
    raw = RawClient(srv.port, "/feed", offer="permessage-deflate; server_max_window_bits=8")
    check(raw.status.startswith("HTTP/1.1 400"), f"upstream: an 8-bit window offer is refused ({raw.status})")
    raw.close()
    srv.stop()


async def main():
    await check_ws_deflate()
    await check_py_websockets()
    await check_socketio()
    await check_hostile()
    if UPSTREAM:
        await check_upstream()
    if failures:
        print(f"FAILED: {len(failures)} (logs in {TMP})")
        sys.exit(1)
    shutil.rmtree(TMP, ignore_errors=True)
    print("all passed")


asyncio.run(main())
