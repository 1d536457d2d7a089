// Existing MicroStream Node services against microstream-hub's Socket.IO
// endpoint, with the stock npm `socket.io-client` (ms_client.js is the
// MicroStream client's wire behaviour on it), beside C services and
// ms-req. Every step is bounded; prints TAP.
//   node sio_test.js BUILD_DIR SOURCE_ROOT C_ECHO_SERVICE
'use strict';
const path = require('path');
const fs = require('fs');
const os = require('os');
const http = require('http');
const { spawn, execFile } = require('child_process');
const assert = require('assert');

const [buildDir, srcRoot, cEchoBin] = process.argv.slice(2);
let ioClient, WebSocket;
try {
  ioClient = require(path.join(srcRoot, 'node_modules', 'socket.io-client'));
  WebSocket = require(path.join(srcRoot, 'node_modules', 'ws'));
} catch (e) {
  console.log('1..0 # SKIP node_modules missing (npm ci): ' + e.message.split('\n')[0]);
  process.exit(0); // TAP: the plan "1..0 # SKIP" makes meson report a skip
}
module.paths.unshift(path.join(srcRoot, 'node_modules'));
const { MicroStreamClient } = require('./ms_client.js');

const HUB = path.join(buildDir, 'tools', 'microstream-hub');
const MS_REQ = path.join(buildDir, 'tools', 'ms-req');
const HB = 1000; // the hub's heartbeat interval in these tests (pingTimeout is twice it)
// The bound of every wait for something that must happen (and the test
// clients' own request timeout): generous, as the hub runs under ASan on a
// machine that may be busy. Nothing here asserts how fast a thing is.
const WAIT = 30000;

const children = [];
const clients = [];
let n = 0;
let failed = 0;

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
function within(ms, p, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => {
    t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  })]).finally(() => clearTimeout(t));
}
async function until(fn, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await sleep(50);
  }
}

async function startHub(extra = []) {
  const p = spawn(HUB, ['--listen', '127.0.0.1:0', '--heartbeat-ms', String(HB),
    '--no-store', '--log-level', 'warn', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(p);
  let out = '';
  p.stderr.on('data', (d) => { out += d; });
  const port = await within(WAIT, new Promise((res, rej) => {
    p.stdout.on('data', (d) => {
      out += d;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) res(Number(m[1]));
    });
    p.on('exit', (c) => rej(new Error('hub exited ' + c + ': ' + out)));
  }), 'hub start');
  return { proc: p, port, url: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/ws` };
}

function get(port, p) {
  return new Promise((res, rej) => {
    http.get({ host: '127.0.0.1', port, path: p, agent: false }, (r) => {
      let b = '';
      r.on('data', (d) => { b += d; });
      r.on('end', () => res({ status: r.statusCode, body: b, headers: r.headers }));
    }).on('error', rej);
  });
}
function httpReq(port, method, p, body, extraHeaders = {}) {
  return new Promise((res, rej) => {
    const headers = Object.assign(body !== undefined ? { 'content-type': 'text/plain;charset=UTF-8',
      'content-length': Buffer.byteLength(body) } : {}, extraHeaders);
    const r = http.request({ host: '127.0.0.1', port, path: p, method, agent: false,
      headers }, (resp) => {
      let b = '';
      resp.setEncoding('utf8');
      resp.on('data', (d) => { b += d; });
      resp.on('end', () => res({ status: resp.statusCode, body: b, headers: resp.headers }));
    });
    r.on('error', rej);
    if (body !== undefined) r.write(body);
    r.end();
  });
}
const base = '/socket.io/?EIO=4&transport=polling';
async function services(port) {
  return JSON.parse((await get(port, '/api/services')).body);
}

function client(hub, serviceName, extra = {}) {
  const c = new MicroStreamClient(Object.assign({ hubUrl: hub.url, serviceName,
    heartbeatInterval: HB, timeout: WAIT }, extra));
  clients.push(c);
  return c;
}
function connected(c) {
  if (c.socket.connected) return Promise.resolve();
  return within(WAIT, new Promise((res, rej) => {
    c.socket.once('connect', res);
    c.socket.once('connect_error', rej);
  }), 'connect');
}
function watcher(hub, extra = {}) {
  const s = ioClient.io(hub.url, Object.assign({ forceNew: true }, extra));
  const logs = [];
  s.on('log', (r) => logs.push(r));
  clients.push({ close: () => s.close() });
  return { s, logs };
}
function msReq(hub, target, event, json) {
  return new Promise((res) => {
    execFile(MS_REQ, ['--hub', hub.ws, target, event, json], { timeout: WAIT,
      maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      res({ code: err ? err.code : 0, stdout, stderr });
    });
  });
}

async function test(name, fn) {
  n++;
  try {
    await within(3 * WAIT, fn(), name);
    console.log(`ok ${n} - ${name}`);
  } catch (e) {
    failed++;
    console.log(`not ok ${n} - ${name}`);
    const text = e && e.stack ? e.stack : (e && typeof e === 'object' ? JSON.stringify(e) : String(e));
    console.log('# ' + text.split('\n').join('\n# '));
  }
}

const PAYLOADS = {
  nested: { a: { b: { c: [1, { d: [true, false, null] }] } }, e: [] },
  unicode: { s: 'héllo wörld ✓ 日本語 🚀', k: { 'ключ': 'значение' } },
  large: { s: 'x'.repeat(100000) + 'é', arr: Array.from({ length: 2000 }, (_, i) => i) },
  numbers: { i: 0, neg: -42, max: 9007199254740991, min: -9007199254740991,
    f: 3.25, tiny: 1e-7, big: 1.5e300 },
};

async function main() {
  const hub = await startHub();
  const cEcho = spawn(cEchoBin, [hub.ws, 'c-echo'], { stdio: ['ignore', 'ignore', 'ignore'] });
  children.push(cEcho);

  // ---- services calling each other ----
  const svcA = client(hub, 'node-a');
  svcA.on('add', (d) => ({ sum: d.a + d.b }));
  svcA.on('echo', (d) => d);
  svcA.on('boom', () => { throw new Error('kaboom'); });
  const svcB = client(hub, 'node-b');
  svcB.on('echo', (d) => d);

  await test('a Node service answers and a second one calls it', async () => {
    await connected(svcA);
    await connected(svcB);
    assert.deepStrictEqual(await svcB.request('node-a', 'add', { a: 2, b: 3 }), { sum: 5 });
  });
  await test('second calls and concurrent calls get their own answers', async () => {
    for (let i = 0; i < 5; i++)
      assert.deepStrictEqual(await svcB.request('node-a', 'add', { a: i, b: 1 }), { sum: i + 1 });
    const rs = await Promise.all(Array.from({ length: 50 },
      (_, i) => svcB.request('node-a', 'add', { a: i, b: i })));
    rs.forEach((r, i) => assert.strictEqual(r.sum, 2 * i));
    // and the other way round
    assert.deepStrictEqual(await svcA.request('node-b', 'echo', 'hi'), 'hi');
  });
  await test('missing target: TARGET_SERVICE_NOT_FOUND inside response', async () => {
    const e = await svcB.request('nobody', 'x', 1).then(() => null, (err) => err);
    assert.strictEqual(e.code, 'TARGET_SERVICE_NOT_FOUND');
    assert.strictEqual(e.message, 'Service "nobody" not found');
    assert.strictEqual(e.errorData.targetService, 'nobody');
    assert.strictEqual(typeof e.errorData.requestID, 'string');
    assert.strictEqual(e.errorData.requestID.length, 21);
  });
  await test('unknown event: EVENT_NOT_FOUND from the target', async () => {
    const e = await svcB.request('node-a', 'nope', 1).then(() => null, (err) => err);
    assert.strictEqual(e.code, 'EVENT_NOT_FOUND');
    assert.strictEqual(e.message, 'Event "nope" not found');
    assert.strictEqual(e.errorData.event, 'nope');
    assert.strictEqual(e.errorData.serviceName, 'node-a');
    // the target saw the caller's own id, as through the Node hub
    assert.strictEqual(typeof e.errorData.requestID, 'string');
    assert.strictEqual(e.errorData.requestID.length, 21);
  });
  await test('throwing handler: INTERNAL_SERVER_ERROR', async () => {
    const e = await svcB.request('node-a', 'boom', 1).then(() => null, (err) => err);
    assert.strictEqual(e.code, 'INTERNAL_SERVER_ERROR');
    assert.strictEqual(e.errorData.error, 'kaboom');
  });
  await test('late response after the caller\'s own timeout reaches onLateResponse', async () => {
    // A Node service whose code answers later (its own timer).
    const slow = ioClient.io(hub.url, { forceNew: true, query: { serviceName: 'node-slow' } });
    clients.push({ close: () => slow.close() });
    slow.on('request', ({ id, data }) => {
      setTimeout(() => slow.emit('response', { id, response: { late: data } }), 700);
    });
    await within(WAIT, new Promise((r) => slow.once('connect', r)), 'slow connect');
    let late;
    const gotLate = new Promise((r) => { late = r; });
    const e = await svcB.request('node-slow', 'x', 7, { timeout: 200,
      allowLateResponseAfterTimeout: true,
      onLateResponse: (err, info) => late({ err, info }) }).then(() => null, (err) => err);
    assert.strictEqual(e.code, 'REQUEST_TIMEOUT'); // the client's own
    const l = await within(WAIT, gotLate, 'late response');
    assert.strictEqual(l.err, null);
    assert.deepStrictEqual(l.info.response, { late: 7 });
    // without allowLate, the answer arrives and is only logged by the client
    const before = svcB.lateLog.length;
    await svcB.request('node-slow', 'x', 8, { timeout: 200 }).catch(() => {});
    await until(() => svcB.lateLog.length > before, WAIT, 'dropped late answer');
  });
  await test('duplicate name: CONNECT_ERROR with the MicroStream data', async () => {
    let err;
    const dup = client(hub, 'node-a', { onConnectError: (e) => { err = e; } });
    await until(() => err, WAIT, 'connect_error');
    assert.strictEqual(err.message, 'DUPLICATE_SERVICE_REGISTRATION');
    assert.deepStrictEqual(err.data, { code: 'DUPLICATE_SERVICE_REGISTRATION',
      message: 'Duplicate Service Registration Name! A service with the same name is already registered.',
      errorData: { serviceName: 'node-a' } });
    dup.close();
    assert.deepStrictEqual(await svcB.request('node-a', 'add', { a: 1, b: 1 }), { sum: 2 });
  });
  await test('heartbeat-only liveness: an idle service stays over 3 intervals', async () => {
    const idle = client(hub, 'node-idle');
    idle.on('ping', () => 'pong');
    await connected(idle);
    await sleep(HB * 3 + HB * 2);
    assert.ok((await services(hub.port)).some((s) => s.name === 'node-idle'));
    assert.strictEqual(await svcB.request('node-idle', 'ping', null), 'pong');
  });
  await test('a frozen Node service is removed after missed pongs', async () => {
    const child = spawn(process.execPath, ['-e', `
      module.paths.unshift(${JSON.stringify(path.join(srcRoot, 'node_modules'))});
      const { MicroStreamClient } = require(${JSON.stringify(path.join(__dirname, 'ms_client.js'))});
      const c = new MicroStreamClient({ hubUrl: ${JSON.stringify(hub.url)}, serviceName: 'node-frozen' });
      c.socket.on('connect', () => console.log('up'));`], { stdio: ['ignore', 'pipe', 'ignore'] });
    children.push(child);
    await within(WAIT, new Promise((r) => child.stdout.once('data', r)), 'frozen up');
    await until(async () => (await services(hub.port)).some((s) => s.name === 'node-frozen'), WAIT, 'registered');
    child.kill('SIGSTOP');
    await until(async () => !(await services(hub.port)).some((s) => s.name === 'node-frozen'),
      WAIT, 'removal');
    child.kill('SIGKILL');
  });

  // ---- mixed with C ----
  await test('a C service (library) called from Socket.IO: payloads survive', async () => {
    await until(async () => (await services(hub.port)).some((s) => s.name === 'c-echo'), WAIT, 'c-echo');
    for (const [k, v] of Object.entries(PAYLOADS))
      assert.deepStrictEqual(await svcB.request('c-echo', 'echo', v), v, k);
    const e = await svcB.request('c-echo', 'fail', 1).then(() => null, (err) => err);
    assert.strictEqual(e.code, 'C_SIDE_ERROR');
    assert.strictEqual(e.message, 'failed on purpose');
    const e2 = await svcB.request('c-echo', 'nope', 1).then(() => null, (err) => err);
    assert.strictEqual(e2.code, 'EVENT_NOT_FOUND');
  });
  await test('acks: a request emitted with an ack is answered by the ACK; other events are acked', async () => {
    const s = svcB.socket.timeout(WAIT);
    // to a C service and to a Socket.IO service, with and without payload.id
    assert.deepStrictEqual(await s.emitWithAck('request', { targetService: 'c-echo',
      payload: { event: 'echo', data: PAYLOADS.unicode } }), PAYLOADS.unicode);
    assert.deepStrictEqual(await s.emitWithAck('request', { targetService: 'node-a',
      payload: { id: 'ack-1', event: 'add', data: { a: 2, b: 3 } } }), { sum: 5 });
    // errors come inside the ACK, as inside `response`
    const miss = await s.emitWithAck('request', { targetService: 'nobody-here',
      payload: { event: 'x', data: 1 } });
    assert.strictEqual(miss.error.code, 'TARGET_SERVICE_NOT_FOUND');
    assert.strictEqual(miss.error.message, 'Service "nobody-here" not found');
    const nf = await s.emitWithAck('request', { targetService: 'node-a',
      payload: { id: 'ack-2', event: 'nope', data: 1 } });
    assert.strictEqual(nf.error.code, 'EVENT_NOT_FOUND');
    // no `response` event besides the ACK
    assert.ok(!svcB.lateLog.some((r) => r.id === 'ack-1' || r.id === 'ack-2'),
      JSON.stringify(svcB.lateLog));
    // known events are acked without arguments, unknown ones with an error
    assert.strictEqual(await s.emitWithAck('heartbeat', { serviceName: 'node-b' }), undefined);
    assert.strictEqual(await s.emitWithAck('log', { level: 'info', message: 'acked log' }), undefined);
    const unk = await s.emitWithAck('no-such-event', { x: 1 });
    assert.deepStrictEqual(unk, { error: { code: 'EVENT_NOT_FOUND',
      message: 'Event "no-such-event" not found', errorData: { event: 'no-such-event' } } });
    // ACK packets from a client (the hub asks for none) are ignored
    svcB.socket.io.engine.send('3999[]');
    assert.deepStrictEqual(await svcB.request('c-echo', 'echo', 7), 7);
  });
  await test('binary: Buffers travel as attachments between Socket.IO and C services (MessagePack bin)', async () => {
    const buf = Buffer.from([0, 1, 2, 250, 255, 0x1e, 0x22]);
    const big = Buffer.alloc(70000, 7);
    const d = { b: buf, nested: [buf, { x: big }], s: 'text' };
    // Socket.IO requester -> C echo service: bin there, attachments back
    const back = await svcB.request('c-echo', 'echo', d);
    assert.ok(Buffer.isBuffer(back.b), JSON.stringify(back));
    assert.deepStrictEqual(back, d);
    // Socket.IO -> Socket.IO through the hub, polling-only included
    const p = client(hub, 'node-bin-poll', { ioOptions: { transports: ['polling'] } });
    p.on('echo', (x) => x);
    await connected(p);
    assert.deepStrictEqual(await svcB.request('node-bin-poll', 'echo', d), d);
    assert.deepStrictEqual(await p.request('node-a', 'echo', d), d);
    // with an ack: a BINARY_ACK
    const acked = await svcB.socket.timeout(WAIT).emitWithAck('request', { targetService: 'c-echo',
      payload: { event: 'echo', data: buf } });
    assert.deepStrictEqual(acked, buf);
    // a C client (ms-req) calling a Socket.IO service that answers a Buffer: bin, shown as base64
    svcA.on('bytes', () => Buffer.from('hello bytes'));
    const r = await msReq(hub, 'node-a', 'bytes', 'null');
    assert.strictEqual(r.code, 0, r.stderr);
    assert.strictEqual(JSON.parse(r.stdout), Buffer.from('hello bytes').toString('base64'));
    // bounded, on raw WebSocket sessions (the close code says why): more
    // attachments than the hub takes (1009), a placeholder that names no
    // attachment, binary data nobody announced, text while attachments are
    // due (4002)
    const closeCode = async (name, send) => {
      const ws = new WebSocket(`ws://127.0.0.1:${hub.port}/socket.io/?EIO=4&transport=websocket&serviceName=${name}`);
      const msgs = [];
      ws.on('message', (m, isBin) => msgs.push(isBin ? m : String(m)));
      const closed = new Promise((res) => ws.once('close', (code) => res(code)));
      await within(WAIT, new Promise((res) => ws.once('open', res)), 'ws open');
      ws.send('40');
      await until(() => msgs.some((m) => typeof m === 'string' && m.startsWith('40')), WAIT, 'ws connect');
      send(ws);
      return within(WAIT, closed, 'ws closed');
    };
    const logEv = (msg) => JSON.stringify(['log', { level: 'info', message: msg }]);
    assert.strictEqual(await closeCode('raw-bin1', (ws) => ws.send('4565-' + logEv('x'))), 1009);
    assert.strictEqual(await closeCode('raw-bin2', (ws) => {
      ws.send('451-' + logEv({ _placeholder: true, num: 3 }));
      ws.send(Buffer.from('zz'));
    }), 4002);
    assert.strictEqual(await closeCode('raw-bin3', (ws) => ws.send(Buffer.from('zz'))), 4002);
    assert.strictEqual(await closeCode('raw-bin4', (ws) => {
      ws.send('451-' + logEv({ _placeholder: true, num: 0 }));
      ws.send('42' + logEv('text while an attachment is due'));
    }), 4002);
    // a well-formed one over the raw WebSocket: the attachment arrives as bin
    // (a C watcher would see it; here: the event is taken, the session lives)
    assert.strictEqual(await closeCode('raw-bin5', (ws) => {
      ws.send('451-' + logEv({ _placeholder: true, num: 0 }));
      ws.send(Buffer.from('ok'));
      ws.send('41'); // then a normal DISCONNECT
    }), 1000);
    assert.deepStrictEqual(await svcB.request('c-echo', 'echo', 1), 1); // others unaffected
  });
  await test('ms-req calls a Socket.IO service: payloads survive', async () => {
    for (const [k, v] of Object.entries(PAYLOADS)) {
      const r = await msReq(hub, 'node-b', 'echo', JSON.stringify(v));
      assert.strictEqual(r.code, 0, k + ': ' + r.stderr);
      assert.deepStrictEqual(JSON.parse(r.stdout), v, k);
    }
    const r = await msReq(hub, 'node-a', 'nope', '{}');
    assert.strictEqual(r.code, 1);
    assert.match(r.stdout + r.stderr, /EVENT_NOT_FOUND/);
  });
  await test('Socket.IO services in presence (ms-tail --presence) and their logs in ms-tail', async () => {
    const MS_TAIL = path.join(buildDir, 'tools', 'ms-tail');
    const run = (args) => new Promise((res) => execFile(MS_TAIL, ['--hub', hub.ws, '--json', ...args],
      { timeout: WAIT }, (err, stdout) => res(stdout)));
    const pres = (await run(['--presence', '-n', '100'])).trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(pres.some((p) => p.service === 'node-a' && p.kind === 'up'), JSON.stringify(pres));
    svcA.socket.emit('log', { level: 'error', message: 'seen by ms-tail', code: 7 });
    await until(async () => (await run(['--service', 'node-a', '-n', '50'])).includes('seen by ms-tail'),
      WAIT, 'record in ms-tail');
    const recs = (await run(['--service', 'node-a', '-n', '50'])).trim().split('\n').map((l) => JSON.parse(l));
    const r = recs.find((x) => x.message === 'seen by ms-tail');
    assert.strictEqual(r.level, 40);
    assert.strictEqual(r.fields.code, 7);
  });
  await test('Socket.IO services in /api/services (protocol) and /metrics', async () => {
    const list = await services(hub.port);
    const a = list.find((s) => s.name === 'node-a');
    assert.strictEqual(a.protocol, 'socket.io');
    assert.strictEqual(list.find((s) => s.name === 'c-echo').protocol, 'microstream');
    const m = (await get(hub.port, '/metrics')).body;
    const sessions = /microstream_socketio_sessions (\d+)/.exec(m);
    assert.ok(sessions && Number(sessions[1]) >= 3, m);
  });

  await test('/metrics counts a Socket.IO session\'s WebSocket as socket.io, once', async () => {
    const byProto = async () => {
      const m = (await get(hub.port, '/metrics')).body;
      const v = (p) => Number((new RegExp(`microstream_connections_by_protocol\\{protocol="${p}"\\} (\\d+)`)).exec(m)[1]);
      return { sio: v('socket.io'), mp: v('microstream.v1'), sessions: Number(/microstream_socketio_sessions (\d+)/.exec(m)[1]) };
    };
    const before = await byProto();
    // every open session counts once under socket.io (upgraded or not)
    assert.strictEqual(before.sio, before.sessions, JSON.stringify(before));
    const w = client(hub, 'node-metrics-ws', { ioOptions: { transports: ['websocket'] } });
    const p = client(hub, 'node-metrics-up'); // polling, then upgraded
    await connected(w);
    await connected(p);
    await until(() => p.socket.io.engine.transport.name === 'websocket', WAIT, 'upgrade');
    const after = await until(async () => {
      const a = await byProto();
      return a.sio === before.sio + 2 ? a : null;
    }, WAIT, 'two more socket.io connections');
    assert.strictEqual(after.mp, before.mp, JSON.stringify({ before, after }));
    assert.strictEqual(after.sessions, before.sessions + 2);
    w.close();
    p.close();
    await until(async () => (await byProto()).sio === before.sio, WAIT, 'back to before');
  });

  // ---- logs ----
  await test('a watcher gets log events from a C and a Socket.IO service; a filtered one only its own', async () => {
    const all = watcher(hub);
    const only = watcher(hub);
    await within(WAIT, Promise.all([new Promise((r) => all.s.once('connect', r)),
      new Promise((r) => only.s.once('connect', r))]), 'watchers connect');
    // in force once the hub has acked it (events on one session are taken in order)
    await only.s.timeout(WAIT).emitWithAck('subscribe', { services: ['node-a'], min_level: 'warn' });
    svcA.socket.emit('log', { level: 'warn', message: 'disk almost full', service: 'ignored', pct: 91 });
    svcA.socket.emit('log', { level: 'info', message: 'routine', timestamp: '2026-01-01T00:00:00.000Z' });
    assert.strictEqual(await svcB.request('c-echo', 'log', { message: 'from C ✓' }), 'logged');
    await until(() => all.logs.some((r) => r.service === 'c-echo' && r.message === 'from C ✓') &&
      all.logs.some((r) => r.message === 'routine'), WAIT, 'logs at the watcher');
    const w = all.logs.find((r) => r.message === 'disk almost full');
    assert.strictEqual(w.level, 'warn');
    assert.strictEqual(w.service, 'node-a');
    assert.strictEqual(w.pct, 91);
    assert.match(w.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const c = all.logs.find((r) => r.service === 'c-echo' && r.message === 'from C ✓');
    assert.strictEqual(c.level, 'warn');
    assert.strictEqual(c.from, 'node-b');
    assert.strictEqual(all.logs.find((r) => r.message === 'routine').timestamp,
      '2026-01-01T00:00:00.000Z');
    await until(() => only.logs.some((r) => r.message === 'disk almost full'), WAIT,
      'the warning at the filtered watcher');
    assert.ok(only.logs.every((r) => r.service === 'node-a' && r.level === 'warn'),
      JSON.stringify(only.logs));
  });

  // ---- transports ----
  await test('polling-only and WebSocket-only clients', async () => {
    const p = client(hub, 'node-poll', { ioOptions: { transports: ['polling'] } });
    p.on('echo', (d) => d);
    const w = client(hub, 'node-wsonly', { ioOptions: { transports: ['websocket'] } });
    w.on('echo', (d) => d);
    await connected(p);
    await connected(w);
    assert.strictEqual(p.socket.io.engine.transport.name, 'polling');
    assert.strictEqual(w.socket.io.engine.transport.name, 'websocket');
    assert.deepStrictEqual(await p.request('node-wsonly', 'echo', PAYLOADS.unicode), PAYLOADS.unicode);
    assert.deepStrictEqual(await w.request('node-poll', 'echo', PAYLOADS.large), PAYLOADS.large);
    assert.deepStrictEqual(await p.request('c-echo', 'echo', PAYLOADS.nested), PAYLOADS.nested);
    await sleep(HB * 4); // polling across several pings
    assert.deepStrictEqual(await w.request('node-poll', 'echo', 5), 5);
  });

  await test('polling keeps its connections alive (stock client with a keep-alive agent; curl)', async () => {
    // The stock client in Node asks "Connection: close" unless given an
    // agent; with a keep-alive agent it reuses its sockets.
    let sockets = 0;
    const agent = new http.Agent({ keepAlive: true });
    const create = agent.createConnection.bind(agent);
    agent.createConnection = (...a) => { sockets++; return create(...a); };
    const p = client(hub, 'node-keep', { ioOptions: { transports: ['polling'], agent } });
    p.on('echo', (d) => d);
    await connected(p);
    for (let i = 0; i < 20; i++)
      assert.deepStrictEqual(await p.request('c-echo', 'echo', { i }), { i });
    await sleep(HB * 2.5); // several ping/pong rounds on polling
    assert.deepStrictEqual(await svcB.request('node-keep', 'echo', 'back'), 'back');
    // ~50 HTTP requests, on two sockets (the parked GET and the POSTs)
    console.log(`# ${sockets} sockets for the polling session`);
    assert.ok(sockets >= 1 && sockets <= 3, `sockets: ${sockets}`);
    p.close();
    agent.destroy();
    // curl: two requests, one connection
    const out = await new Promise((res) => execFile('curl', ['-sv',
      `http://127.0.0.1:${hub.port}/socket.io/?EIO=4&transport=polling`,
      `http://127.0.0.1:${hub.port}/socket.io/?EIO=4&transport=polling`], { timeout: WAIT },
    (err, stdout, stderr) => res({ err, stdout, stderr })));
    if (out.err && out.err.code === 'ENOENT') {
      console.log('# curl not installed: its half skipped');
    } else {
      assert.ok(!out.err, String(out.err));
      assert.strictEqual((out.stdout.match(/^0\{"sid"|\}0\{"sid"/g) || []).length, 2, out.stdout);
      assert.match(out.stderr, /Re-using existing connection/);
      assert.doesNotMatch(out.stderr, /< Connection: close/i);
    }
    // a request that asks for the close gets it
    const r = await httpReq(hub.port, 'GET', '/socket.io/?EIO=4&transport=polling', undefined,
      { Connection: 'close' });
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.headers.connection, 'close');
  });

  async function rawOpen(q) {
    const r = await httpReq(hub.port, 'GET', base + q);
    assert.strictEqual(r.status, 200, r.body);
    assert.strictEqual(r.body[0], '0');
    const open = JSON.parse(r.body.slice(1));
    assert.deepStrictEqual(open.upgrades, ['websocket']);
    assert.strictEqual(open.pingInterval, HB);
    return open.sid;
  }
  async function rawSession(name) {
    const sid = await rawOpen('&serviceName=' + name);
    await httpReq(hub.port, 'POST', `${base}&sid=${sid}`, '40');
    await until(async () => (await services(hub.port)).some((x) => x.name === name), WAIT,
      name + ' registered');
    return sid;
  }
  await test('an upgrade interrupted halfway leaves the session on polling', async () => {
    const sid = await rawOpen('&serviceName=raw-upg');
    assert.strictEqual((await httpReq(hub.port, 'POST', `${base}&sid=${sid}`, '40')).body, 'ok');
    const g = await httpReq(hub.port, 'GET', `${base}&sid=${sid}`);
    assert.match(g.body, /^40\{"sid":"/);
    const ws = new WebSocket(`ws://127.0.0.1:${hub.port}/socket.io/?EIO=4&transport=websocket&sid=${sid}`);
    await within(WAIT, new Promise((r, j) => { ws.once('open', r); ws.once('error', j); }), 'ws open');
    ws.send('2probe');
    const probe = await within(WAIT, new Promise((r) => ws.once('message', (d) => r(String(d)))), 'probe');
    assert.strictEqual(probe, '3probe');
    ws.terminate(); // no "5"
    await sleep(100);
    // still a service, still reachable over polling
    const poll = httpReq(hub.port, 'GET', `${base}&sid=${sid}`);
    const call = svcB.request('raw-upg', 'hello', { x: 1 });
    const body = (await poll).body;
    const pk = body.split('\x1e').find((p) => p.startsWith('42'));
    assert.ok(pk, body);
    const [ev, arg] = JSON.parse(pk.slice(2));
    assert.strictEqual(ev, 'request');
    assert.strictEqual(arg.event, 'hello');
    await httpReq(hub.port, 'POST', `${base}&sid=${sid}`,
      '42' + JSON.stringify(['response', { id: arg.id, response: 'hi there' }]));
    assert.strictEqual(await call, 'hi there');
    await httpReq(hub.port, 'POST', `${base}&sid=${sid}`, '1');
    await until(async () => !(await services(hub.port)).some((s) => s.name === 'raw-upg'), WAIT, 'closed');
  });
  await test('a polling client that stops polling is dropped (slow consumer)', async () => {
    const sid = await rawOpen('&serviceName=raw-stop');
    await httpReq(hub.port, 'POST', `${base}&sid=${sid}`, '40');
    await until(async () => (await services(hub.port)).some((s) => s.name === 'raw-stop'), WAIT, 'registered');
    // it never polls: requests to it wait, pings go unanswered
    const e = svcB.request('raw-stop', 'x', 1, { timeout: 300 }).then(() => null, (err) => err);
    assert.strictEqual((await e).code, 'REQUEST_TIMEOUT');
    await until(async () => !(await services(hub.port)).some((s) => s.name === 'raw-stop'),
      WAIT, 'dropped');
    // a last poll gets what waited, ending with the close packet; then
    // the session is gone
    let r = await httpReq(hub.port, 'GET', `${base}&sid=${sid}`);
    if (r.status === 200) {
      const pks = r.body.split('\x1e');
      assert.strictEqual(pks[pks.length - 1], '1', r.body);
      r = await httpReq(hub.port, 'GET', `${base}&sid=${sid}`);
    }
    assert.strictEqual(r.status, 400);
    assert.deepStrictEqual(JSON.parse(r.body), { code: 1, message: 'Session ID unknown' });
  });
  await test('malformed Engine.IO / Socket.IO packets get errors; nothing else is lost', async () => {
    let r = await httpReq(hub.port, 'GET', '/socket.io/?EIO=3&transport=polling');
    assert.strictEqual(r.status, 400);
    assert.strictEqual(JSON.parse(r.body).code, 5);
    r = await httpReq(hub.port, 'GET', '/socket.io/?EIO=4&transport=carrier-pigeon');
    assert.strictEqual(JSON.parse(r.body).code, 0);
    r = await httpReq(hub.port, 'POST', '/socket.io/?EIO=4&transport=polling', '40');
    assert.strictEqual(r.status, 400);
    r = await httpReq(hub.port, 'GET', `${base}&sid=AAAAAAAAAAAAAAAAAAAA`);
    assert.strictEqual(JSON.parse(r.body).code, 1);
    for (const bad of ['42[', '9', '451-["e",{"_placeholder":true,"num":0}]\x1e42["x"]', 'bAAAA', 'b!!!!', '',
      '4\x1e\x1e', '42"not an array"', '42[1,2]']) {
      const sid = await rawOpen('&serviceName=raw-bad');
      await httpReq(hub.port, 'POST', `${base}&sid=${sid}`, '40');
      await until(async () => (await services(hub.port)).some((s) => s.name === 'raw-bad'), WAIT, 'bad registered');
      await httpReq(hub.port, 'POST', `${base}&sid=${sid}`, bad);
      await until(async () => !(await services(hub.port)).some((s) => s.name === 'raw-bad'),
        WAIT, 'closed after ' + JSON.stringify(bad));
    }
    // over a WebSocket too
    const ws = new WebSocket(`ws://127.0.0.1:${hub.port}/socket.io/?EIO=4&transport=websocket&serviceName=ws-bad`);
    const msgs = [];
    ws.on('message', (d) => msgs.push(String(d)));
    await within(WAIT, new Promise((r) => ws.once('open', r)), 'ws open');
    ws.send('40');
    await until(() => msgs.some((m) => m.startsWith('40')), WAIT, 'ws connect');
    ws.send('4garbage');
    await within(WAIT, new Promise((r) => ws.once('close', r)), 'ws closed');
    assert.strictEqual((await get(hub.port, '/healthz')).status, 200);
    assert.deepStrictEqual(await svcB.request('node-a', 'add', { a: 40, b: 2 }), { sum: 42 });
  });

  await test('browsers: the hub\'s Origin policy and CORS headers on polling', async () => {
    let r = await httpReq(hub.port, 'GET', base, undefined, { origin: 'http://evil.example' });
    assert.strictEqual(r.status, 403);
    const own = `http://127.0.0.1:${hub.port}`;
    r = await httpReq(hub.port, 'GET', base, undefined, { origin: own });
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.headers['access-control-allow-origin'], own);
    r = await httpReq(hub.port, 'OPTIONS', base, undefined, { origin: own });
    assert.strictEqual(r.status, 204);
    assert.match(r.headers['access-control-allow-methods'], /POST/);
    const ws = new WebSocket(`ws://127.0.0.1:${hub.port}/socket.io/?EIO=4&transport=websocket`,
      { origin: 'http://evil.example' });
    const code = await within(WAIT, new Promise((res) => {
      ws.once('unexpected-response', (req, resp) => res(resp.statusCode));
      ws.once('open', () => res('open'));
      ws.once('error', () => {});
    }), 'ws refusal');
    assert.strictEqual(code, 403);
  });

  await test('--replace-stale: a frozen Socket.IO holder is replaced, a live one is not', async () => {
    const rh = await startHub(['--replace-stale']);
    const live = client(rh, 'node-keep');
    await connected(live);
    let err;
    const dup = client(rh, 'node-keep', { onConnectError: (e) => { err = e; } });
    await until(() => err, WAIT, 'refusal of the newcomer');
    assert.strictEqual(err.message, 'DUPLICATE_SERVICE_REGISTRATION');
    dup.close();
    const child = spawn(process.execPath, ['-e', `
      module.paths.unshift(${JSON.stringify(path.join(srcRoot, 'node_modules'))});
      const { MicroStreamClient } = require(${JSON.stringify(path.join(__dirname, 'ms_client.js'))});
      const c = new MicroStreamClient({ hubUrl: ${JSON.stringify(rh.url)}, serviceName: 'node-stale' });
      c.socket.on('connect', () => console.log('up'));`], { stdio: ['ignore', 'pipe', 'ignore'] });
    children.push(child);
    await within(WAIT, new Promise((r) => child.stdout.once('data', r)), 'stale up');
    child.kill('SIGSTOP');
    const fresh = client(rh, 'node-stale');
    fresh.on('who', () => 'fresh');
    await connected(fresh);
    assert.strictEqual(await live.request('node-stale', 'who', null), 'fresh');
    child.kill('SIGKILL');
  });

  await test('the number of Socket.IO sessions is bounded (503 past it)', async () => {
    const lh = await startHub(['--max-socketio-sessions', '2']);
    const open = () => httpReq(lh.port, 'GET', base);
    assert.strictEqual((await open()).status, 200);
    assert.strictEqual((await open()).status, 200);
    const r = await open();
    assert.strictEqual(r.status, 503);
    assert.strictEqual(JSON.parse(r.body).message, 'Too many sessions');
    // native services are not affected
    assert.strictEqual((await get(lh.port, '/healthz')).status, 200);
  });

  // ---- tokens ----
  await test('with a secret, a Socket.IO client needs its token (auth or query)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ms-sio-'));
    const sf = path.join(dir, 'secret');
    fs.writeFileSync(sf, 'sio test secret');
    const mint = (name) => new Promise((res, rej) => execFile(HUB, ['--secret-file', sf,
      '--print-token', name], (e, out) => (e ? rej(e) : res(out.trim()))));
    const tok = await mint('node-tok');
    const tok2 = await mint('node-tok2');
    const sh = await startHub(['--secret-file', sf]);
    let err;
    const bad = new MicroStreamClient({ hubUrl: sh.url, serviceName: 'node-tok',
      onConnectError: (e) => { err = e; } });
    clients.push(bad);
    await until(() => err, WAIT, 'refusal');
    assert.strictEqual(err.message, 'UNAUTHORIZED');
    bad.close();
    const viaAuth = new MicroStreamClient({ hubUrl: sh.url, serviceName: 'node-tok',
      timeout: WAIT, ioOptions: { auth: { token: tok } } });
    clients.push(viaAuth);
    await connected(viaAuth);
    const viaQuery = new MicroStreamClient({ hubUrl: sh.url, serviceName: 'node-tok2',
      ioOptions: { query: { token: tok2 } } });
    clients.push(viaQuery);
    await connected(viaQuery);
    viaQuery.on('hi', () => 'hello');
    assert.strictEqual(await viaAuth.request('node-tok2', 'hi', null), 'hello');
    // a token for another name is refused
    let err2;
    const wrong = new MicroStreamClient({ hubUrl: sh.url, serviceName: 'node-other',
      ioOptions: { auth: { token: tok } }, onConnectError: (e) => { err2 = e; } });
    clients.push(wrong);
    await until(() => err2, WAIT, 'wrong-name refusal');
    assert.strictEqual(err2.message, 'FORBIDDEN');
    assert.strictEqual(err2.data.code, 'FORBIDDEN');
    // a watcher (no serviceName) with a watch-scoped token for any subject
    const wtok = await new Promise((res, rej) => execFile(HUB, ['--secret-file', sf,
      '--print-token', 'ops-dashboard', '--scope', 'watch'], (e, out) => (e ? rej(e) : res(out.trim()))));
    const wa = watcher(sh, { auth: { token: wtok } });
    const wq = watcher(sh, { query: { token: wtok } });
    await within(WAIT, Promise.all([wa, wq].map((w) => new Promise((res, rej) => {
      w.s.once('connect', res);
      w.s.once('connect_error', rej);
    }))), 'token watchers connect');
    viaAuth.socket.emit('log', { level: 'warn', message: 'seen by a token watcher' });
    await until(() => wa.logs.some((r) => r.message === 'seen by a token watcher') &&
      wq.logs.some((r) => r.message === 'seen by a token watcher'), WAIT, 'log at token watchers');
    // a service token (no watch scope) does not make a watcher
    const nw = watcher(sh, { auth: { token: tok } });
    const werr = await within(WAIT, new Promise((res) => nw.s.once('connect_error', res)),
      'service-token watcher refused');
    assert.strictEqual(werr.message, 'FORBIDDEN');
    nw.s.close();
    fs.rmSync(dir, { recursive: true });
  });
}

main().catch((e) => { failed++; console.log('not ok - ' + e.stack); }).finally(() => {
  for (const c of clients) { try { c.close(); } catch (e) { /* gone */ } }
  for (const p of children) { try { p.kill('SIGKILL'); } catch (e) { /* gone */ } }
  console.log(`1..${n}`);
  setTimeout(() => process.exit(failed ? 1 : 0), 100);
});
