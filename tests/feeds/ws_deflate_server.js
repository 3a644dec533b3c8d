// ws_deflate_server.js: a test upstream on Node's `ws` (v8) with permessage-deflate, speaking
// SPEC §6: numbered JSON frames {"seq":N,"topic":"t","data":"d<N>-0123..."}, replay after
// {"type":"resume","after":L}, acks {"type":"ack","id":...} for messages with an "id",
// {"type":"ping"} -> {"type":"pong"}; WebSocket pings every --ping-interval (ws.ping()), and a
// client that has not answered the previous one by the next is terminated.
//
// Run (node_modules from tests/feeds/setup.sh, e.g. NODE_PATH=<build>/tests/feeds/node_modules):
//   node tests/feeds/ws_deflate_server.js [--port 0] [--deflate tuned|defaults|off] [--rate 100]
//        [--count 0] [--topics t] [--pad 200] [--ping-interval 250] [--close-after 0]
//        [--no-resume] [--log-received FILE]
// --deflate tuned:    perMessageDeflate {threshold: 0, serverMaxWindowBits: 10,
//                     serverNoContextTakeover: true}
//           defaults: {threshold: 0} (context takeover, 15-bit windows)
//           off:      no permessage-deflate
// stdout, one line each: "listening <port>" once ready; "connected <n> extensions=<header>" per
// connection (n counts connections since start); "resume <n> after <L>"; "terminated <n> no pong";
// "closed <n> code=<c> sent=<k> pings=<p> pongs=<q>". Exits 0 on SIGTERM.
'use strict';

const { WebSocketServer } = require('ws');
const { parseOptions, feedData, say, Feed, lineLog, exitOnSignals } = require('./feed_common');

const USAGE = `usage: node ws_deflate_server.js [options]
  --port N            port, 0: chosen by the OS (default 0); prints "listening <port>"
  --host A            address (default 127.0.0.1)
  --deflate MODE      tuned (threshold 0, server window 10 bits, no context takeover; default),
                      defaults (threshold 0, context takeover, 15 bits), off
  --rate R            messages per second, 0: as fast as the client drains (default 100)
  --count N           stop producing after N messages, 0: never (default 0)
  --topics a,b        topics used round-robin (default t)
  --pad N             length of "data" (default 200)
  --ping-interval MS  WebSocket ping every MS ms; a client that did not answer the previous ping
                      is terminated; 0: no pings (default 250)
  --close-after K     close each connection (1001) after sending it K messages; 0: never
  --no-resume         stream from seq 1 at once instead of waiting for the resume
  --log-received FILE append every message a client sends (but resume and ping), one per line
`;

const o = parseOptions(
  {
    port: { type: 'number', default: 0 },
    host: { type: 'string', default: '127.0.0.1' },
    deflate: { type: 'string', default: 'tuned' },
    rate: { type: 'number', default: 100 },
    count: { type: 'number', default: 0 },
    topics: { type: 'string', default: 't' },
    pad: { type: 'number', default: 200 },
    'ping-interval': { type: 'number', default: 250 },
    'close-after': { type: 'number', default: 0 },
    'no-resume': { type: 'boolean', default: false },
    'log-received': { type: 'string' },
  },
  USAGE,
);

const DEFLATE = {
  tuned: { threshold: 0, serverMaxWindowBits: 10, serverNoContextTakeover: true },
  defaults: { threshold: 0 },
  off: false,
};
if (!(o.deflate in DEFLATE)) {
  process.stderr.write(`ws_deflate_server.js: --deflate must be tuned, defaults or off (got ${o.deflate})\n`);
  process.exit(2);
}

const topics = o.topics.split(',');
const feed = new Feed({ rate: o.rate, count: o.count });
const logReceived = lineLog(o['log-received']);
const MAX_BUFFERED = 1 << 20;  // bytes queued in ws before a connection waits

function frame(seq) {
  return JSON.stringify({ seq, topic: topics[(seq - 1) % topics.length], data: feedData(seq, o.pad) });
}

const wss = new WebSocketServer({ host: o.host, port: o.port, perMessageDeflate: DEFLATE[o.deflate] });
let connections = 0;
// The negotiated extensions, from the 101 response ws is about to send for this request.
const extensionsOf = new WeakMap();
wss.on('headers', (headers, req) => {
  const h = headers.find((l) => /^sec-websocket-extensions:/i.test(l));
  extensionsOf.set(req, h ? h.replace(/^[^:]*:\s*/, '') : '');
});

wss.on('connection', (ws, req) => {
  const id = ++connections;
  const c = { next: 0, sent: 0, pings: 0, pongs: 0, alive: true, timer: null, closing: false };
  say(`connected ${id} extensions=${extensionsOf.get(req) || ''}`);

  const pump = () => {
    c.timer = null;
    if (c.next === 0 || c.closing || ws.readyState !== ws.OPEN) return;
    while (c.next <= feed.produced()) {
      if (ws.bufferedAmount >= MAX_BUFFERED) {
        c.timer = setTimeout(pump, 1);
        return;
      }
      ws.send(frame(c.next));
      c.next++;
      c.sent++;
      if (o['close-after'] !== 0 && c.sent >= o['close-after']) {
        c.closing = true;
        ws.close(1001, 'close-after');
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

  ws.on('message', (data, isBinary) => {
    const text = data.toString();
    let msg = null;
    if (!isBinary) {
      try {
        msg = JSON.parse(text);
      } catch (e) {
        msg = null;
      }
    }
    if (msg && typeof msg === 'object' && msg.type === 'resume') {
      const after = Number(msg.after ?? 0);
      say(`resume ${id} after ${after}`);
      startAt(Number.isSafeInteger(after) && after >= 0 ? after + 1 : 1);
      return;
    }
    if (msg && typeof msg === 'object' && msg.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong' }));
      return;
    }
    logReceived(isBinary ? data.toString('base64') : text);
    if (msg && typeof msg === 'object' && msg.id !== undefined) {
      ws.send(JSON.stringify({ type: 'ack', id: String(msg.id) }));
    }
  });

  let pinger = null;
  if (o['ping-interval'] > 0) {
    ws.on('pong', () => {
      c.alive = true;
      c.pongs++;
    });
    pinger = setInterval(() => {
      if (!c.alive) {
        say(`terminated ${id} no pong`);
        ws.terminate();
        return;
      }
      c.alive = false;
      c.pings++;
      ws.ping();
    }, o['ping-interval']);
  }

  ws.on('close', (code) => {
    if (pinger) clearInterval(pinger);
    if (c.timer) clearTimeout(c.timer);
    say(`closed ${id} code=${code} sent=${c.sent} pings=${c.pings} pongs=${c.pongs}`);
  });
  ws.on('error', (e) => say(`error ${id} ${e.message}`));

  if (o['no-resume']) startAt(1);
});

wss.on('listening', () => say(`listening ${wss.address().port}`));
exitOnSignals(
  () =>
    new Promise((resolve) => {
      for (const ws of wss.clients) ws.close(1001, 'server shutting down');
      wss.close(() => resolve());
    }),
);
