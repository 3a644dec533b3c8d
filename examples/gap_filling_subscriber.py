#!/usr/bin/python3
"""A wsbridge subscriber that never misses a message: every seq once, in order.

Subscribes to the PUB endpoint, tracks (epoch, seq) and asks the replay endpoint for whatever
the PUB socket dropped (a gap in seq, a late start, the quiet end of a burst). A new epoch means
the bridge's database was replaced: it says so and starts over at seq 1 of the new history.
Same behaviour as client/gap_filling_subscriber.h, simplified: a gap is filled before the next
live message is read (ZeroMQ holds those meanwhile).

  examples/gap_filling_subscriber.py [PUB] [REPLAY] [FROM_SEQ]
  (defaults tcp://127.0.0.1:5556 tcp://127.0.0.1:5558 0; FROM_SEQ 0: from the first live message)

Debian packages: python3-zmq python3-protobuf protobuf-compiler (wsbridge_pb2 is generated from
proto/wsbridge.proto into a temporary directory with protoc at start).
"""
import os, subprocess, sys, tempfile
import zmq

gen = tempfile.mkdtemp()
subprocess.run(["protoc", "-I", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../proto"),
                "--python_out", gen, "wsbridge.proto"], check=True)
sys.path.insert(0, gen)
import wsbridge_pb2 as pb  # noqa: E402

args = sys.argv[1:] + ["tcp://127.0.0.1:5556", "tcp://127.0.0.1:5558", "0"][len(sys.argv[1:]):]
pub, replay, expected, epoch = args[0], args[1], int(args[2]), 0
ctx = zmq.Context()


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
    dealer = ctx.socket(zmq.DEALER)  # a fresh socket per request: no stale pages
    dealer.linger = 0
    dealer.connect(replay)
    start = max(1, expected - 1) if probe else expected
    dealer.send(pb.ReplayRequest(from_seq=start, to_seq=to_seq).SerializeToString())
    try:
        while dealer.poll(5000):
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


sub = ctx.socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"")  # every topic: a jump in seq then always means a drop
sub.connect(pub)
if expected:
    fill(0)  # joined late on purpose: the history first
while True:
    if not sub.poll(1000):  # quiet: were the last messages of a burst dropped?
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
