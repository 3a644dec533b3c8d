# shellcheck shell=bash
# Sourced by the ctest fixtures that install a test folder's npm packages into the build folder
# (tests/feeds/setup.sh, tests/jetstream/setup.sh), never run by itself. Each such folder commits
# package.json and package-lock.json; its packages go to BUILD_DIR/tests/<name>/node_modules, which
# the tests pass to node as NODE_PATH. Building the product needs no network: only this does, once.
#
#   npm_setup_begin NAME ARGS...      the caller's arguments must be one BUILD_DIR (else usage,
#                                     exit 2); sets NPM_SETUP_NAME (feeds, jetstream), NPM_SETUP_SRC
#                                     (the calling script's folder: tests/NAME) and NPM_SETUP_DEST
#                                     (BUILD_DIR/tests/NAME); checks node >= 18 and npm
#   npm_setup_fail MESSAGE            "NAME setup: MESSAGE" on stderr, exit 1
#   npm_setup_install                 NPM_SETUP_DEST/node_modules from NPM_SETUP_SRC's package
#                                     files: `npm ci` only when it is missing or was installed from
#                                     other package files (so later runs are offline and take no
#                                     time; --prefer-offline uses npm's cache), one installer at a
#                                     time (a lock in the folder: ctest -j); sets NPM_SETUP_WHAT to
#                                     "up to date" or "installed by npm ci"

npm_setup_begin() {
  NPM_SETUP_NAME="$1"
  shift
  if [ $# -ne 1 ]; then
    echo "usage: ${BASH_SOURCE[1]} BUILD_DIR" >&2
    exit 2
  fi
  NPM_SETUP_SRC="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
  NPM_SETUP_DEST="$1/tests/$NPM_SETUP_NAME"
  command -v node >/dev/null ||
    npm_setup_fail "node not found (Node.js >= 18 and npm are needed for tests/$NPM_SETUP_NAME)"
  command -v npm >/dev/null ||
    npm_setup_fail "npm not found (needed once to install tests/$NPM_SETUP_NAME's packages)"
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' ||
    npm_setup_fail "node $(node --version) is too old: tests/$NPM_SETUP_NAME needs Node.js >= 18"
}

npm_setup_fail() {
  echo "$NPM_SETUP_NAME setup: $*" >&2
  exit 1
}

# shellcheck disable=SC2034  # NPM_SETUP_WHAT is the caller's
npm_setup_install() {
  local src="$NPM_SETUP_SRC" dest="$NPM_SETUP_DEST"
  mkdir -p "$dest"
  exec 9>"$dest/.setup.lock"
  flock 9
  if [ -f "$dest/node_modules/.package-lock.json" ] && cmp -s "$src/package-lock.json" "$dest/package-lock.json" &&
    cmp -s "$src/package.json" "$dest/package.json"; then
    NPM_SETUP_WHAT="up to date"
  else
    cp "$src/package.json" "$src/package-lock.json" "$dest/"
    rm -rf "$dest/node_modules"
    if ! (cd "$dest" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error) >"$dest/npm-ci.log" 2>&1; then
      rm -rf "$dest/node_modules" "$dest/package-lock.json"  # retried next time
      npm_setup_fail "npm ci failed in $dest (see $dest/npm-ci.log; it needs the npm registry or npm's cache once)"
    fi
    NPM_SETUP_WHAT="installed by npm ci"
  fi
}
