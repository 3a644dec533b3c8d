// socketio_server.js: a socket.io v4 test upstream (npm socket.io, Engine.IO v4, websocket
// transport only) for the bridge's `protocol.framing = "engineio"` (SPEC §9).
//
// It emits numbered events socket.emit(<event>, {seq: N, data: "d<N>-0123..."}) on the wire as
// 42["trade",{"seq":1,"data":"d1-0123456789..."}], event names round-robin over --events;
// answers a client event ["resume", {"after": L}] by replaying from L+1 (all history is kept: the
// stream is a function of N); pings every --ping-interval ms and drops a client whose pong does
// not come within --ping-timeout ms (socket.io's own heartbeat); checks an auth token; can
// disconnect a client once to test reconnects; logs every event a client sends.
//
// Run (node_modules from tests/feeds/setup.sh, e.g. NODE_PATH=<build>/tests/feeds/node_modules):
//   node tests/feeds/socketio_server.js [--port 0] [--ping-interval 300] [--ping-timeout 200]
//        [--namespace /] [--token SECRET] [--rate 100] [--count 0] [--events trade,quote]
//        [--pad 16] [--disconnect-after K] [--disconnect-mode namespace|transport]
//        [--no-resume] [--per-message-deflate] [--log-received FILE]
// URL: ws://127.0.0.1:<port>/socket.io/?EIO=4&transport=websocket
// stdout, one line each: "listening <port>" once ready; "engine <k>" per Engine.IO connection;
// "connected <n> <namespace> sid=<sid>" per namespace connection accepted (n counts them since
// start; a test asserts exactly one with this line); "connect_error <k> unauthorized";
// "resume <n> after <L>"; "disconnecting <n> <mode> after <K>"; "disconnected <n> <reason>".
// Exits 0 on SIGTERM.
'use strict';

const http = require('http');
const { Server } = require('socket.io');
const { parseOptions, feedData, say, Feed, lineLog, exitOnSignals } = require('./feed_common');

const USAGE = `usage: node socketio_server.js [options]
  --port N               port, 0: chosen by the OS (default 0); prints "listening <port>"
  --host A               address (default 127.0.0.1)
  --ping-interval MS     Engine.IO pingInterval (default 300)
  --ping-timeout MS      Engine.IO pingTimeout (default 200)
  --namespace NS         namespace the events go to (default /); others but "/" (which
                         socket.io always has) get 44/<ns>,{"message":"Invalid namespace"}
  --token T              require handshake auth {"token": T}; otherwise the connect fails with
                         44{"message":"unauthorized"} (default: no check)
  --rate R               events per second, 0: as fast as possible (default 100)
  --count N              stop producing after N events, 0: never (default 0)
  --events a,b           event names, round-robin (default trade,quote)
  --pad N                length of the "data" string (default 16)
  --disconnect-after K   once per run: after K events on a connection, disconnect it
  --disconnect-mode M    namespace: socket.disconnect() (the client gets 41; default);
                         transport: close the Engine.IO connection (a WebSocket close, no 41)
  --no-resume            emit from seq 1 on connect instead of waiting for a "resume" event
  --per-message-deflate  offer permessage-deflate (threshold 0) on the websocket transport
  --log-received FILE    append every event a client sends, but "resume", as one JSON array
                         ["event", args...] per line
`;

const o = parseOptions(
  {
    port: { type: 'number', default: 0 },
    host: { type: 'string', default: '127.0.0.1' },
    'ping-interval': { type: 'number', default: 300 },
    'ping-timeout': { type: 'number', default: 200 },
    namespace: { type: 'string', default: '/' },
    token: { type: 'string', default: '' },
    rate: { type: 'number', default: 100 },
    count: { type: 'number', default: 0 },
    events: { type: 'string', default: 'trade,quote' },
    pad: { type: 'number', default: 16 },
    'disconnect-after': { type: 'number', default: 0 },
    'disconnect-mode': { type: 'string', default: 'namespace' },
    'no-resume': { type: 'boolean', default: false },
    'per-message-deflate': { type: 'boolean', default: false },
    'log-received': { type: 'string' },
  },
  USAGE,
);
if (!['namespace', 'transport'].includes(o['disconnect-mode'])) {
  process.stderr.write(`socketio_server.js: --disconnect-mode must be namespace or transport\n`);
  process.exit(2);
}

const events = o.events.split(',');
const feed = new Feed({ rate: o.rate, count: o.count });
const logReceived = lineLog(o['log-received']);
const MAX_BUFFERED = 1 << 20;

const httpServer = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const io = new Server(httpServer, {
  pingInterval: o['ping-interval'],
  pingTimeout: o['ping-timeout'],
  transports: ['websocket'],
  perMessageDeflate: o['per-message-deflate'] ? { threshold: 0 } : false,
  serveClient: false,
});

let engines = 0;
io.engine.on('connection', () => say(`engine ${++engines}`));

let connects = 0;
let connectErrors = 0;
let disconnectDone = false;
const nsp = io.of(o.namespace);

if (o.token !== '') {
  nsp.use((socket, next) => {
    const auth = socket.handshake.auth || {};
    if (auth.token === o.token) return next();
    say(`connect_error ${++connectErrors} unauthorized`);
    return next(new Error('unauthorized'));
  });
}

// Bytes waiting to be written on the socket's connection (Engine.IO buffer + the ws socket).
function buffered(socket) {
  const conn = socket.conn;
  const ws = conn && conn.transport && conn.transport.socket;
  return (conn ? conn.writeBuffer.length * 64 : 0) + ((ws && ws.bufferedAmount) || 0);
}

nsp.on('connection', (socket) => {
  const id = ++connects;
  const c = { next: 0, sent: 0, timer: null };
  say(`connected ${id} ${nsp.name} sid=${socket.id}`);

  const pump = () => {
    c.timer = null;
    if (c.next === 0 || !socket.connected) return;
    while (c.next <= feed.produced()) {
      if (buffered(socket) >= MAX_BUFFERED) {
        c.timer = setTimeout(pump, 1);
        return;
      }
      const seq = c.next++;
      socket.emit(events[(seq - 1) % events.length], { seq, data: feedData(seq, o.pad) });
      c.sent++;
      if (!disconnectDone && o['disconnect-after'] !== 0 && c.sent >= o['disconnect-after']) {
        disconnectDone = true;
        say(`disconnecting ${id} ${o['disconnect-mode']} after ${c.sent}`);
        if (o['disconnect-mode'] === 'namespace') socket.disconnect();
        else socket.conn.close();
        return;
      }
    }
    const wait = feed.msUntil(c.next);
    if (wait !== Infinity) c.timer = setTimeout(pump, Math.max(1, Math.ceil(wait)));
  };
  const startAt = (seq) => {
    c.next = seq;
    if (c.timer) clearTimeout(c.timer);
    pump();
  };

  socket.onAny((event, ...args) => {
    if (event === 'resume') {
      const arg = args[0] || {};
      const after = Number(arg.after ?? 0);
      say(`resume ${id} after ${after}`);
      startAt(Number.isSafeInteger(after) && after >= 0 ? after + 1 : 1);
      return;
    }
    logReceived(JSON.stringify([event, ...args.filter((a) => typeof a !== 'function')]));
  });
  socket.on('disconnect', (reason) => {
    if (c.timer) clearTimeout(c.timer);
    say(`disconnected ${id} ${reason}`);
  });

  if (o['no-resume']) startAt(1);
});

httpServer.listen(o.port, o.host, () => say(`listening ${httpServer.address().port}`));
exitOnSignals(() => new Promise((resolve) => io.close(() => resolve())));
