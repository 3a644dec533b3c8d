#!/usr/bin/env bash
# tests/feeds/setup.sh BUILD_DIR: makes the test feeds' npm packages (socket.io v4, ws v8, pinned
# by the committed package-lock.json) available under BUILD_DIR/tests/feeds/node_modules, for
# the integration tests that start tests/feeds/*.js (they get that path as NODE_PATH).
#
# Run by ctest as the fixture "feeds" (tests/CMakeLists.txt: feeds_setup), never by the build:
# building the product needs no network. It runs `npm ci` only when node_modules is missing or
# was installed from another package-lock.json, so later runs are offline and take no time;
# `npm ci --prefer-offline` uses npm's cache when it has the packages (tests/support/npm_setup.sh,
# shared with tests/jetstream/setup.sh). Also checks that
# /usr/bin/python3 has websockets (python3-websockets) for the Python feeds.
# Prints one line; exits non-zero with the reason when something is missing.
set -euo pipefail

# shellcheck source=tests/support/npm_setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/../support/npm_setup.sh"
npm_setup_begin feeds "$@"
pyws="$(/usr/bin/python3 -c 'import websockets; print(websockets.__version__)' 2>/dev/null)" ||
  npm_setup_fail "/usr/bin/python3 cannot import websockets (apt-get install python3-websockets)"

npm_setup_install
versions="$(cd "$NPM_SETUP_DEST" && node -e '
  const v = (m) => require(m + "/package.json").version;
  process.stdout.write(`socket.io ${v("socket.io")}, ws ${v("ws")}`);')"
echo "feeds setup: $NPM_SETUP_DEST/node_modules $NPM_SETUP_WHAT ($versions; python3-websockets $pyws)"
