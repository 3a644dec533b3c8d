#!/usr/bin/env bash
# tests/feeds/setup.sh BUILD_DIR: makes the test feeds' npm packages (socket.io v4, ws v8, pinned
# by the committed package-lock.json) available under BUILD_DIR/tests/feeds/node_modules, for
# the integration tests that start tests/feeds/*.js (they get that path as NODE_PATH).
#
# Run by ctest as the fixture "feeds" (tests/CMakeLists.txt: feeds_setup), never by the build:
# building the product needs no network. It runs `npm ci` only when node_modules is missing or
# was installed from another package-lock.json, so later runs are offline and take no time;
# `npm ci --prefer-offline` uses npm's cache when it has the packages. Also checks that
# /usr/bin/python3 has websockets (python3-websockets) for the Python feeds.
# Prints one line; exits non-zero with the reason when something is missing.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$1/tests/feeds"
mkdir -p "$dest"

fail() {
  echo "feeds setup: $*" >&2
  exit 1
}

command -v node >/dev/null || fail "node not found (Node.js >= 18 and npm are needed for tests/feeds)"
command -v npm >/dev/null || fail "npm not found (needed once to install tests/feeds' packages)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' ||
  fail "node $(node --version) is too old: tests/feeds needs Node.js >= 18"
pyws="$(/usr/bin/python3 -c 'import websockets; print(websockets.__version__)' 2>/dev/null)" ||
  fail "/usr/bin/python3 cannot import websockets (apt-get install python3-websockets)"

# One installer at a time (ctest -j, or two build folders' tests sharing nothing but this).
exec 9>"$dest/.setup.lock"
flock 9

if [ -f "$dest/node_modules/.package-lock.json" ] && cmp -s "$src/package-lock.json" "$dest/package-lock.json" &&
  cmp -s "$src/package.json" "$dest/package.json"; then
  what="up to date"
else
  cp "$src/package.json" "$src/package-lock.json" "$dest/"
  rm -rf "$dest/node_modules"
  if ! (cd "$dest" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error) >"$dest/npm-ci.log" 2>&1; then
    rm -rf "$dest/node_modules" "$dest/package-lock.json"  # retried next time
    fail "npm ci failed in $dest (see $dest/npm-ci.log; it needs the npm registry or npm's cache once)"
  fi
  what="installed by npm ci"
fi

versions="$(cd "$dest" && node -e '
  const v = (m) => require(m + "/package.json").version;
  process.stdout.write(`socket.io ${v("socket.io")}, ws ${v("ws")}`);')"
echo "feeds setup: $dest/node_modules $what ($versions; python3-websockets $pyws)"
