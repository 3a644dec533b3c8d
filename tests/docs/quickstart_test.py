#!/usr/bin/python3
"""quickstart_test.py: the README's quick start, run as a new user would run it.

  quickstart_test.py <repo root> <build dir>

Extracts from README.md the blocks marked `<!-- quickstart:config FILE -->`,
`<!-- quickstart:commands -->` and `<!-- quickstart:python -->` and runs them against a feed of
"their own": a Python `websockets` server (Debian python3-websockets) that streams
{"channel": "trades", ...} messages only after it receives the subscribe message the config's
on_open sends. The commands run in a temporary directory in which `build` and `proto` point at
the real ones, so that they run as written from the repo root.

What the test changes, and only that: the config's upstream.url becomes the local feed's; the
bridge's endpoints are socket files in the temporary directory and its HTTP port is chosen by
the OS (set through WSBRIDGE_* variables, not the config), so `localhost:9108` in the commands
and `tcp://127.0.0.1:5556` in the Python block are replaced by those, and wsbridge-tail gets
`--endpoint`. Every wait has a deadline. Exit 0 when the tail and the Python subscriber both
printed feed messages; 1 with one line per problem.
"""

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

DEADLINE_S = 30


def fail(msg):
    print("quickstart_test: FAIL: " + msg, flush=True)
    sys.exit(1)


def blocks(readme):
    """{marker: (argument, body)} for each `<!-- quickstart:NAME ARG -->` + fenced block."""
    found = {}
    pattern = re.compile(r"<!-- quickstart:(\w+)\s*([^ ]*?)\s*-->\n```[a-z]*\n(.*?)```", re.S)
    for m in pattern.finditer(readme):
        found[m.group(1)] = (m.group(2), m.group(3))
    for name in ("config", "commands", "python"):
        if name not in found:
            fail(f"README.md has no `<!-- quickstart:{name} -->` block followed by a fenced block")
    return found


class Feed:
    """A feed of the user's own, on Python websockets: the subscribe message first, then
    {"channel": "trades", "price": ..., "n": N} every 20 ms, on every connection."""

    def __init__(self, subscribe_text):
        self.subscribe = json.loads(subscribe_text)
        self.port = None
        self.subscribed = 0
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()
        if not self.ready.wait(DEADLINE_S):
            fail("the test feed did not start")

    def _run(self):
        import websockets  # Debian's python3-websockets

        async def handler(ws, *_):
            first = json.loads(await ws.recv())
            if first != self.subscribe:
                await ws.close(4003, "expected the subscribe message first")
                return
            self.subscribed += 1
            n = 0
            try:
                while True:
                    n += 1
                    await ws.send(json.dumps({"channel": "trades", "price": 100 + n % 7, "n": n}))
                    await asyncio.sleep(0.02)
            except websockets.ConnectionClosed:  # the bridge stops at the end of the test
                pass

        async def main():
            server = await websockets.serve(handler, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()
            await asyncio.Future()

        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(main())
        except Exception:  # the loop stops with the process
            pass


def read(path):
    with open(path) as f:
        return f.read()


def wait_for(what, predicate, deadline_s=DEADLINE_S):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    fail(f"no {what} within {deadline_s} s")


def read_lines(proc, count, what):
    """The first `count` stdout lines of proc, within the deadline (a thread reads them)."""
    lines = []

    def reader():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if len(lines) >= count:
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(DEADLINE_S)
    if len(lines) < count:
        fail(f"{what} printed {len(lines)} of {count} lines within {DEADLINE_S} s: {lines}")
    return lines


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    root, build = (os.path.abspath(a) for a in sys.argv[1:])
    with open(os.path.join(root, "README.md")) as f:
        found = blocks(f.read())

    config_name, config = found["config"]
    m = re.search(r"^on_open = \['(.*)'\]", config, re.M)
    if not m:
        fail("the quick-start config has no on_open = ['...'] line")
    feed = Feed(m.group(1))

    tmp = tempfile.mkdtemp(prefix="wsb-quickstart-")
    os.symlink(build, os.path.join(tmp, "build"))
    os.symlink(os.path.join(root, "proto"), os.path.join(tmp, "proto"))
    url = f"ws://127.0.0.1:{feed.port}/ws"
    config, n = re.subn(r'^url = "[^"]*"', f'url = "{url}"', config, flags=re.M)
    if n != 1:
        fail("the quick-start config has no upstream url line")
    with open(os.path.join(tmp, config_name or "my-feed.toml"), "w") as f:
        f.write(config)

    pub = f"ipc://{tmp}/pub.sock"
    env = dict(os.environ, WSBRIDGE_ZMQ_PUB=pub, WSBRIDGE_ZMQ_SEND=f"ipc://{tmp}/send.sock",
               WSBRIDGE_ZMQ_REPLAY=f"ipc://{tmp}/replay.sock",
               WSBRIDGE_HTTP_LISTEN="127.0.0.1:0")
    procs = []
    bridge_log = os.path.join(tmp, "bridge.log")
    http_port = None
    ran = []
    try:
        for raw in found["commands"][1].splitlines():
            line = raw.split("  #")[0].strip()
            if not line:
                continue
            background = line.endswith("&")
            argv = shlex.split(line.rstrip("&").strip())
            if background:
                log = open(bridge_log, "w")
                procs.append(subprocess.Popen(argv, cwd=tmp, env=env, stdout=log, stderr=log))
                http_port = wait_for("HTTP port in the bridge's log", lambda: (re.search(
                    r"http: listening on [0-9.]+:(\d+)", read(bridge_log)) or [None, None])[1])
            elif argv[0] == "curl":
                target = argv[-1].replace("localhost:9108", f"127.0.0.1:{http_port}")

                def ready():
                    try:
                        with urllib.request.urlopen("http://" + target, timeout=2) as r:
                            return r.read().decode()
                    except OSError:
                        return None
                body = wait_for("200 from /readyz", ready)
                if body.strip() != "ready":
                    fail(f"/readyz answered {body!r}, not 'ready' as the README says")
            elif argv[0].endswith("wsbridge-tail"):
                count = int(argv[argv.index("--count") + 1])
                tail = subprocess.Popen(argv + ["--endpoint", pub], cwd=tmp, env=env,
                                        stdout=subprocess.PIPE, text=True)
                procs.append(tail)
                lines = read_lines(tail, count, "wsbridge-tail")
                for text in lines:
                    msg = json.loads(text)
                    payload = json.loads(msg["payload"])
                    if msg["topic"] != "trades" or payload.get("channel") != "trades":
                        fail(f"wsbridge-tail printed {text!r}, not a message of the feed")
                if tail.wait(DEADLINE_S) != 0:
                    fail(f"wsbridge-tail --count {count} exited {tail.returncode}")
            else:
                subprocess.run(argv, cwd=tmp, env=env, check=True, timeout=DEADLINE_S)
            ran.append(argv[0])

        script = found["python"][1]
        if "tcp://127.0.0.1:5556" not in script:
            fail("the Python block does not connect to tcp://127.0.0.1:5556 (zmq.pub's default)")
        with open(os.path.join(tmp, "subscriber.py"), "w") as f:
            f.write(script.replace("tcp://127.0.0.1:5556", pub))
        py = subprocess.Popen(["/usr/bin/python3", "subscriber.py"], cwd=tmp, env=env,
                              stdout=subprocess.PIPE, text=True)
        procs.append(py)
        seqs = []
        for text in read_lines(py, 5, "the Python subscriber"):
            seq, topic, payload = text.split(" ", 2)
            if topic != "trades" or json.loads(payload).get("channel") != "trades":
                fail(f"the Python subscriber printed {text!r}, not a message of the feed")
            seqs.append(int(seq))
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            fail(f"the Python subscriber's seqs are not contiguous: {seqs}")
        if feed.subscribed < 1:
            fail("the feed never received the on_open subscribe message")
        print(f"quickstart_test: ok: {', '.join(os.path.basename(r) for r in ran)}; "
              f"Python subscriber got seqs {seqs[0]}..{seqs[-1]}", flush=True)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if procs and procs[0].returncode not in (0, None, -signal.SIGTERM):
            print(read(bridge_log)[-2000:])


if __name__ == "__main__":
    main()
