#!/usr/bin/python3
"""A wsbridge subscriber that never misses a message: every seq once, in order.

Subscribes to the PUB endpoint, tracks (epoch, seq) and asks the replay endpoint for whatever
the PUB socket dropped (a gap in seq, a late start, the quiet end of a burst). A new epoch means
the bridge's database was replaced: it says so and starts over at seq 1 of the new history.
Same behaviour as client/gap_filling_subscriber.h, simplified: a gap is filled before the next
live message is read (ZeroMQ holds those meanwhile).

  examples/gap_filling_subscriber.py [--server-key KEY|@FILE --client-key-file FILE]
                                     [PUB] [REPLAY] [FROM_SEQ]
  (defaults tcp://127.0.0.1:5556 tcp://127.0.0.1:5558 0; FROM_SEQ 0: from the first live message)

CURVE (SPEC section 10), for a bridge with zmq.curve.secret_key_file: --server-key is the
bridge's public key (40 Z85 characters, or @FILE such as the PREFIX.pub of `wsbridge keygen --out
PREFIX`), --client-key-file this client's secret key file (the Z85 key alone, a `secret: <Z85>`
line or a ZeroMQ certificate's `secret-key = "<Z85>"`; refused when group or others may read it),
whose public key the bridge lists with role `subscribe` or `all`. Both or neither. A handshake the
bridge refuses is reported (libzmq tells only a socket monitor, and never retries) and ends the
program with status 1, rather than leaving it waiting for messages that never come.

Debian packages: python3-zmq python3-protobuf protobuf-compiler (wsbridge_pb2 is generated from
proto/wsbridge.proto into a temporary directory with protoc at start).
"""
import argparse, os, stat, subprocess, sys, tempfile, time
import zmq
from zmq.utils.monitor import recv_monitor_message

gen = tempfile.mkdtemp()
subprocess.run(["protoc", "-I", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../proto"),
                "--python_out", gen, "wsbridge.proto"], check=True)
sys.path.insert(0, gen)
import wsbridge_pb2 as pb  # noqa: E402


def key_in(text, label, zcert_label):
    """The Z85 key in a key file's text: `label: <Z85>`, zcert's `zcert_label = "<Z85>"`, or the
    key alone; None unless there is exactly one."""
    labelled, other = [], []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith(label + ":"):
            labelled.append(line[len(label) + 1:].strip())
        elif line.startswith(zcert_label):
            labelled.append(line[len(zcert_label):].strip().lstrip("=").strip().strip('"'))
        elif not line.startswith(("public", "secret")):
            other.append(line)
    found = labelled or other
    return found[0] if len(found) == 1 and len(found[0]) == 40 else None


def curve_keys(server_key, client_key_file):
    """(server public, client public, client secret) as Z85 bytes; None without CURVE."""
    if not server_key and not client_key_file:
        return None
    if not server_key or not client_key_file:
        sys.exit("--server-key and --client-key-file go together (CURVE takes both)")
    if server_key.startswith("@"):
        with open(server_key[1:]) as f:
            server_key = key_in(f.read(), "public", "public-key")
    if not server_key or len(server_key) != 40:
        sys.exit("--server-key: not a CURVE public key (40 Z85 characters, or @FILE)")
    with open(client_key_file) as f:
        if os.fstat(f.fileno()).st_mode & (stat.S_IRGRP | stat.S_IROTH):
            sys.exit(f"--client-key-file: {client_key_file} is readable by group or others; "
                     "chmod 600 it")
        secret = key_in(f.read(), "secret", "secret-key")
    if not secret:
        sys.exit(f"--client-key-file: {client_key_file} is not a CURVE secret key")
    return server_key.encode(), zmq.curve_public(secret.encode()), secret.encode()


parser = argparse.ArgumentParser(description="A wsbridge subscriber that never misses a message.")
parser.add_argument("pub", nargs="?", default="tcp://127.0.0.1:5556", help="PUB endpoint")
parser.add_argument("replay", nargs="?", default="tcp://127.0.0.1:5558", help="replay endpoint")
parser.add_argument("from_seq", nargs="?", type=int, default=0, help="first seq (0: first live)")
parser.add_argument("--server-key", help="the bridge's CURVE public key: Z85, or @FILE")
parser.add_argument("--client-key-file", help="this client's CURVE secret key file")
args = parser.parse_args()
pub, replay, expected, epoch = args.pub, args.replay, args.from_seq, 0
keys = curve_keys(args.server_key, args.client_key_file)
ctx = zmq.Context()


def connect(kind, endpoint):
    """A socket of `kind` connected to `endpoint` (a CURVE client with --server-key), and a
    monitor of its handshakes for wait()."""
    sock = ctx.socket(kind)
    sock.linger = 0
    if keys:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                      | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    sock.connect(endpoint)
    return sock, monitor


def wait(sock, monitor, timeout_ms):
    """True when `sock` has a message within timeout_ms. A refused handshake ends the program."""
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        ready = dict(poller.poll(max(0, int((deadline - time.monotonic()) * 1000))))
        if monitor in ready:
            event = recv_monitor_message(monitor)
            value = event["value"]
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                why = f"status {value}" + (", this key is not authorized for this endpoint"
                                           if value == 400 else "")
            elif value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                why = ("the endpoint does not use CURVE" if keys else
                       "the endpoint requires CURVE: give --server-key and --client-key-file")
            else:
                why = f"protocol error 0x{value:08x}"
            who = "this client's key (CURVE handshake" if keys else "this client (handshake"
            sys.exit(f"the bridge refused {who} failed on {event['endpoint'].decode()}: {why})")
        if sock in ready:
            return True
        if time.monotonic() >= deadline:
            return False


def deliver(env):  # the application
    print(f"{env.seq} {env.topic} {env.payload[:70]!r}", flush=True)


def same_epoch(e):
    """False when the database was replaced: tracking restarts at seq 1 of the new history."""
    global epoch, expected
    if epoch and e != epoch:
        print(f"database replaced (epoch {epoch:016x} -> {e:016x}): starting over", file=sys.stderr)
        epoch, expected = e, 1
        return False
    epoch = e
    return True


def fill(to_seq, probe=False):
    """Delivers [expected, to_seq] (to_seq 0: up to the newest) from the journal. A probe also
    asks for the last seq delivered, whose epoch tells whether the database is still the same."""
    global expected, epoch
    dealer, monitor = connect(zmq.DEALER, replay)  # a fresh socket per request: no stale pages
    start = max(1, expected - 1) if probe else expected
    dealer.send(pb.ReplayRequest(from_seq=start, to_seq=to_seq).SerializeToString())
    try:
        while wait(dealer, monitor, 5000):
            reply = pb.ReplayReply.FromString(dealer.recv())
            if reply.error:
                return print(f"replay refused: {reply.error}", file=sys.stderr)
            if reply.first_available_seq > expected:
                print(f"lost {expected}..{reply.first_available_seq - 1}: trimmed", file=sys.stderr)
                expected = reply.first_available_seq
            for env in reply.envelopes:
                if not same_epoch(env.epoch):
                    return fill(0)
                if env.seq >= expected:
                    deliver(env)
                    expected = env.seq + 1
            if reply.done and reply.last_seq < expected - 1:  # the journal went back: replaced
                print("database replaced: starting over", file=sys.stderr)
                epoch, expected = 0, 1
                return fill(0)
            if reply.done:
                expected = max(expected, (min(to_seq, reply.last_seq) if to_seq else reply.last_seq) + 1)
                return
        print(f"no answer from {replay}; will ask again", file=sys.stderr)
    finally:
        dealer.close()
        monitor.close()


sub, sub_monitor = connect(zmq.SUB, pub)
sub.setsockopt(zmq.SUBSCRIBE, b"")  # every topic: a jump in seq then always means a drop
if expected:
    fill(0)  # joined late on purpose: the history first
while True:
    if not wait(sub, sub_monitor, 1000):  # quiet: were the last messages of a burst dropped?
        if expected:
            fill(0, probe=True)
        continue
    env = pb.Envelope.FromString(sub.recv_multipart()[-1])
    same_epoch(env.epoch)
    expected = expected or env.seq
    if env.seq > expected:
        fill(env.seq - 1)  # what the PUB socket dropped
    if env.seq == expected:
        deliver(env)
        expected += 1
