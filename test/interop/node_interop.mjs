// Interop with Node's `ws` package: its client against our echo server,
// and our client against its echo server. Prints TAP.
//
// Usage: node node_interop.mjs PATH_TO_WS_ECHO SOURCE_ROOT
// `ws` is resolved from SOURCE_ROOT/node_modules (installed by `npm ci`).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';

const [echoPath, sourceRoot] = process.argv.slice(2);
const require = createRequire(path.join(sourceRoot, 'package.json'));
let WebSocket, WebSocketServer;
try {
  ({ WebSocket, WebSocketServer } = require('ws'));
} catch (e) {
  // TAP: the plan "1..0 # SKIP" makes meson report a skip.
  console.log('1..0 # SKIP node_modules missing (npm ci): ' + e.message.split('\n')[0]);
  process.exit(0);
}

const STEP_TIMEOUT = 10000;
const results = [];

function expect(cond, what) {
  if (!cond) throw new Error(what);
}

async function check(name, fn) {
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('timed out')), STEP_TIMEOUT);
      }),
    ]);
    results.push([name, true, '']);
  } catch (e) {
    results.push([name, false, String(e && e.message ? e.message : e)]);
  } finally {
    clearTimeout(timer);
  }
}

function startServer() {
  return new Promise((resolve, reject) => {
    const proc = spawn(echoPath, ['server', '--port', '0'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const rl = readline.createInterface({ input: proc.stdout });
    rl.once('line', (line) => {
      const m = /^listening on (\d+)$/.exec(line);
      if (!m) reject(new Error('bad banner ' + line));
      else resolve({ proc, port: Number(m[1]) });
    });
    proc.once('error', reject);
  });
}

function open(url, protocols) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) =>
      reject(Object.assign(new Error('HTTP ' + res.statusCode),
        { statusCode: res.statusCode })));
  });
}

function nextMessage(ws) {
  return new Promise((resolve) =>
    ws.once('message', (data, isBinary) => resolve({ data, isBinary })));
}

function closed(ws) {
  return new Promise((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

// ---- ws client -> our server --------------------------------------------

async function clientTests(port) {
  const url = `ws://127.0.0.1:${port}/ws`;

  await check('node client: binary, text and 200 KiB round trips', async () => {
    const ws = await open(url);
    let p = nextMessage(ws);
    ws.send(Buffer.from([0, 1, 0xfe, 0xff]));
    let m = await p;
    expect(m.isBinary && Buffer.compare(m.data, Buffer.from([0, 1, 0xfe, 0xff])) === 0,
      'binary echo');
    p = nextMessage(ws);
    ws.send('héllo');
    m = await p;
    expect(!m.isBinary && m.data.toString() === 'héllo', 'text echo');
    const big = Buffer.alloc(200 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 13) & 0xff;
    p = nextMessage(ws);
    ws.send(big);
    m = await p;
    expect(m.isBinary && Buffer.compare(m.data, big) === 0, '200 KiB echo');
    const c = closed(ws);
    ws.close(1000);
    await c;
  });

  await check('node client: ping gets pong', async () => {
    const ws = await open(url);
    const pong = new Promise((resolve) => ws.once('pong', resolve));
    ws.ping(Buffer.from('abc'));
    const data = await pong;
    expect(data.toString() === 'abc', 'pong payload ' + data);
    const c = closed(ws);
    ws.close(1000);
    await c;
  });

  await check('node client: close 4002 and reason echoed', async () => {
    const ws = await open(url);
    const c = closed(ws);
    ws.close(4002, 'bye now');
    const r = await c;
    expect(r.code === 4002, 'code ' + r.code);
    expect(r.reason === 'bye now', 'reason ' + r.reason);
  });

  await check('node client: subprotocol negotiated; unknown only -> 400', async () => {
    const ws = await open(url, ['microstream.json.v1']);
    expect(ws.protocol === 'microstream.json.v1', 'protocol ' + ws.protocol);
    const c = closed(ws);
    ws.close(1000);
    await c;
    let status = 0;
    try {
      const w2 = await open(url, ['foo']);
      w2.terminate();
    } catch (e) {
      status = e.statusCode || 0;
    }
    expect(status === 400, 'status ' + status);
  });

  await check('node http: GET /healthz answers 200 ok', () => new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/healthz' }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        if (res.statusCode === 200 && body === 'ok') resolve();
        else reject(new Error(`healthz ${res.statusCode} ${body}`));
      });
    }).on('error', reject);
  }));
}

// ---- our client -> ws server --------------------------------------------

function runOurClient(port, args) {
  return new Promise((resolve, reject) => {
    const proc = spawn(echoPath, ['client', `ws://127.0.0.1:${port}/ws`,
      '--timeout', '8000', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.on('data', (d) => { out += d; });
    proc.once('error', reject);
    proc.once('close', (rc) => resolve({ rc, lines: out.split('\n').filter((l) => l) }));
  });
}

async function serverTests() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise((resolve) => wss.once('listening', resolve));
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  const port = wss.address().port;

  await check('our client -> node server: binary, text, 200 KiB binary', async () => {
    const n = 200 * 1024;
    const bytes = Buffer.alloc(n);
    for (let i = 0; i < n; i++) bytes[i] = (i * 7) & 0xff;
    const big = bytes.toString('hex');
    const { rc, lines } = await runOurClient(port, ['--send-binary', '00ff10',
      '--send-text', 'hi there', '--send-pattern', String(n), '--close', '1000']);
    expect(rc === 0, 'exit ' + rc + ' ' + lines.slice(0, 3));
    expect(lines[0] === 'open:none', lines[0]);
    expect(lines[1] === 'binary:00ff10', lines[1]);
    expect(lines[2] === 'text:hi there', lines[2]);
    expect(lines[3] === 'binary:' + big, '200 KiB echo');
    expect(lines[4] === 'close:1000:', lines[4]);
  });

  await check('our client -> node server: ping/pong, close code and reason', async () => {
    const { rc, lines } = await runOurClient(port, ['--ping', '0102',
      '--close-reason', 'done here', '--close', '4002']);
    expect(rc === 0, 'exit ' + rc + ' ' + lines);
    expect(JSON.stringify(lines) ===
      JSON.stringify(['open:none', 'pong', 'close:4002:done here']), 'output ' + lines);
  });

  await new Promise((resolve) => wss.close(resolve));
}

async function main() {
  const { proc, port } = await startServer();
  try {
    await clientTests(port);
  } finally {
    const exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
    proc.kill('SIGTERM');
    const code = await Promise.race([exited,
      new Promise((resolve) => setTimeout(() => resolve('timeout'), STEP_TIMEOUT))]);
    if (code === 'timeout') proc.kill('SIGKILL');
    results.push(['our server exits cleanly on SIGTERM', code === 0, 'exit ' + code]);
  }
  await serverTests();
  console.log(`1..${results.length}`);
  let failed = 0;
  results.forEach(([name, ok, detail], i) => {
    console.log(`${ok ? 'ok' : 'not ok'} ${i + 1} - ${name}`);
    if (!ok) { failed++; console.log('#   ' + detail); }
  });
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.log('1..1');
  console.log('not ok 1 - node interop setup');
  console.log('#   ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
