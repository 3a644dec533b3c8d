#!/usr/bin/env bash
# install_test BUILD_DIR: the C++ client library as another project uses it.
#   1. cmake --install of BUILD_DIR into a temporary prefix (nothing outside it is written);
#   2. tests/install/consumer.cc built against that prefix twice: as a CMake project with
#      find_package(wsbridge_client) (target wsbridge::client), and with g++ and pkg-config;
#   3. the same from the Debian package: cpack makes BUILD_DIR's two .deb files, the
#      libwsbridge-client-dev one is unpacked (dpkg-deb -x) and consumer.cc built against it with
#      find_package; the wsbridge one must hold the daemon, the unit and the example config;
#   4. each build run against a real bridge of BUILD_DIR (wsbridge-upstream -> wsbridge, ipc
#      endpoints in the temporary directory): it must receive seqs 1..50 in order.
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "install_test: $*" >&2; exit 1; }
# build_consumer DIR WHAT CMAKE_ARGS...: tests/install as a CMake project finding wsbridge_client.
build_consumer() {
  local dir=$1 what=$2
  shift 2
  cmake -S "$here" -B "$dir" -G Ninja "$@" > "$dir.cmake.log" 2>&1 ||
    fail "find_package(wsbridge_client) from $what: $(tail -5 "$dir.cmake.log")"
  cmake --build "$dir" > "$dir.build.log" 2>&1 ||
    fail "building against wsbridge::client from $what: $(tail -5 "$dir.build.log")"
}

cmake --install "$build" --prefix "$tmp/prefix" > "$tmp/install.log" ||
  fail "cmake --install failed: $(tail -3 "$tmp/install.log")"
for f in bin/wsbridge bin/wsbridge-tail lib/systemd/system/wsbridge.service etc/wsbridge/wsbridge.toml \
         include/wsbridge/client/gap_filling_subscriber.h include/wsbridge/wsbridge.pb.h \
         share/wsbridge/wsbridge.proto; do
  [ -e "$tmp/prefix/$f" ] || fail "not installed: $f"
done

build_consumer "$tmp/cmake-build" "the installed prefix" -DCMAKE_PREFIX_PATH="$tmp/prefix"
libdir=$(find "$tmp/prefix" -name wsbridge_client.pc -printf '%h\n' | head -1)
[ -n "$libdir" ] || fail "no wsbridge_client.pc installed"
# shellcheck disable=SC2046
g++ -std=c++17 -o "$tmp/consumer-pc" "$here/consumer.cc" \
  $(PKG_CONFIG_PATH="$libdir" pkg-config --cflags --libs wsbridge_client) -lpthread ||
  fail "building with pkg-config --cflags --libs wsbridge_client"

# The packages (make package builds them the same way, installed under /usr).
(cd "$tmp" && cpack --config "$build/CPackConfig.cmake" -B "$tmp/pkg") > "$tmp/cpack.log" 2>&1 ||
  fail "cpack: $(tail -5 "$tmp/cpack.log")"
deb_dev=$(ls "$tmp"/pkg/libwsbridge-client-dev_*.deb 2>/dev/null | head -1)
deb_daemon=$(ls "$tmp"/pkg/wsbridge_*.deb 2>/dev/null | head -1)
[ -n "$deb_dev" ] && [ -n "$deb_daemon" ] || fail "cpack made no .deb files: $(ls "$tmp/pkg")"
contents=$(dpkg-deb -c "$deb_daemon")
for f in bin/wsbridge bin/wsbridge-tail systemd/system/wsbridge.service wsbridge/wsbridge.toml \
         doc/wsbridge/configuration.md; do
  grep -q "$f\$" <<<"$contents" || fail "$(basename "$deb_daemon") holds no $f"
done
dpkg-deb -f "$deb_daemon" Depends | grep -q libzmq5 || fail "$(basename "$deb_daemon"): no libzmq5 in Depends"
dpkg-deb -x "$deb_dev" "$tmp/deb-root"
deb_cmake_dir=$(find "$tmp/deb-root" -name wsbridge_clientConfig.cmake -printf '%h\n' | head -1)
[ -n "$deb_cmake_dir" ] || fail "$(basename "$deb_dev") holds no wsbridge_clientConfig.cmake"
find "$tmp/deb-root" -name wsbridge_client.pc | grep -q . || fail "$(basename "$deb_dev") holds no wsbridge_client.pc"
build_consumer "$tmp/deb-build" "$(basename "$deb_dev")" -Dwsbridge_client_DIR="$deb_cmake_dir"

# A real bridge of this build. The upstream prints "listening on PORT" once it accepts.
"$build/tools/wsbridge-upstream" --port 0 --rate 200 --history 1000 -q > "$tmp/upstream.out" 2>&1 &
pids+=($!)
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/^listening on \([0-9]*\)$/\1/p' "$tmp/upstream.out")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || fail "wsbridge-upstream did not start: $(cat "$tmp/upstream.out")"
"$build/bridge/wsbridge" --upstream "ws://127.0.0.1:$port/" --db "$tmp/bridge.db" \
  --pub "ipc://$tmp/pub.sock" --send "ipc://$tmp/send.sock" --replay "ipc://$tmp/replay.sock" \
  --set http.listen= > "$tmp/bridge.out" 2>&1 &
pids+=($!)
for consumer in "$tmp/cmake-build/consumer" "$tmp/consumer-pc" "$tmp/deb-build/consumer"; do
  timeout 90 "$consumer" "ipc://$tmp/pub.sock" "ipc://$tmp/replay.sock" 50 ||
    fail "$consumer did not receive seqs 1..50; the bridge said: $(tail -5 "$tmp/bridge.out")"
done
echo "install_test: ok (cmake --install, find_package, pkg-config, the .deb packages; 50 messages each)"
