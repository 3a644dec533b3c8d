// Shared by the Node test feeds (socketio_server.js, ws_deflate_server.js): command-line
// parsing, the deterministic numbered stream, the "listening <port>" / event lines on stdout,
// the received-messages log and SIGTERM handling. Not run by itself.
//
// The stream is virtual: message N's content depends on N alone (see feedData), and message N
// counts as produced once the feed has run N / rate seconds (rate 0: all of them at once), up to
// --count. So any "resume after L" can be replayed exactly, and a test can rebuild every payload
// byte for byte.
'use strict';

const fs = require('fs');
const path = require('path');
const { parseArgs } = require('util');

// Parses process.argv against `spec` ({name: {type, default, short?}}); exits 2 with one line on
// an unknown or malformed flag, prints usage on --help. Numbers are given as strings and
// converted here (parseArgs knows only strings and booleans).
function parseOptions(spec, usage) {
  const options = { help: { type: 'boolean', default: false } };
  for (const [name, s] of Object.entries(spec)) {
    options[name] = { type: s.type === 'boolean' ? 'boolean' : 'string' };
    if (s.default !== undefined) options[name].default = String(s.default);
    if (s.type === 'boolean') options[name].default = Boolean(s.default);
  }
  let values;
  try {
    ({ values } = parseArgs({ options, allowPositionals: false }));
  } catch (e) {
    process.stderr.write(`${path.basename(process.argv[1])}: ${e.message} (see --help)\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  for (const [name, s] of Object.entries(spec)) {
    if (s.type !== 'number') continue;
    const v = Number(values[name]);
    if (!Number.isFinite(v) || v < 0) {
      process.stderr.write(
        `${path.basename(process.argv[1])}: --${name}: not a non-negative number: ${values[name]}\n`,
      );
      process.exit(2);
    }
    values[name] = v;
  }
  return values;
}

// The "data" text of message `seq`: "d<seq>-" then "0123456789" repeated to `pad` characters in
// all (at least the prefix). Compressible on purpose, so compression shows on the wire.
function feedData(seq, pad) {
  const head = `d${seq}-`;
  if (pad <= head.length) return head;
  return head + '0123456789'.repeat(Math.ceil((pad - head.length) / 10)).slice(0, pad - head.length);
}

// A line on stdout: what tests wait for ("listening <port>", "connected <n>", ...).
function say(line) {
  process.stdout.write(line + '\n');
}

// The feed's clock: how many messages are produced by now.
class Feed {
  constructor({ rate, count }) {
    this.rate = rate;
    this.count = count;  // 0: unlimited
    this.start = process.hrtime.bigint();
  }
  produced() {
    let n;
    if (this.rate === 0) {
      n = this.count === 0 ? Number.MAX_SAFE_INTEGER : this.count;
    } else {
      const seconds = Number(process.hrtime.bigint() - this.start) / 1e9;
      n = Math.floor(seconds * this.rate);
      if (this.count !== 0) n = Math.min(n, this.count);
    }
    return n;
  }
  // Milliseconds until message `seq` is produced (0: it is; Infinity: never).
  msUntil(seq) {
    if (this.count !== 0 && seq > this.count) return Infinity;
    if (this.rate === 0) return 0;
    const seconds = Number(process.hrtime.bigint() - this.start) / 1e9;
    return Math.max(0, (seq / this.rate - seconds) * 1000);
  }
}

// Appends one line per call to `path` (synchronously: a test reading the file sees it at once).
function lineLog(path) {
  if (!path) return () => {};
  const fd = fs.openSync(path, 'a');
  return (line) => fs.writeSync(fd, line + '\n');
}

// Exits 0 on SIGTERM/SIGINT after `close` (which may be async), or after 2 s anyway.
function exitOnSignals(close) {
  const stop = (sig) => {
    say(`stopping on ${sig}`);
    setTimeout(() => process.exit(0), 2000).unref();
    Promise.resolve()
      .then(close)
      .catch(() => {})
      .then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

module.exports = { parseOptions, feedData, say, Feed, lineLog, exitOnSignals };
