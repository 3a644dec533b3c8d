"""feedlib.py: shared by the Python test feeds (py_websockets_server.py, hostile_server.py).

The same numbered stream as feed_common.js: message N is
{"seq":N,"topic":T,"data":"d<N>-0123456789..."} (no spaces; T round-robin over the topics; "data"
padded to --pad characters), so a test can rebuild every payload byte for byte. Lines on stdout
("listening <port>", "connected <n> ...") are what tests wait for; SIGTERM/SIGINT end the server
with exit code 0. Not run by itself; the servers import it from their own folder.

Runs on Debian's /usr/bin/python3 with python3-websockets 10.4.
"""

import asyncio
import json
import math
import signal
import sys
import time


def feed_data(seq: int, pad: int) -> str:
    """The "data" text of message seq: "d<seq>-" then "0123456789" repeated, pad chars in all."""
    head = f"d{seq}-"
    if pad <= len(head):
        return head
    body = "0123456789" * math.ceil((pad - len(head)) / 10)
    return head + body[: pad - len(head)]


def feed_frame(seq: int, topics, pad: int) -> str:
    """Message seq of the numbered stream, as the JSON text sent."""
    return json.dumps(
        {"seq": seq, "topic": topics[(seq - 1) % len(topics)], "data": feed_data(seq, pad)},
        separators=(",", ":"),
    )


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Feed:
    """Message N is produced once the feed has run N / rate seconds (rate 0: at once), up to count."""

    def __init__(self, rate: float, count: int):
        self.rate = rate
        self.count = count  # 0: unlimited
        self.start = time.monotonic()

    def produced(self) -> int:
        if self.rate == 0:
            return self.count if self.count else sys.maxsize
        n = int((time.monotonic() - self.start) * self.rate)
        return min(n, self.count) if self.count else n

    def seconds_until(self, seq: int) -> float:
        """Seconds until message seq is produced (0: it is; inf: never)."""
        if self.count and seq > self.count:
            return math.inf
        if self.rate == 0:
            return 0.0
        return max(0.0, seq / self.rate - (time.monotonic() - self.start))


class LineLog:
    """Appends one line per call, flushed at once (a test reads the file while the server runs)."""

    def __init__(self, path):
        self.f = open(path, "a", encoding="utf-8", errors="surrogateescape") if path else None

    def __call__(self, line: str) -> None:
        if self.f:
            self.f.write(line + "\n")
            self.f.flush()


def resume_after(text):
    """L of a resume text {"type":"resume","after":L}, else None."""
    try:
        msg = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(msg, dict) or msg.get("type") != "resume":
        return None
    after = msg.get("after", 0)
    try:
        after = int(after)
    except (TypeError, ValueError):
        return 0
    return max(after, 0)


def run_until_signal(main):
    """Runs the coroutine function main(stop) where stop is a Future set by SIGTERM/SIGINT; exits 0."""

    async def runner():
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: stop.done() or stop.set_result(s))
        await main(stop)

    asyncio.run(runner())
    sys.exit(0)
