#!/bin/bash
# wsbridge-healthcheck [PATH]: GET PATH (default /healthz) from the bridge's HTTP endpoint and
# exit 0 on a 200, 1 otherwise. The image has no curl: this uses bash's /dev/tcp.
# The address is WSBRIDGE_HTTP_LISTEN (host:port, default 127.0.0.1:9108); a wildcard bind
# (0.0.0.0, [::]) is probed on loopback.
set -u
path=${1:-/healthz}
listen=${WSBRIDGE_HTTP_LISTEN:-127.0.0.1:9108}
listen=${listen#http://}
port=${listen##*:}
host=${listen%:*}
host=${host#[}; host=${host%]}
case "$host" in ""|0.0.0.0|"*") host=127.0.0.1 ;; ::) host=::1 ;; esac
{ exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || { echo "wsbridge-healthcheck: cannot connect to $host:$port" >&2; exit 1; }
printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&3
IFS= read -r -t 2 status <&3 || exit 1
exec 3<&-
case "$status" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) echo "wsbridge-healthcheck: $path: ${status%$'\r'}" >&2; exit 1 ;;
esac
