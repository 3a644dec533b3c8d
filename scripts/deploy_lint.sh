#!/usr/bin/env bash
# make deploy-lint: static checks of deploy/ (seconds; no image needed, more checks when present).
#   - deploy/compose.yaml and deploy/k8s/pod.yaml parse as YAML (python3-yaml) and have the parts
#     the deployment relies on (host networking, the volume, probes, limits, ConfigMap, Secret);
#     `docker compose config` / `docker-compose config` when a compose tool is installed, for the
#     stack as it is and with the profile jetstream and deploy/compose.jetstream.yaml;
#   - the JetStream parts (SPEC section 11): compose.yaml's service nats only under the profile
#     jetstream, compose.jetstream.yaml setting only the bridge's sink.jetstream.* variables with
#     nats:// URLs on that service's port; deploy/k8s/jetstream.yaml (every document) has the
#     ConfigMap, the headless Service and the StatefulSet with routes to each of its replicas, its
#     nats.conf passes `nats-server -t` when nats-server is installed; the [sink.jetstream] block
#     commented out in pod.yaml's ConfigMap, uncommented, parses and names those servers;
#   - the TOML configurations (deploy/wsbridge.toml, the ConfigMap's wsbridge.toml, and it with the
#     sink block uncommented) parse, and the daemon itself accepts them (`wsbridge
#     --print-config`, from the image wsbridge:dev or a build);
#   - deploy/grafana/wsbridge-dashboard.json parses, its panel ids are unique and it charts every
#     metric the daemon exports (the list below);
#   - deploy/systemd/wsbridge.service passes `systemd-analyze verify` (with no warning at all) and
#     its `systemd-analyze security` exposure is printed; skipped with a message without systemd;
#   - the shell scripts parse (bash -n).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-wsbridge:dev}
BUILD=${BUILD:-build}
cd "$ROOT"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
say() { echo "deploy-lint: $*"; }
FAILS=0
bad() { echo "deploy-lint: FAIL: $*" >&2; FAILS=$((FAILS + 1)); }

if ! "$PY" -c 'import yaml' 2>/dev/null; then
  say "installing python3-yaml"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-yaml \
    >/tmp/wsbridge-lint-apt.log 2>&1 || { bad "cannot install python3-yaml"; exit 1; }
fi

# --- YAML, TOML, JSON ------------------------------------------------------------------------
CM_TOML=$(mktemp /tmp/wsbridge-lint.XXXXXX.toml)
CM_SINK_TOML=$(mktemp /tmp/wsbridge-lint-sink.XXXXXX.toml)
NATS_CONF=$(mktemp /tmp/wsbridge-lint-nats.XXXXXX.conf)
trap 'rm -f "$CM_TOML" "$CM_SINK_TOML" "$NATS_CONF"' EXIT
"$PY" - "$CM_TOML" "$CM_SINK_TOML" "$NATS_CONF" <<'EOF' || FAILS=$((FAILS + 1))
import json, re, sys, tomllib, yaml

fails = []
def check(cond, msg):
    if not cond:
        fails.append(msg)

# compose
c = yaml.safe_load(open("deploy/compose.yaml"))
svcs = c.get("services", {})
check(set(svcs) >= {"upstream", "bridge", "tail"}, "compose: services upstream, bridge, tail")
for name, s in svcs.items():
    check(s.get("network_mode") == "host", f"compose: {name}: network_mode host")
    if name == "nats":
        continue  # NATS' own image, below
    check("wsbridge" in str(s.get("image", "")), f"compose: {name}: image")
    check(not s.get("profiles"), f"compose: {name}: in the default stack (no profile)")
b = svcs.get("bridge", {})
check(any(str(v).startswith("wsbridge-data:/var/lib/wsbridge") for v in b.get("volumes", [])),
      "compose: bridge: the named volume on /var/lib/wsbridge")
check("wsbridge-data" in (c.get("volumes") or {}), "compose: volume wsbridge-data declared")
env = b.get("environment", {})
check(all(k.startswith("WSBRIDGE_") for k in env), "compose: bridge environment")
# The ipc endpoints: the socket files' volume mounted by the bridge and its client alike.
for name in ("bridge", "tail"):
    check("wsbridge-ipc:/run/wsbridge" in svcs.get(name, {}).get("volumes", []),
          f"compose: {name}: the volume wsbridge-ipc on /run/wsbridge")
check(all(str(env.get(f"WSBRIDGE_ZMQ_{k}", "")).startswith("ipc:///run/wsbridge/")
          for k in ("PUB", "SEND", "REPLAY")), "compose: bridge: ipc endpoints on /run/wsbridge")
print(f"deploy-lint: ok: deploy/compose.yaml parses: services {sorted(svcs)}")

# JetStream in compose: the service nats under the profile jetstream (make deploy-check runs the
# stack without it), the bridge's side in compose.jetstream.yaml.
n = svcs.get("nats", {})
check(n.get("profiles") == ["jetstream"], "compose: nats: only under the profile jetstream")
check(str(n.get("image", "")).startswith("nats:2.10"), "compose: nats: image nats:2.10-*")
ncmd = [str(a) for a in n.get("command", [])]
sd = ncmd.index("-sd") if "-sd" in ncmd else len(ncmd)
check("-js" in ncmd and ncmd[sd + 1:sd + 2] == ["/data"], "compose: nats: -js -sd /data")
check("${WSB_NATS_PORT:-4222}" in ncmd, "compose: nats: port from WSB_NATS_PORT (default 4222)")
check("wsbridge-nats:/data" in n.get("volumes", []) and "wsbridge-nats" in (c.get("volumes") or {}),
      "compose: nats: the named volume wsbridge-nats on /data")
o = yaml.safe_load(open("deploy/compose.jetstream.yaml"))
osvcs = o.get("services", {})
check(set(osvcs) == {"bridge"}, "compose.jetstream.yaml: overrides the bridge only")
oenv = osvcs.get("bridge", {}).get("environment", {})
check(oenv and all(k.startswith("WSBRIDGE_SINK_JETSTREAM_") for k in oenv),
      "compose.jetstream.yaml: only WSBRIDGE_SINK_JETSTREAM_* variables")
try:
    urls = json.loads(str(oenv.get("WSBRIDGE_SINK_JETSTREAM_SERVERS", "")).replace("${WSB_NATS_PORT:-4222}", "4222"))
    check(urls and all(re.fullmatch(r"nats://127\.0\.0\.1:4222", u) for u in urls),
          "compose.jetstream.yaml: the servers are the service nats (nats://127.0.0.1:${WSB_NATS_PORT:-4222})")
except ValueError as e:
    fails.append(f"compose.jetstream.yaml: WSBRIDGE_SINK_JETSTREAM_SERVERS is not an array: {e}")
print(f"deploy-lint: ok: deploy/compose.jetstream.yaml parses: bridge {sorted(oenv)}")

# kubernetes
docs = [d for d in yaml.safe_load_all(open("deploy/k8s/pod.yaml")) if d]
kinds = {d["kind"]: d for d in docs}
check(set(kinds) >= {"ConfigMap", "Secret", "Pod"}, "k8s: ConfigMap, Secret and Pod")
for d in docs:
    check(d.get("apiVersion") == "v1" and d.get("metadata", {}).get("name"), f"k8s: {d.get('kind')}: apiVersion/name")
pod = kinds.get("Pod", {}).get("spec", {})
ctrs = pod.get("containers", []) + pod.get("initContainers", [])
bridge = [x for x in ctrs if x["name"] == "wsbridge"]
check(len(bridge) == 1 and len(pod.get("containers", [])) >= 1, "k8s: an application container and the wsbridge sidecar")
vols = {v["name"]: v for v in pod.get("volumes", [])}
for x in ctrs:
    lim = x.get("resources", {}).get("limits", {})
    check("cpu" in lim and "memory" in lim, f"k8s: {x['name']}: resource limits")
    for m in x.get("volumeMounts", []):
        check(m["name"] in vols, f"k8s: {x['name']}: volume {m['name']} declared")
if bridge:
    w = bridge[0]
    check(w.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "k8s: liveness on /healthz")
    check(w.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "k8s: readiness on /readyz")
    check("--config" in " ".join(w.get("command", []) + w.get("args", [])), "k8s: --config")
    mounts = {m["name"]: m["mountPath"] for m in w.get("volumeMounts", [])}
    check(mounts.get("wsbridge-data") == "/var/lib/wsbridge", "k8s: database volume")
    check("configMap" in vols.get("wsbridge-config", {}), "k8s: config from the ConfigMap")
    check("secret" in vols.get("wsbridge-token", {}), "k8s: token from the Secret")
    # The ipc endpoints: one emptyDir on /run/wsbridge in the sidecar and the application.
    check("emptyDir" in vols.get("wsbridge-ipc", {}), "k8s: the socket files' emptyDir")
    for x in ctrs:
        m = {v["name"]: v["mountPath"] for v in x.get("volumeMounts", [])}
        check(m.get("wsbridge-ipc") == "/run/wsbridge", f"k8s: {x['name']}: wsbridge-ipc on /run/wsbridge")
check(pod.get("securityContext", {}).get("runAsNonRoot") is True, "k8s: runAsNonRoot")
cm = kinds.get("ConfigMap", {}).get("data", {}).get("wsbridge.toml", "")
try:
    t = tomllib.loads(cm)
    check("file:" in json.dumps(t.get("upstream", {}).get("headers", {})) or "${" in cm,
          "k8s: the token is referenced from the ConfigMap's headers")
    check(all(t.get("zmq", {}).get(k, "").startswith("ipc:///run/wsbridge/sockets/")
              for k in ("pub", "send", "replay")), "k8s: ipc endpoints in the shared emptyDir")
except tomllib.TOMLDecodeError as e:
    fails.append(f"k8s: the ConfigMap's wsbridge.toml: {e}")
open(sys.argv[1], "w").write(cm)
print(f"deploy-lint: ok: deploy/k8s/pod.yaml parses: {', '.join(d['kind'] + '/' + d['metadata']['name'] for d in docs)}")

# kubernetes: the NATS JetStream cluster, and the sink block for pod.yaml's ConfigMap
jdocs = [d for d in yaml.safe_load_all(open("deploy/k8s/jetstream.yaml")) if d]
jk = {d["kind"]: d for d in jdocs}
check(set(jk) == {"ConfigMap", "Service", "StatefulSet"}, "k8s/jetstream.yaml: ConfigMap, Service, StatefulSet")
sts = jk.get("StatefulSet", {})
svc = jk.get("Service", {})
spec = sts.get("spec", {})
name = sts.get("metadata", {}).get("name", "")
replicas = spec.get("replicas", 0)
check(sts.get("apiVersion") == "apps/v1" and replicas == 3, "k8s/jetstream.yaml: a StatefulSet (apps/v1) of 3")
check(svc.get("spec", {}).get("clusterIP") == "None" and spec.get("serviceName") == svc.get("metadata", {}).get("name"),
      "k8s/jetstream.yaml: a headless Service named as the StatefulSet's serviceName")
check(svc.get("spec", {}).get("selector", {}).items() <= spec.get("template", {}).get("metadata", {}).get("labels", {}).items(),
      "k8s/jetstream.yaml: the Service selects the StatefulSet's pods")
claims = [t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])]
nc = (spec.get("template", {}).get("spec", {}).get("containers") or [{}])[0]
nmounts = {m["name"]: m["mountPath"] for m in nc.get("volumeMounts", [])}
check(claims and nmounts.get(claims[0]) == "/data", "k8s/jetstream.yaml: a PVC template mounted on the store (/data)")
check("cpu" in nc.get("resources", {}).get("limits", {}), "k8s/jetstream.yaml: resource limits")
check(str(nc.get("image", "")).startswith("nats:2.10"), "k8s/jetstream.yaml: image nats:2.10-*")
conf = jk.get("ConfigMap", {}).get("data", {}).get("nats.conf", "")
want_routes = {f"nats://{name}-{i}.{spec.get('serviceName')}:6222" for i in range(replicas)}
check(want_routes <= set(re.findall(r"nats://[\w.-]+:6222", conf)) and "store_dir: /data" in conf,
      f"k8s/jetstream.yaml: nats.conf: JetStream in /data and routes to {sorted(want_routes)}")
open(sys.argv[3], "w").write(conf)
sink = "\n".join(re.sub(r"^# ?", "", l) for l in cm.splitlines()
                 if re.match(r"^# ?(\[sink\.jetstream\]|servers|replicas|required|\s+\")", l))
try:
    t = tomllib.loads(cm + "\n" + sink)
    js = t.get("sink", {}).get("jetstream", {})
    want = [f"nats://{name}-{i}.{spec.get('serviceName')}:4222" for i in range(replicas)]
    check(js.get("servers") == want and js.get("replicas") == 3 and js.get("required") is False,
          f"k8s: pod.yaml's commented [sink.jetstream]: servers {want}, replicas 3, required false")
except tomllib.TOMLDecodeError as e:
    fails.append(f"k8s: pod.yaml's [sink.jetstream] block, uncommented: {e}")
open(sys.argv[2], "w").write(cm + "\n" + sink + "\n")
print(f"deploy-lint: ok: deploy/k8s/jetstream.yaml parses: {', '.join(d['kind'] + '/' + d['metadata']['name'] for d in jdocs)}")

try:
    tomllib.load(open("deploy/wsbridge.toml", "rb"))
    print("deploy-lint: ok: deploy/wsbridge.toml parses as TOML")
except tomllib.TOMLDecodeError as e:
    fails.append(f"deploy/wsbridge.toml: {e}")

# Grafana
d = json.load(open("deploy/grafana/wsbridge-dashboard.json"))
ids, exprs = [], []
def walk(ps):
    for p in ps:
        ids.append(p["id"])
        exprs.extend(t["expr"] for t in p.get("targets", []))
        check(p["type"] == "row" or p.get("targets"), f"dashboard: panel {p.get('title')} has no query")
        walk(p.get("panels", []))
walk(d["panels"])
check(len(ids) == len(set(ids)), "dashboard: panel ids unique")
used = {re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in re.findall(r"\b(wsbridge_[a-z0-9_]+)", e)}
want = """wsbridge_connection_state wsbridge_upstream_connected wsbridge_reconnects_total
wsbridge_messages_in_total wsbridge_messages_published_total wsbridge_messages_out_total
wsbridge_duplicates_dropped_total wsbridge_upstream_seq_gaps_total wsbridge_send_rejections_total
wsbridge_outbox_depth wsbridge_outbox_oldest_age_seconds wsbridge_journal_rows wsbridge_journal_bytes
wsbridge_last_seq wsbridge_heartbeat_rtt_seconds wsbridge_storage_commit_seconds wsbridge_storage_ok
wsbridge_sink_connected wsbridge_sink_published_total wsbridge_sink_acked_seq wsbridge_sink_lag_messages
wsbridge_sink_lag_seconds wsbridge_sink_errors_total wsbridge_sink_skipped_total""".split()
check(not set(want) - used, f"dashboard: metrics not charted: {sorted(set(want) - used)}")
check(not used - set(want), f"dashboard: charts unknown metrics: {sorted(used - set(want))}")
print(f"deploy-lint: ok: deploy/grafana/wsbridge-dashboard.json parses: {len(ids)} panels, {len(used)} metrics")

for f in fails:
    print(f"deploy-lint: FAIL: {f}", file=sys.stderr)
sys.exit(1 if fails else 0)
EOF

# --- compose config ------------------------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then COMPOSE=(docker-compose)
else COMPOSE=(); fi
if [ ${#COMPOSE[@]} -gt 0 ]; then
  if out=$("${COMPOSE[@]}" -f deploy/compose.yaml -p wsbridge-lint config -q 2>&1); then
    say "ok: ${COMPOSE[*]} config accepts deploy/compose.yaml"
  else bad "${COMPOSE[*]} config: $out"; fi
  if out=$("${COMPOSE[@]}" -f deploy/compose.yaml -f deploy/compose.jetstream.yaml -p wsbridge-lint \
      --profile jetstream config -q 2>&1); then
    say "ok: ${COMPOSE[*]} config accepts the profile jetstream with deploy/compose.jetstream.yaml"
  else bad "${COMPOSE[*]} config --profile jetstream: $out"; fi
else
  say "skipped: compose config (no 'docker compose' or 'docker-compose')"
fi

# --- The daemon accepts the configurations -----------------------------------------------------
print_config() {  # print_config FILE: wsbridge --config FILE --print-config, from the image or a build
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    docker run --rm -i --network none "$IMAGE" \
      sh -c 'cat > /tmp/c.toml && wsbridge --config /tmp/c.toml --print-config' <"$1"
  else
    env -u WSBRIDGE_STORAGE_PATH "$BUILD/bridge/wsbridge" --config "$1" --print-config
  fi
}
if docker image inspect "$IMAGE" >/dev/null 2>&1 || [ -x "$BUILD/bridge/wsbridge" ]; then
  from=$(docker image inspect "$IMAGE" >/dev/null 2>&1 && echo "image $IMAGE" || echo "$BUILD/bridge/wsbridge")
  for pair in "deploy/wsbridge.toml:deploy/wsbridge.toml" "$CM_TOML:the ConfigMap's wsbridge.toml" \
    "$CM_SINK_TOML:the ConfigMap's wsbridge.toml with [sink.jetstream]"; do
    f=${pair%%:*}; name=${pair#*:}
    if out=$(print_config "$f" 2>&1 >/dev/null); then
      say "ok: wsbridge --print-config accepts $name ($from)"
    else bad "wsbridge rejects $name: $out"; fi
  done
else
  say "skipped: wsbridge --print-config (no image $IMAGE and no $BUILD/bridge/wsbridge)"
fi

# --- nats.conf of deploy/k8s/jetstream.yaml --------------------------------------------------------
natsd=$(PATH="/usr/sbin:/usr/bin:/usr/local/bin:$PATH" command -v nats-server || true)
if [ -n "$natsd" ]; then
  if out=$(POD_NAME=wsbridge-nats-0 "$natsd" -t -c "$NATS_CONF" 2>&1); then
    say "ok: nats-server -t accepts the nats.conf of deploy/k8s/jetstream.yaml ($("$natsd" --version 2>&1))"
  else bad "nats-server -t rejects the nats.conf of deploy/k8s/jetstream.yaml: $out"; fi
else
  say "skipped: nats-server -t (apt-get install nats-server to check deploy/k8s/jetstream.yaml's nats.conf)"
fi

# --- systemd --------------------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
  dir=$(mktemp -d /tmp/wsbridge-lint-unit.XXXXXX)
  # verify wants ExecStart's binary to exist: point it at a stand-in, the unit is otherwise as is.
  printf '#!/bin/sh\nexit 0\n' >"$dir/wsbridge" && chmod +x "$dir/wsbridge"
  sed "s|/usr/local/bin/wsbridge|$dir/wsbridge|g" deploy/systemd/wsbridge.service >"$dir/wsbridge.service"
  # verify exits 0 on unknown keys and bad values: any output counts as a failure.
  out=$(cd "$dir" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify ./wsbridge.service 2>&1) && [ -z "$out" ] &&
    say "ok: systemd-analyze verify deploy/systemd/wsbridge.service: no warning" ||
    bad "systemd-analyze verify: ${out:-exit status}"
  # The drop-in, merged into the unit as systemd would (its lines appended to [Service]).
  cat "$dir/wsbridge.service" deploy/systemd/remote-consumers.conf >"$dir/wsbridge-remote.service"
  out=$(cd "$dir" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify ./wsbridge-remote.service 2>&1) && [ -z "$out" ] &&
    say "ok: systemd-analyze verify with deploy/systemd/remote-consumers.conf: no warning" ||
    bad "systemd-analyze verify with remote-consumers.conf: ${out:-exit status}"
  exposure=$(systemd-analyze security --offline=yes "$dir/wsbridge.service" 2>/dev/null |
    sed -n 's/.*Overall exposure level for [^:]*: *//p' | tr -d '\n' || true)
  [ -n "$exposure" ] && say "    systemd-analyze security --offline: exposure $exposure"
  rm -rf "$dir"
else
  say "skipped: systemd-analyze is not installed (apt-get install systemd to verify the unit)"
fi

# --- Scripts --------------------------------------------------------------------------------------
for s in deploy/healthcheck.sh scripts/image.sh scripts/deploy_check.sh scripts/deploy_lint.sh; do
  bash -n "$s" || bad "$s does not parse"
done
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck -S warning deploy/healthcheck.sh scripts/image.sh scripts/deploy_check.sh scripts/deploy_lint.sh &&
    say "ok: shellcheck" || bad "shellcheck"
fi

if [ "$FAILS" -ne 0 ]; then say "$FAILS check(s) failed"; exit 1; fi
say "PASS"
