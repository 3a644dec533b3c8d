#!/usr/bin/env bash
# make demo: the reference upstream, the bridge and a tail, each on its defaults, until Ctrl-C.
set -euo pipefail
BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)
DIR=$(mktemp -d "${TMPDIR:-/tmp}/wsbridge-demo.XXXXXX")
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup INT TERM EXIT

echo "demo: working directory $DIR (database, logs)"
"$BIN/tools/wsbridge-upstream" --rate 5 --topics ticks,trades >"$DIR/upstream.log" 2>&1 &
pids+=($!)
# The bridge on its defaults: ws://127.0.0.1:8765/feed, ./wsbridge.db, PUB tcp://127.0.0.1:5556.
(cd "$DIR" && exec "$BIN/bridge/wsbridge") 2>"$DIR/bridge.log" &
pids+=($!)
echo "demo: upstream on :8765, bridge publishing on tcp://127.0.0.1:5556; Ctrl-C stops all three"
echo "demo: bridge log: $DIR/bridge.log"
# The tail fills any gap (e.g. the first messages, published before it subscribed) by replay.
"$BIN/tools/wsbridge-tail" --fill-gaps --replay tcp://127.0.0.1:5558 --from-seq 1 &
pids+=($!)
wait "${pids[-1]}"
