#!/usr/bin/env bash
# make deploy-check: runs the image for real (after `make image`) and checks the deployment.
#
# Starts the reference upstream, the bridge and a tail from the image, all with --network host on
# fixed high ports chosen now (free ones, outside the ephemeral range), the bridge's ZeroMQ
# endpoints as ipc:// socket files on a volume shared with the tail, through deploy/compose.yaml
# when a compose tool is installed (`docker compose` or `docker-compose`) and through the
# equivalent `docker run`s otherwise. Then it checks that
#   - the containerised bridge becomes ready: /readyz answers 200 (when the daemon serves HTTP at
#     all, i.e. /healthz answers; a daemon without the HTTP endpoints yet is taken as ready when
#     messages reach the tail, and that is said loudly),
#   - messages reach the tail over the ipc socket, as JSON lines with contiguous seq,
#   - the socket files are the bridge user's, mode 0660, in a directory others cannot enter,
#   - every process of the bridge's container runs as a non-root user, and the database is on the
#     volume,
#   - the image's HEALTHCHECK turns healthy (when HTTP is served),
#   - SIGTERM stops the bridge with exit code 0,
# prints the image size and the time to ready, and tears everything down, on failure too.
#
# Environment: IMAGE (wsbridge:dev), DEPLOY_CHECK_MODE (auto: compose when installed, else run |
# compose: installs Debian's docker-compose when missing | run), DEPLOY_CHECK_PORTS (two ports),
# DEPLOY_CHECK_TIMEOUT (seconds to wait for ready, 120), DEPLOY_CHECK_MESSAGES (20),
# DEPLOY_CHECK_KEEP=1 (leave the stack running for a look; remove it with the printed command).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-wsbridge:dev}
MODE=${DEPLOY_CHECK_MODE:-auto}
TIMEOUT=${DEPLOY_CHECK_TIMEOUT:-120}
MIN_MESSAGES=${DEPLOY_CHECK_MESSAGES:-20}
PROJECT=wsbridge-check-$$
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

say() { echo "deploy-check: $*"; }
fail() { echo "deploy-check: FAIL: $*" >&2; FAILED=1; exit 1; }
FAILED=0
now() { date +%s.%N; }
elapsed() { "$PY" -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.2f}")' "$1" "$2"; }

docker info >/dev/null 2>&1 || fail "the Docker engine does not answer: run 'make image' first (it starts dockerd)"
docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "no image $IMAGE: run 'make image' first"

# --- The package: the image installs the project's .deb (make package), not copied binaries ----
pkg_state=$(docker run --rm --network none --entrypoint sh "$IMAGE" -c \
  'dpkg-query -W -f "\${Status}|\${Version}" wsbridge; echo "|$(command -v wsbridge)|$(id -u wsbridge)|$(getent group wsbridge-subscribe wsbridge-send | cut -d: -f1 | tr "\n" " ")|$(test -f /etc/wsbridge/wsbridge.toml && echo conf)"')
IFS='|' read -r pkg_status pkg_version pkg_bin pkg_uid pkg_groups pkg_conf <<<"$pkg_state"
[ "$pkg_status" = "install ok installed" ] || fail "package wsbridge not installed in the image (dpkg status: '$pkg_status')"
[ "$pkg_bin" = /usr/bin/wsbridge ] || fail "wsbridge on PATH is '$pkg_bin', not the package's /usr/bin/wsbridge"
[ "$pkg_uid" = 10001 ] || fail "the package's postinst changed the image user wsbridge (uid '$pkg_uid', not 10001)"
[ "$pkg_groups" = "wsbridge-subscribe wsbridge-send " ] || fail "the package made the groups '$pkg_groups', not wsbridge-subscribe and wsbridge-send"
[ "$pkg_conf" = conf ] || fail "no /etc/wsbridge/wsbridge.toml from the package"
say "ok: package wsbridge $pkg_version installed by dpkg (/usr/bin/wsbridge, user wsbridge uid 10001, groups $pkg_groups, /etc/wsbridge/wsbridge.toml)"

# --- Ports: two free ones, fixed for this run, in 20000-32000 (below the ephemeral range, so
# that no outgoing connection takes one meanwhile). The ZeroMQ endpoints are socket files.
# DEPLOY_CHECK_PORTS="UPSTREAM HTTP" fixes them instead.
read -r UPSTREAM_PORT HTTP_PORT < <([ -n "${DEPLOY_CHECK_PORTS:-}" ] && echo "$DEPLOY_CHECK_PORTS" || "$PY" - <<'EOF'
import random, socket
ports = []
while len(ports) < 2:
    p = random.randint(20000, 32000)
    if p in ports:
        continue
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
    ports.append(p)
print(*ports)
EOF
)
say "ports: upstream $UPSTREAM_PORT, http $HTTP_PORT; ZeroMQ on ipc:///run/wsbridge/{pub,send,replay}.sock"

# --- Compose or docker run ---------------------------------------------------------------------
COMPOSE=()
if [ "$MODE" != run ]; then
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then COMPOSE=(docker-compose)
  elif [ "$MODE" = compose ]; then
    say "installing Debian's docker-compose (DEPLOY_CHECK_MODE=compose)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose \
      >/tmp/wsbridge-compose-apt.log 2>&1 || fail "cannot install docker-compose (see /tmp/wsbridge-compose-apt.log)"
    COMPOSE=(docker-compose)
  fi
fi
export WSB_IMAGE=$IMAGE WSB_UPSTREAM_PORT=$UPSTREAM_PORT WSB_HTTP_PORT=$HTTP_PORT WSB_RATE=20
compose() { "${COMPOSE[@]}" -f "$ROOT/deploy/compose.yaml" -p "$PROJECT" "$@"; }

cid() {  # cid SERVICE: the container id
  if [ ${#COMPOSE[@]} -gt 0 ]; then compose ps -q "$1" 2>/dev/null | head -n1
  else docker ps -aq --filter "name=^/$PROJECT-$1\$" | head -n1; fi
}

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
    for s in upstream bridge tail; do
      local c; c=$(cid "$s" || true)
      [ -n "$c" ] || continue
      echo "----- last lines of $s ($(docker inspect -f '{{.State.Status}} exit={{.State.ExitCode}}' "$c" 2>/dev/null)) -----" >&2
      docker logs --tail 15 "$c" 2>&1 | cut -c1-300 >&2 || true
    done
  fi
  if [ "${DEPLOY_CHECK_KEEP:-0}" = 1 ]; then
    if [ ${#COMPOSE[@]} -gt 0 ]; then say "kept; remove with: ${COMPOSE[*]} -f deploy/compose.yaml -p $PROJECT down -v"
    else say "kept; remove with: docker rm -f -v $PROJECT-upstream $PROJECT-bridge $PROJECT-tail; docker volume rm $PROJECT-data $PROJECT-ipc"; fi
    exit "$rc"
  fi
  say "tearing down"
  if [ ${#COMPOSE[@]} -gt 0 ]; then
    compose down -v --remove-orphans -t 20 >/dev/null 2>&1 || true
  else
    docker rm -f -v "$PROJECT-upstream" "$PROJECT-bridge" "$PROJECT-tail" >/dev/null 2>&1 || true
    docker volume rm "$PROJECT-data" "$PROJECT-ipc" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

if [ ${#COMPOSE[@]} -gt 0 ]; then
  say "starting deploy/compose.yaml with ${COMPOSE[*]} (project $PROJECT)"
  compose up -d >/tmp/$PROJECT-up.log 2>&1 || { cat /tmp/$PROJECT-up.log >&2; fail "compose up failed"; }
  rm -f "/tmp/$PROJECT-up.log"
else
  say "starting upstream, bridge and tail with docker run --network host ($([ "$MODE" = run ] && echo "DEPLOY_CHECK_MODE=run" || echo "no compose tool installed"))"
  common=(--network host --init --read-only --tmpfs /tmp --cap-drop ALL
          --security-opt no-new-privileges:true --label "wsbridge.check=$PROJECT")
  docker volume create "$PROJECT-data" >/dev/null
  docker volume create "$PROJECT-ipc" >/dev/null
  docker run -d --name "$PROJECT-upstream" "${common[@]}" --no-healthcheck "$IMAGE" \
    wsbridge-upstream --port="$UPSTREAM_PORT" --rate=20 --topics=ticks,trades --history=100000 >/dev/null
  docker run -d --name "$PROJECT-bridge" "${common[@]}" -v "$PROJECT-data:/var/lib/wsbridge" \
    -v "$PROJECT-ipc:/run/wsbridge" \
    -e WSBRIDGE_UPSTREAM_URL="ws://127.0.0.1:$UPSTREAM_PORT/feed" \
    -e WSBRIDGE_ZMQ_PUB=ipc:///run/wsbridge/pub.sock \
    -e WSBRIDGE_ZMQ_SEND=ipc:///run/wsbridge/send.sock \
    -e WSBRIDGE_ZMQ_REPLAY=ipc:///run/wsbridge/replay.sock \
    -e WSBRIDGE_ZMQ_IPC_MODE=0660 \
    -e WSBRIDGE_HTTP_LISTEN="127.0.0.1:$HTTP_PORT" \
    -e WSBRIDGE_LOG_FORMAT=json \
    "$IMAGE" wsbridge >/dev/null
  docker run -d --name "$PROJECT-tail" "${common[@]}" --no-healthcheck \
    -v "$PROJECT-ipc:/run/wsbridge" "$IMAGE" \
    wsbridge-tail --endpoint=ipc:///run/wsbridge/pub.sock >/dev/null
fi
BRIDGE=$(cid bridge); TAIL=$(cid tail); UPSTREAM=$(cid upstream)
[ -n "$BRIDGE" ] && [ -n "$TAIL" ] && [ -n "$UPSTREAM" ] || fail "the three containers did not all start"
bridge_started=$(date -d "$(docker inspect -f '{{.State.StartedAt}}' "$BRIDGE")" +%s.%N)

# --- Ready ---------------------------------------------------------------------------------------
http_code() {  # http_code PATH: the status of GET http://127.0.0.1:HTTP_PORT/PATH, 000 when none
  "$PY" - "http://127.0.0.1:$HTTP_PORT$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}
tail_lines() { docker logs "$TAIL" 2>/dev/null | grep -c '^{"seq":' || true; }
running() { [ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }

HTTP=no; ready_at=""; first_msg_at=""; last_readyz=000
deadline=$((SECONDS + TIMEOUT))
while :; do
  running "$BRIDGE" || fail "the bridge container stopped (exit $(docker inspect -f '{{.State.ExitCode}}' "$BRIDGE"))"
  running "$UPSTREAM" || fail "the upstream container stopped"
  [ "$HTTP" = yes ] || { [ "$(http_code /healthz)" != 000 ] && HTTP=yes; } || true
  if [ "$HTTP" = yes ]; then
    last_readyz=$(http_code /readyz)
    if [ "$last_readyz" = 200 ]; then ready_at=$(now); break; fi
  fi
  if [ -z "$first_msg_at" ] && [ "$(tail_lines)" -gt 0 ]; then first_msg_at=$(now); fi
  # No HTTP endpoint 5 s after messages flow: a daemon without /healthz and /readyz yet.
  if [ "$HTTP" = no ] && [ -n "$first_msg_at" ] &&
     [ "$("$PY" -c 'import sys,time; print(int(time.time() - float(sys.argv[1]) > 5))' "$first_msg_at")" = 1 ]; then
    ready_at=$first_msg_at; break
  fi
  if [ $SECONDS -ge $deadline ]; then
    if [ "$HTTP" = yes ]; then
      fail "/readyz did not answer 200 within ${TIMEOUT}s (last: $last_readyz $(curl -s -m 2 "http://127.0.0.1:$HTTP_PORT/readyz" 2>/dev/null | head -c 200))"
    fi
    fail "no /healthz and no message at the tail within ${TIMEOUT}s"
  fi
  sleep 0.2
done
time_to_ready=$(elapsed "$bridge_started" "$ready_at")
if [ "$HTTP" = yes ]; then
  say "ok: /readyz answered 200, $time_to_ready s after the bridge container started"
else
  say "WARNING: the daemon serves no HTTP on $HTTP_PORT (/healthz does not answer): /readyz NOT checked;"
  say "         taken as ready at the first message at the tail, $time_to_ready s after the bridge started"
fi

# --- Messages reach the tail --------------------------------------------------------------------
deadline=$((SECONDS + 30))
while [ "$(tail_lines)" -lt "$MIN_MESSAGES" ]; do
  [ $SECONDS -lt $deadline ] || fail "only $(tail_lines) messages at the tail after 30 s (want $MIN_MESSAGES)"
  sleep 0.2
done
docker logs "$TAIL" 2>/dev/null | grep '^{"seq":' | "$PY" -c '
import json, sys
lines = [json.loads(l) for l in sys.stdin]
seqs = [m["seq"] for m in lines]
bad = [(a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1]
if bad:
    sys.exit(f"seq not contiguous at the tail: {bad[:5]}")
topics = sorted({m["topic"] for m in lines})
if not set(topics) <= {"ticks", "trades"}:
    sys.exit(f"unexpected topics {topics}")
ups = [json.loads(m["payload"])["seq"] for m in lines]
if any(u != m["upstream_seq"] for u, m in zip(ups, lines)):
    sys.exit("upstream_seq does not match the payload")
print(f"deploy-check: ok: {len(lines)} messages at the tail, seq {seqs[0]}..{seqs[-1]} contiguous, topics {topics}")
print("deploy-check:     e.g. " + json.dumps(lines[-1])[:200])
' || fail "the tail's output is not what the upstream sent"

# --- Non-root, database on the volume ----------------------------------------------------------
uids=$(docker top "$BRIDGE" -eo pid,uid,comm | awk 'NR > 1 { print $2 ":" $3 }' | sort -u | tr '\n' ' ') ||
  fail "docker top failed on the bridge container"
[ -n "$uids" ] || fail "docker top shows no process in the bridge container"
case " $uids" in *" 0:"* | *" root:"*) fail "a process of the bridge container runs as root: $uids" ;; esac
exec_uid=$(docker exec "$BRIDGE" id -u)
[ "$exec_uid" != 0 ] || fail "the image's user is root"
say "ok: bridge container processes (uid:command): $uids; image user uid $exec_uid ($(docker exec "$BRIDGE" id -un))"
db=$(docker exec "$BRIDGE" stat -c '%n owner=%u mode=%a size=%s' /var/lib/wsbridge/wsbridge.db 2>/dev/null) ||
  fail "no database at /var/lib/wsbridge/wsbridge.db in the bridge container"
mount_src=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/var/lib/wsbridge"}}{{.Type}}:{{.Name}}{{end}}{{end}}' "$BRIDGE")
[ -n "$mount_src" ] || fail "/var/lib/wsbridge is not a volume"
say "ok: database $db on $mount_src"
socks=$(docker exec "$BRIDGE" stat -c '%n type=%F owner=%u mode=%a' /run/wsbridge /run/wsbridge/pub.sock \
  /run/wsbridge/send.sock /run/wsbridge/replay.sock 2>&1) || fail "the socket files are not all there: $socks"
grep -q "^/run/wsbridge type=directory owner=$exec_uid mode=750$" <<<"$socks" ||
  fail "/run/wsbridge is not the bridge user's with mode 0750: $socks"
[ "$(grep -c "type=socket owner=$exec_uid mode=660$" <<<"$socks")" = 3 ] ||
  fail "the socket files are not the bridge user's with mode 0660: $socks"
say "ok: ipc endpoints: $(tr '\n' ';' <<<"$socks" | sed 's/;$//; s/;/; /g')"
case "$db" in *"mode=600 "*) ;; *) say "WARNING: the database file is not mode 0600 (G8)";; esac

# --- Health check, metrics ---------------------------------------------------------------------
if [ "$HTTP" = yes ]; then
  deadline=$((SECONDS + 40))
  while :; do
    health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$BRIDGE")
    [ "$health" = healthy ] && break
    [ "$health" != none ] || fail "the bridge container has no HEALTHCHECK"
    [ $SECONDS -lt $deadline ] || fail "the image's HEALTHCHECK did not turn healthy within 40 s ($health)"
    sleep 1
  done
  say "ok: docker reports the bridge container healthy (HEALTHCHECK: wsbridge-healthcheck /healthz)"
  metrics=$("$PY" -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
    "http://127.0.0.1:$HTTP_PORT/metrics" 2>/dev/null || true)
  want=$("$PY" -c '
import json, re, sys
d = json.load(open(sys.argv[1]))
names = set()
def walk(p):
    for t in p.get("targets", []):
        names.update(re.findall(r"\b(wsbridge_[a-z0-9_]+)", t["expr"]))
    for q in p.get("panels", []):
        walk(q)
for p in d["panels"]:
    walk(p)
base = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
# wsbridge_sink_*: exported only with sink.jetstream.servers set, which this stack leaves unset.
print(" ".join(sorted(n for n in base if not n.startswith("wsbridge_sink_"))))' \
    "$ROOT/deploy/grafana/wsbridge-dashboard.json")
  missing=()
  for m in $want; do grep -q "^${m}[{ _]" <<<"$metrics" || missing+=("$m"); done
  if [ ${#missing[@]} -eq 0 ]; then say "ok: /metrics exports all $(wc -w <<<"$want") metrics the Grafana dashboard uses"
  else say "note: /metrics lacks ${#missing[@]} of the dashboard's metrics: ${missing[*]}"; fi
else
  say "skipped: HEALTHCHECK and /metrics (no HTTP endpoint yet)"
fi

# --- Graceful stop -------------------------------------------------------------------------------
t0=$(now)
docker stop -t 20 "$BRIDGE" >/dev/null
stop_s=$(elapsed "$t0" "$(now)")
code=$(docker inspect -f '{{.State.ExitCode}}' "$BRIDGE")
[ "$code" = 0 ] || fail "the bridge exited $code on SIGTERM (after $stop_s s), not 0"
say "ok: SIGTERM stopped the bridge in $stop_s s with exit code 0"

# --- Summary --------------------------------------------------------------------------------------
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
depends=$(docker run --rm --network none --entrypoint dpkg-query "$IMAGE" -W -f '${Depends}' wsbridge)
bins=$(docker run --rm --network none --entrypoint sh "$IMAGE" -c 'dpkg -L wsbridge | grep "^/usr/bin/" | xargs -n1 basename' | tr '\n' ' ')
say "image $IMAGE: $(awk -v s="$size" 'BEGIN { printf "%.1f MB (%.1f MiB)", s / 1e6, s / 1048576 }')"
say "  binaries: $bins"
say "  package wsbridge $pkg_version; depends: $depends"
say "mode: $([ ${#COMPOSE[@]} -gt 0 ] && echo "${COMPOSE[*]} (deploy/compose.yaml)" || echo "docker run --network host")"
say "time to ready: $time_to_ready s ($([ "$HTTP" = yes ] && echo '/readyz 200' || echo 'first message at the tail; no /readyz yet'))"
say "PASS"
