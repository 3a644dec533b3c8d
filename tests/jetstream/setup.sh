#!/usr/bin/env bash
# tests/jetstream/setup.sh BUILD_DIR: makes the npm package of examples/jetstream_consumer.js (the
# NATS client nats.js v2, pinned by the committed package-lock.json) available under
# BUILD_DIR/tests/jetstream/node_modules, for the integration test that runs the example
# (tests/integration/jetstream_consumer_test.cc passes that path to node as NODE_PATH).
#
# Run by ctest as the fixture "jetstream_npm" (tests/CMakeLists.txt: jetstream_setup), never by the
# build, as tests/feeds/setup.sh (both use tests/support/npm_setup.sh: `npm ci` only when
# node_modules is missing or came from another package-lock.json). Also checks that nats-server
# (Debian's nats-server; $WSB_NATS_SERVER overrides) is installed for the test's JetStream server.
# Prints one line; exits non-zero with the reason when something is missing.
set -euo pipefail

# shellcheck source=tests/support/npm_setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/../support/npm_setup.sh"
npm_setup_begin jetstream "$@"
natsd="${WSB_NATS_SERVER:-$(PATH="/usr/sbin:/usr/bin:/usr/local/bin:$PATH" command -v nats-server || true)}"
[ -n "$natsd" ] && [ -x "$natsd" ] || npm_setup_fail "nats-server not found (apt-get install nats-server)"
natsv="$("$natsd" --version 2>&1 | head -n 1)"

npm_setup_install
version="$(cd "$NPM_SETUP_DEST" && node -p 'require("nats/package.json").version')"
echo "jetstream setup: $NPM_SETUP_DEST/node_modules $NPM_SETUP_WHAT (nats $version; $natsv)"
