// The driver for the Node peer (socket.io-client, WebSocket only), with the
// same modes, options and result line as the C drivers (bench_common.h).
// --proto ms speaks what MicroStream Node services speak (query
// {serviceName}; `request` {targetService, payload: {id, event, data}};
// `response` {id, response}), to drive microstream-hub's Socket.IO
// endpoint and hub.js's MicroStream mode with the same client.
'use strict';
const fs = require('fs');
const { io } = require('socket.io-client');

const o = { mode: process.argv[2], conc: 1, warmup: 2, seconds: 10, count: 0, pid: 0, n: 0, name: 'idle',
            proto: 'bench' };
for (let i = 3; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, ''), v = process.argv[i + 1];
  o[k] = k === 'url' || k === 'name' || k === 'proto' ? v : Number(v);
}
const MS = o.proto === 'ms';

function hubCpu() {
  try {
    const s = fs.readFileSync('/proc/' + o.pid + '/stat', 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime (USER_HZ)
  } catch (e) { return -1; }
}

function connect(service) {
  const opts = { transports: ['websocket'], reconnection: false, forceNew: true, timeout: 60000 };
  if (MS) opts.query = { serviceName: service };
  else opts.auth = { service };
  return io(o.url, opts);
}
// MicroStream's protocol has no welcome: being connected is being registered.
const READY = MS ? 'connect' : 'welcome';

const nowNs = () => process.hrtime.bigint();

if (o.mode === 'echo') {
  const s = connect('echo');
  if (MS) s.on('request', (m) => s.emit('response', { id: m.id, response: m.data }));
  else s.on('request', (m) => s.emit('response', { id: m.id, data: m.data }));
  process.stdin.on('data', () => {});
  process.stdin.on('end', () => process.exit(0));
} else if (o.mode === 'req') {
  const s = connect('requester');
  const cap = o.count > 0 ? o.count + 1024 : 8 << 20;
  const lat = new Uint32Array(cap);
  let nlat = 0, requests = 0, errors = 0, inFlight = 0, nextId = 1;
  let measuring = false, done = false, tMeasure = 0n, tEnd = 0n, cpu0 = 0, cpu1 = 0, secs = 0;
  const payload = 'x'.repeat(64); // a 64-byte str
  const sent = new Map(); // id -> send time
  const sendOne = () => {
    const id = nextId++;
    sent.set(id, nowNs());
    inFlight++;
    if (MS) s.emit('request', { targetService: 'echo', payload: { id: String(id), event: 'echo', data: payload } });
    else s.emit('request', { id, target: 'echo', event: 'echo', data: payload, timeout: 10000 });
  };
  const tick = (now, ns, err) => {
    if (!measuring && now >= tMeasure) {
      measuring = true; tMeasure = now; tEnd = now + BigInt(Math.round(o.seconds * 1e9)); cpu0 = hubCpu();
    }
    if (measuring) {
      if (err) errors++;
      else { requests++; if (nlat < cap) lat[nlat++] = Math.min(Number(ns), 0xffffffff); }
      if (o.count > 0 ? requests >= o.count : now >= tEnd) {
        cpu1 = hubCpu(); secs = Number(now - tMeasure) / 1e9; done = true;
      }
    }
    return done;
  };
  const finish = () => {
    const v = lat.subarray(0, nlat).sort();
    const pct = (q) => (nlat ? v[Math.floor(q * (nlat - 1))] / 1000 : 0);
    const cpu = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
    console.log(JSON.stringify({ requests, errors, seconds: secs, rps: secs > 0 ? requests / secs : 0,
                                 p50_us: pct(0.5), p99_us: pct(0.99), hub_cpu_s: cpu }));
    s.close();
    process.exit(0);
  };
  const onAnswer = (m, err) => {
    const t0 = sent.get(m.id);
    if (t0 === undefined) return;
    sent.delete(m.id);
    inFlight--;
    const now = nowNs();
    if (!tick(now, now - t0, err)) sendOne();
    if (done && inFlight === 0) finish();
  };
  if (MS) s.on('response', (m) => onAnswer({ id: Number(m.id) }, m.response !== payload));
  else s.on('response', (m) => onAnswer(m, m.data !== payload));
  s.on('error_', (m) => onAnswer(m, true));
  s.on(READY, () => {
    const t = nowNs();
    if (o.count > 0 || o.warmup <= 0) {
      measuring = true; tMeasure = t; tEnd = t + BigInt(Math.round(o.seconds * 1e9)); cpu0 = hubCpu();
    } else tMeasure = t + BigInt(Math.round(o.warmup * 1e9));
    for (let i = 0; i < o.conc; i++) sendOne();
  });
} else if (o.mode === 'idle') {
  // Connect in batches so the hub is not flooded with handshakes.
  const socks = [];
  let ready = 0, next = 0;
  const batch = () => {
    const end = Math.min(next + 100, o.n);
    let pending = end - next;
    for (; next < end; next++) {
      const s = connect(o.name + '-' + next);
      socks.push(s);
      s.once(READY, () => {
        ready++;
        if (--pending === 0) {
          if (next < o.n) batch();
          else console.log('ready ' + ready);
        }
      });
      s.on('connect_error', (e) => { console.error('connect_error ' + e.message); process.exit(1); });
    }
  };
  if (o.n > 0) batch(); else console.log('ready 0');
  process.stdin.on('data', () => {});
  process.stdin.on('end', () => { for (const s of socks) s.close(); process.exit(0); });
} else {
  console.error('usage: load.js echo|req|idle --url URL [--conc C] ...');
  process.exit(2);
}
