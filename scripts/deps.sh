#!/usr/bin/env bash
# Installs the Debian packages wsbridge needs to build and test, when any is missing.
# Idempotent: prints one line and does nothing when everything is there.
set -euo pipefail
PKGS=(
  build-essential cmake ninja-build pkg-config
  libwebsocketpp-dev libasio-dev libssl-dev libsqlite3-dev libzmq3-dev cppzmq-dev
  libprotobuf-dev protobuf-compiler libgtest-dev libbenchmark-dev
  libtomlplusplus-dev libcli11-dev libsimdjson-dev libspdlog-dev prometheus-cpp-dev
  zlib1g-dev libnats-dev nats-server python3 python3-zmq python3-protobuf python3-prometheus-client python3-websockets
  openssl sqlite3 procps
  dpkg-dev file  # make package and install_test: cpack DEB (dpkg-shlibdeps, file)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PKGS[@]} Debian packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "deps: missing ${missing[*]} and not root (no sudo): install them with apt-get" >&2
    exit 1
  fi
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/wsbridge-deps.log 2>&1; then
  echo "deps: apt-get could not install ${missing[*]} (see /tmp/wsbridge-deps.log)" >&2
  exit 1
fi
