#!/usr/bin/env node
// A consumer of the bridge's JetStream sink (SPEC section 11): reads the stream the bridge copies
// its journal into, from the start (or --from-seq), and prints one JSON line per message:
//
//   {"stream_seq":1,"subject":"wsbridge.ticks","seq":1,"epoch":"3f2a...","upstream_seq":17,
//    "topic":"ticks","received_at_unix_ns":1714557600123456789,"payload":"{\"px\":101.5}"}
//
// Run it (npm package `nats` v2, the version pinned in tests/jetstream/package.json):
//
//   npm install nats@2.29.3                          # or: tests/jetstream/setup.sh BUILD_DIR and
//                                                    #   NODE_PATH=BUILD_DIR/tests/jetstream/node_modules
//   node examples/jetstream_consumer.js nats://127.0.0.1:4222 WSBRIDGE --count 10
//   NATS_URL=nats://a:4222,nats://b:4222 node examples/jetstream_consumer.js --from-seq 5000
//   node examples/jetstream_consumer.js --durable billing      # the server keeps the position
//   node examples/jetstream_consumer.js --state billing.json   # the client keeps the position
//
//   [URL]             NATS server(s), comma-separated (default $NATS_URL, else nats://127.0.0.1:4222)
//   [STREAM]          the stream (default WSBRIDGE: sink.jetstream.stream)
//   --from-seq N      start at stream sequence N (default: the stream's first message)
//   --count N         exit 0 after N messages (default: follow the stream until SIGINT/SIGTERM)
//   --durable NAME    a durable pull consumer NAME (made when missing, explicit acks): a restart
//                     resumes after the last acknowledged message; default: an ordered consumer
//                     (ephemeral, no acks, nothing left on the server)
//   --state FILE      keep the position in FILE (JSON: stream_seq, epoch, seq), written after each
//                     message; a restart resumes after it and skips rows already processed
//   --timeout S       exit 1 when no message arrives for S seconds (default: wait forever)
//   --user U --password P | --token T | --creds FILE    authentication, as the server wants it
//
// Errors are one line on stderr and exit status 1 (2: a bad flag): the connection refused, the
// stream missing, JetStream not enabled, authentication refused.
//
// What the bridge puts in each message (bridge/sink/jetstream_sink.cc):
//   subject                <prefix>.<topic> (sink.jetstream.subject_prefix, default wsbridge);
//                          the topic's bytes outside [A-Za-z0-9_-] become '_', an empty topic '_'
//                          (so two topics may share a subject: use Wsbridge-Topic, not the subject)
//   data                   the payload, byte for byte (printed here as UTF-8 text; a payload that
//                          is not valid UTF-8 also gets "payload_base64")
//   Nats-Msg-Id            <epoch>-<seq>: the server drops a repeat within its duplicate window
//   Wsbridge-Seq           the row's seq in the bridge's journal (decimal), the one the ZeroMQ
//                          feed and the replay endpoint use
//   Wsbridge-Epoch         the journal's epoch, 16 lowercase hex digits: a new database (a new
//                          history whose seq starts again) has a new epoch
//   Wsbridge-Upstream-Seq  the upstream's own sequence number, 0 when it sent none
//   Wsbridge-Topic         the original topic; bytes below 0x20, 0x7f and '%' are percent-encoded
//                          (%0A), decoded here
//   Wsbridge-Received-At   when the bridge received it, in nanoseconds since the Unix epoch
//
// De-duplicating and resuming. The bridge puts every journal row into the stream once, in seq
// order, but a consumer still sees a row again when it restarts from an older position, and
// after an operator purged the stream (the bridge then copies its journal again from the oldest
// row). Keep (epoch, seq) of the last row processed, durably with your results:
//   - same epoch and seq <= the kept seq: seen already, skip it;
//   - same epoch and seq  > the kept seq: new (more than one past it: rows the journal's
//     retention trimmed before the sink delivered them; the bridge counts them in
//     wsbridge_sink_skipped_total);
//   - another epoch: the bridge's database was replaced; a new history starts (its seq counts
//     from its own start), so whatever you derived from the old one may need resetting.
// Resume with the stream sequence (--from-seq, --state, or a durable consumer), which orders the
// epochs too; (epoch, seq) only decides what was processed. --state does both here; numbers are
// printed verbatim (Wsbridge-Received-At needs more than a double's 53 bits).
'use strict';

const fs = require('fs');
const path = require('path');
const { parseArgs } = require('util');

const PROG = path.basename(process.argv[1] || 'jetstream_consumer.js');

function die(message, status = 1) {
  process.stderr.write(`${PROG}: ${message}\n`);
  process.exit(status);
}

// The npm package nats (after the flags: --help works without it).
function loadNats() {
  try {
    return require('nats');
  } catch (e) {
    return die("cannot load the npm package 'nats' (npm install nats@2, or set NODE_PATH to a " +
               'node_modules that has it, e.g. BUILD_DIR/tests/jetstream/node_modules after ' +
               'tests/jetstream/setup.sh)');
  }
}

function options() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        'from-seq': { type: 'string' },
        count: { type: 'string' },
        durable: { type: 'string' },
        state: { type: 'string' },
        timeout: { type: 'string' },
        user: { type: 'string' },
        password: { type: 'string' },
        token: { type: 'string' },
        creds: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    die(`${e.message} (see --help)`, 2);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    // The usage is the header's block of flags.
    const text = fs.readFileSync(__filename, 'utf8').split('\n');
    const from = text.findIndex((l) => l.includes('[URL]'));
    const to = text.findIndex((l, i) => i > from && l.trim() === '//');
    process.stdout.write(`usage: ${PROG} [URL] [STREAM] [flags]\n` +
                         text.slice(from, to).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
    process.exit(0);
  }
  if (positionals.length > 2) die(`unexpected argument '${positionals[2]}' (see --help)`, 2);
  const positive = (name, min) => {
    const v = values[name];
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v) || Number(v) < min || !Number.isSafeInteger(Number(v))) {
      die(`--${name} wants an integer >= ${min}, not '${v}'`, 2);
    }
    return Number(v);
  };
  const o = {
    servers: (positionals[0] || process.env.NATS_URL || 'nats://127.0.0.1:4222')
      .split(',').map((s) => s.trim()).filter(Boolean),
    stream: positionals[1] || 'WSBRIDGE',
    fromSeq: positive('from-seq', 1),
    count: positive('count', 1),
    timeoutS: positive('timeout', 1),
    durable: values.durable,
    state: values.state,
    auth: { user: values.user, pass: values.password, token: values.token, creds: values.creds },
  };
  if (o.durable !== undefined && !/^[A-Za-z0-9_-]+$/.test(o.durable)) {
    die(`--durable: '${o.durable}' is not a consumer name ([A-Za-z0-9_-]+)`, 2);
  }
  return o;
}

// The kept position (--state): {stream_seq, epoch, seq}, or null.
function readState(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (e.code === 'ENOENT') return null;
    die(`--state ${file}: ${e.message}`);
  }
  try {
    const s = JSON.parse(text);
    if (Number.isSafeInteger(s.stream_seq) && typeof s.epoch === 'string' && /^\d+$/.test(s.seq)) {
      return { stream_seq: s.stream_seq, epoch: s.epoch, seq: BigInt(s.seq) };
    }
  } catch (e) { /* reported below */ }
  return die(`--state ${file}: not a position written by this program (delete it to start over)`);
}

function writeState(file, s) {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, `{"stream_seq":${s.stream_seq},"epoch":${JSON.stringify(s.epoch)},` +
                        `"seq":${s.seq}}\n`);
  fs.renameSync(tmp, file);
}

// Wsbridge-Topic back to the topic: %XX to its byte, the rest as the UTF-8 it came in.
function decodeTopic(value) {
  const bytes = Buffer.from(value, 'utf8');
  const out = [];
  for (let i = 0; i < bytes.length; i++) {
    const hex = bytes[i] === 0x25 ? bytes.subarray(i + 1, i + 3).toString('latin1') : '';
    if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
      out.push(parseInt(hex, 16));
      i += 2;
    } else {
      out.push(bytes[i]);
    }
  }
  return Buffer.from(out).toString('utf8');
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

// One JSON line. The numbers from headers are written as their decimal digits (exact; 'null'
// when the header is missing or malformed: not a row of the bridge).
function line(m) {
  const h = m.headers;
  const get = (k) => (h ? h.get(k) : '');
  const num = (k) => (/^\d+$/.test(get(k)) ? get(k) : 'null');
  const epoch = get('Wsbridge-Epoch');
  const fields = [
    ['stream_seq', String(m.seq)],
    ['subject', JSON.stringify(m.subject)],
    ['seq', num('Wsbridge-Seq')],
    ['epoch', /^[0-9a-f]{16}$/.test(epoch) ? JSON.stringify(epoch) : 'null'],
    ['upstream_seq', num('Wsbridge-Upstream-Seq')],
    ['topic', h && h.has('Wsbridge-Topic') ? JSON.stringify(decodeTopic(get('Wsbridge-Topic'))) : 'null'],
    ['received_at_unix_ns', num('Wsbridge-Received-At')],
  ];
  let text;
  try {
    text = strictUtf8.decode(m.data);
  } catch (e) {
    text = Buffer.from(m.data).toString('utf8');  // U+FFFD for each bad byte
    fields.push(['payload_base64', JSON.stringify(Buffer.from(m.data).toString('base64'))]);
  }
  fields.splice(7, 0, ['payload', JSON.stringify(text)]);
  return `{${fields.map(([k, v]) => `"${k}":${v}`).join(',')}}\n`;
}

// One line for a failure of the connection or the JetStream API.
function describe(e, o) {
  const where = o.servers.join(',');
  const code = e && e.code;
  const api = e && e.api_error;
  if (code === 'CONNECTION_REFUSED') return `cannot connect to ${where}: connection refused`;
  if (code === 'AUTHORIZATION_VIOLATION' || code === 'AUTHENTICATION_EXPIRED') {
    return `${where}: authentication refused (${e.message})`;
  }
  if (code === '503' || /jetstream not enabled/i.test(e && e.message)) {
    return `${where}: JetStream is not enabled on the server (nats-server -js)`;
  }
  if (api && api.err_code === 10059) return `stream ${o.stream} not found on ${where}`;
  if (api && api.err_code === 10014) return `consumer ${o.durable} not found in stream ${o.stream}`;
  return `${where}: ${e && e.message ? e.message : e}`;
}

// The consumer's messages. Following the stream (wanted null): consume(), which pulls more as
// it goes. With --count (wanted() the messages still to print): pulls of at most that many, so
// that a durable consumer is handed no message this run will not acknowledge (the server would
// hold it back until its ack wait ends).
async function* messagesOf(consumer, wanted) {
  if (wanted === null) {
    yield* await consumer.consume();
    return;
  }
  while (wanted() > 0) {
    yield* await consumer.fetch({ max_messages: Math.min(wanted(), 1000), expires: 5000 });
  }
}

async function main() {
  const o = options();
  const { connect, AckPolicy, DeliverPolicy, credsAuthenticator } = loadNats();
  const state = o.state ? readState(o.state) : null;
  let last = state ? { epoch: state.epoch, seq: state.seq } : null;  // the last row processed

  const copts = { servers: o.servers, name: 'wsbridge-jetstream-consumer', reconnect: true,
                  maxReconnectAttempts: -1 };
  if (o.auth.user) Object.assign(copts, { user: o.auth.user, pass: o.auth.pass || '' });
  if (o.auth.token) copts.token = o.auth.token;
  if (o.auth.creds) {
    try {
      copts.authenticator = credsAuthenticator(fs.readFileSync(o.auth.creds));
    } catch (e) {
      die(`--creds ${o.auth.creds}: ${e.message}`);
    }
  }

  let nc;
  try {
    nc = await connect(copts);
  } catch (e) {
    die(describe(e, o));
  }
  let out = 0;
  let timer = null;
  const finish = async (status, message) => {
    if (timer) clearTimeout(timer);
    if (message) process.stderr.write(`${PROG}: ${message}\n`);
    await nc.close().catch(() => {});
    process.exit(status);
  };
  process.on('SIGINT', () => finish(0));
  process.on('SIGTERM', () => finish(0));
  // The reader went away (`... | head`): stop quietly, as a filter does.
  process.stdout.on('error', (e) => finish(e.code === 'EPIPE' ? 0 : 1, e.code === 'EPIPE' ? '' : e.message));
  const armTimeout = () => {
    if (!o.timeoutS) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => finish(1, `no message for ${o.timeoutS} s (${out} printed; ` +
                                        `stream ${o.stream} on ${o.servers.join(',')})`),
                       o.timeoutS * 1000);
  };

  try {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.info(o.stream);  // a missing stream is an error now, not a silent wait
    const from = o.fromSeq || (state ? state.stream_seq + 1 : undefined);
    const start = from ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from }
                       : { deliver_policy: DeliverPolicy.All };
    const js = nc.jetstream();
    let consumer;
    if (o.durable) {
      // Made once with the start position; later runs continue from its acknowledged floor.
      try {
        await jsm.consumers.info(o.stream, o.durable);
      } catch (e) {
        if (!(e.api_error && e.api_error.err_code === 10014)) throw e;
        await jsm.consumers.add(o.stream, { durable_name: o.durable, ack_policy: AckPolicy.Explicit,
                                            ...start });
      }
      consumer = await js.consumers.get(o.stream, o.durable);
    } else {
      // An ordered consumer takes the start sequence alone (it starts at the first message
      // without one; a deliver_policy next to opt_start_seq makes the server refuse it).
      consumer = await js.consumers.get(o.stream, from ? { opt_start_seq: from } : {});
    }

    armTimeout();
    for await (const m of messagesOf(consumer, o.count ? () => o.count - out : null)) {
      armTimeout();
      const h = m.headers;
      const epoch = h ? h.get('Wsbridge-Epoch') : '';
      const seqText = h ? h.get('Wsbridge-Seq') : '';
      const seq = /^\d+$/.test(seqText) ? BigInt(seqText) : null;
      // (epoch, seq) decides what was processed: skip a row seen before (see the header).
      const seen = last && seq !== null && epoch === last.epoch && seq <= last.seq;
      if (!seen) {
        if (!process.stdout.write(line(m))) {
          await new Promise((resolve) => process.stdout.once('drain', resolve));
        }
        out += 1;
        if (seq !== null) last = { epoch, seq };
      }
      if (o.state && last) writeState(o.state, { stream_seq: m.seq, ...last });
      if (o.durable) m.ack();
      if (o.count && out >= o.count) break;
    }
    if (o.durable) await nc.flush();
    await finish(0);
  } catch (e) {
    await finish(1, describe(e, o));
  }
}

main().catch((e) => die(e && e.message ? e.message : String(e)));
