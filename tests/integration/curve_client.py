#!/usr/bin/python3
"""An independent client of the bridge's CURVE endpoints, for tests/integration/curve_test.cc.

Written with pyzmq (Debian's python3-zmq) alone, so that what the bridge accepts and refuses is
seen by a client that shares no code with it: the three messages it needs are encoded and
decoded by hand from proto/wsbridge.proto (no protobuf module, no protoc).

  curve_client.py [--server-key KEY|@FILE --client-key-file FILE] MODE ENDPOINT ARGS...
    sub    ENDPOINT COUNT TIMEOUT_MS     subscribe to everything; one "seq N" line per message
    send   ENDPOINT PAYLOAD TIMEOUT_MS   one SendRequest; "status NAME" or "no reply"
    replay ENDPOINT FROM TO TIMEOUT_MS   one ReplayRequest; "envelopes N" or "no reply"

Without the two key flags it is a plain (NULL mechanism) client. It stops early when its
handshake is refused, which libzmq reports only to a socket monitor and never retries, and
prints what the monitor saw: "handshake ok", "handshake refused auth STATUS", "handshake
refused protocol 0xCODE", or "handshake closed" when the bridge hung up in the middle of one
(libzmq tries again; three in a row count as a refusal). Exit 0 when it got what it asked for,
1 otherwise.

Single-threaded; run as a child process by the test.
"""
import argparse
import sys
import time

import zmq
from zmq.utils.monitor import recv_monitor_message


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, value):
    """One protobuf field: an int as a varint, bytes as length-delimited."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def read_varint(data, i):
    """The varint at data[i:] and the index after it."""
    value, shift = 0, 0
    while True:
        value |= (data[i] & 0x7F) << shift
        shift, i = shift + 7, i + 1
        if not data[i - 1] & 0x80:
            return value, i


def fields(data):
    """(number, value) of each field of a protobuf message: ints for varints, bytes else."""
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            length, i = read_varint(data, i)
            value, i = data[i:i + length], i + length
        yield number, value


STATUS = {0: "STATUS_UNSPECIFIED", 1: "ACCEPTED", 2: "DUPLICATE", 3: "REJECTED_FULL",
          4: "REJECTED_INVALID", 5: "REJECTED_STORAGE"}
HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
# Handshakes the bridge cut short without a word (libzmq retries those), in a row, before giving up.
MAX_CLOSED = 3


def z85_key_in(text):
    """The Z85 key in a key file of `wsbridge keygen --out`: the key alone on its line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else ""


class Client:
    """One socket of `kind` connected to `endpoint`, with a monitor on its handshakes."""

    def __init__(self, ctx, kind, endpoint, keys):
        self.sock = ctx.socket(kind)
        self.sock.linger = 0
        if keys:
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = keys
        if kind == zmq.SUB:
            self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.monitor = self.sock.get_monitor_socket(HANDSHAKE_EVENTS)
        self.sock.connect(endpoint)
        self.refused = False
        self.closed = 0

    def wait(self, deadline):
        """True when the socket has a message before `deadline`; False at the deadline or once
        the handshake was refused."""
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        while not self.refused:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready = dict(poller.poll(int(left * 1000) + 1))
            if self.monitor in ready:
                event = recv_monitor_message(self.monitor)
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    print("handshake ok", flush=True)
                    self.closed = 0
                elif event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                    print("handshake closed", flush=True)
                    self.closed += 1
                    self.refused = self.closed >= MAX_CLOSED
                elif event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    print(f"handshake refused auth {event['value']}", flush=True)
                    self.refused = True
                else:
                    print(f"handshake refused protocol 0x{event['value']:08x}", flush=True)
                    self.refused = True
            if self.sock in ready:
                return True
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-key", help="the bridge's public key: Z85, or @FILE")
    parser.add_argument("--client-key-file", help="this client's secret key file")
    parser.add_argument("mode", choices=["sub", "send", "replay"])
    parser.add_argument("endpoint")
    parser.add_argument("args", nargs="+")
    a = parser.parse_args()

    keys = None
    if a.server_key or a.client_key_file:
        server = a.server_key
        if server.startswith("@"):
            server = z85_key_in(open(server[1:]).read())
        secret = z85_key_in(open(a.client_key_file).read())
        keys = (server.encode(), zmq.curve_public(secret.encode()), secret.encode())

    ctx = zmq.Context()
    deadline = time.monotonic() + int(a.args[-1]) / 1000
    if a.mode == "sub":
        client, want, got = Client(ctx, zmq.SUB, a.endpoint, keys), int(a.args[0]), 0
        while got < want and client.wait(deadline):
            envelope = client.sock.recv_multipart()[-1]
            print(f"seq {dict(fields(envelope)).get(1, 0)}", flush=True)
            got += 1
        print(f"received {got}")
        return 0 if got >= want else 1

    client = Client(ctx, zmq.DEALER, a.endpoint, keys)
    if a.mode == "send":
        client.sock.send(field(2, a.args[0].encode()))
    else:
        client.sock.send(field(1, int(a.args[0])) + field(2, int(a.args[1])))
    if not client.wait(deadline):
        print("no reply")
        return 1
    reply = list(fields(client.sock.recv()))
    if a.mode == "send":
        print(f"status {STATUS.get(dict(reply).get(2, 0), '?')}")
        return 0 if dict(reply).get(2) == 1 else 1
    print(f"envelopes {sum(1 for number, _ in reply if number == 1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
