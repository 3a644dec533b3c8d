#!/usr/bin/env bash
# make bench: unit benchmarks, then the end-to-end load runs. Prints figures; asserts nothing.
set -euo pipefail
BUILD=${1:-build}
echo "== unit benchmarks (Google Benchmark)"
"$BUILD/bench/wsbridge-bench-units" --benchmark_min_time=0.2
echo
echo "== inflation per 100 B message (protocol.decompress one-shot, permessage-deflate stream)"
"$BUILD/bench/wsbridge-bench-inflate" --benchmark_min_time=0.2
echo
echo "== end-to-end inbound (raw websocketpp vs bridge, one run)"
"$BUILD/bench/wsbridge-load-inbound"
echo
echo "== the journal: bytes written per message, restart times, retention at full rate"
"$BUILD/bench/wsbridge-load-journal"
echo
echo "== compressed feeds (permessage-deflate, gzip frames) against the same run uncompressed"
"$BUILD/bench/wsbridge-load-inbound" 1 feeds
echo
echo "== the PUB endpoint: loopback tcp, tcp with CURVE, ipc (one run)"
"$BUILD/bench/wsbridge-load-inbound" 1 endpoints
echo
echo "== the JetStream sink (inbound with/without it, catch-up vs plain nats.c, lag at 10k msg/s)"
"$BUILD/bench/wsbridge-load-sink"
echo
echo "== replay (throughput from the file and the endpoint; inbound with/without a 1M replay)"
"$BUILD/bench/wsbridge-load-replay"
echo
echo "== outbound (accepted/s and time to ACCEPTED, 1 and 8 producers, process and power; outbox drain)"
"$BUILD/bench/wsbridge-load-outbound"
