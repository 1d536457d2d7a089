// Browser test of the hub's live log page (web/viewer.html, served at /).
// Starts microstream-hub on 127.0.0.1, feeds logs from services, drives
// headless Chromium through playwright-core and checks what a reader sees.
// Run as a plain node script (TAP on stdout); exits 77 (skip) when Chromium
// or the npm packages (`npm ci` at the top of the tree) are missing.
//
// Environment: MS_BUILD_ROOT (where tools/microstream-hub is; screenshots
// go there too), CHROMIUM (browser executable; default: chromium on PATH),
// MS_VIEWER_DEBUG=1 (print the page's WebSocket frames).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

const BUILD = process.env.MS_BUILD_ROOT;
if (!BUILD) throw new Error('MS_BUILD_ROOT must name the build directory');
const HUB = path.join(BUILD, 'tools', 'microstream-hub');
const WAIT = 10000;  // bound for every single wait on the page

function skip(why) {
  console.log(`1..0 # SKIP ${why}`);
  process.exit(77);
}

function findChromium() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const name of ['chromium', 'chromium-browser']) {
    try { return execFileSync('which', [name], { encoding: 'utf8' }).trim(); } catch { /* next */ }
  }
  return null;
}

const CHROMIUM = findChromium();
if (!CHROMIUM || !existsSync(CHROMIUM)) skip('no chromium (install the chromium package or set CHROMIUM)');
let chromium, Feeder;
try {
  ({ chromium } = await import('playwright-core'));
  ({ Feeder } = await import('./feeder.mjs'));
} catch (e) {
  skip(`npm packages missing (run npm ci at the top of the tree): ${e.message}`);
}

// ---- hub process -------------------------------------------------------
const hubs = new Set();

function startHub(port = 0) {
  return new Promise((resolve, reject) => {
    // No store: this test follows the hub's memory (history, resume, gaps);
    // the stored history has its own test (store.test.mjs).
    const proc = spawn(HUB, ['--listen', `127.0.0.1:${port}`, '--heartbeat-ms', '1000',
                             '--no-store', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] });
    hubs.add(proc);
    let out = '';
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error('hub did not start')); }, 3 * WAIT);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) { clearTimeout(timer); resolve({ proc, port: Number(m[1]) }); }
    });
    proc.on('exit', (code) => {
      hubs.delete(proc);
      clearTimeout(timer);
      reject(new Error(`hub exited with ${code}: ${out}`));
    });
  });
}

function killHub(h) {
  return new Promise((resolve) => {
    if (h.proc.exitCode !== null || h.proc.signalCode !== null) { resolve(); return; }
    h.proc.once('exit', () => resolve());
    h.proc.kill('SIGKILL');
  });
}

// The old port may be briefly unavailable after a kill: try a few times.
async function restartHubOnPort(port) {
  let last;
  for (let i = 0; i < 20; i++) {
    try { return await startHub(port); } catch (e) { last = e; }
    await sleep(100);
  }
  throw last;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- page helpers --------------------------------------------------------
function readLines(page, onlyVisible = false) {
  return page.$$eval('#lines .line', (els, vis) => els.filter((e) => !vis || !e.hidden).map((e) => {
    const fields = e.querySelector('.fields');
    const msg = e.querySelector('.msg').textContent;
    return {
      seq: Number(e.dataset.seq), service: e.dataset.service, level: Number(e.dataset.level),
      ts: e.querySelector('.ts').textContent, lvl: e.querySelector('.lvl').textContent,
      message: fields ? msg.slice(0, msg.length - fields.textContent.length) : msg,
      fields: fields ? fields.textContent : '',
      marks: Array.from(e.querySelectorAll('mark')).map((m) => m.textContent),
    };
  }), onlyVisible);
}

function waitForMessage(page, message, count = 1, timeout = WAIT) {
  return page.waitForFunction(([m, n]) => {
    let seen = 0;
    for (const e of document.querySelectorAll('#lines .line .msg')) {
      const f = e.querySelector('.fields');
      const t = f ? e.textContent.slice(0, e.textContent.length - f.textContent.length) : e.textContent;
      if (t === m) seen++;
    }
    return seen >= n;
  }, [message, count], { timeout, polling: 100 });
}

async function logAndWait(page, feeder, level, message, fields = {}) {
  feeder.log(level, message, fields);
  await waitForMessage(page, message);
}

function countMessage(page, message) {
  return page.$$eval('#lines .line .msg', (els, m) => els.filter((e) => {
    const f = e.querySelector('.fields');
    const t = f ? e.textContent.slice(0, e.textContent.length - f.textContent.length) : e.textContent;
    return t === m;
  }).length, message);
}

function waitStatus(page, state, timeout = WAIT) {
  // Polled on a timer, not on animation frames: a page busy laying out
  // thousands of lines draws few frames on a loaded machine.
  return page.waitForFunction((st) => document.getElementById('status')?.dataset.state === st,
                              state, { timeout, polling: 100 });
}

function atBottom(page) {
  return page.$eval('#lines', (l) => l.scrollTop + l.clientHeight >= l.scrollHeight - 10);
}

// ---- the test ----------------------------------------------------------
describe('viewer page', { timeout: 170000 }, () => {
  // playwright gives the browser a fresh temporary profile of its own
  let hub, browser, context, page;
  const alpha = new Feeder('alpha'), beta = new Feeder('beta'), gamma = new Feeder('gamma');
  const wsUrl = () => `ws://127.0.0.1:${hub.port}/ws`;

  before(async () => {
    hub = await startHub();
    await alpha.connect(wsUrl());
    await beta.connect(wsUrl());
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      timeout: 30000,
      args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    // Everything stays on this machine: refuse any request that leaves the hub.
    await context.route((url) => url.hostname !== '127.0.0.1', (route) => route.abort());
    page = await context.newPage();
    page.on('pageerror', (err) => { console.error('# page error:', err.message); });
    if (process.env.MS_VIEWER_DEBUG) {
      page.on('websocket', (ws) => {
        ws.on('framereceived', (f) => console.error('# <', String(f.payload).slice(0, 160)));
        ws.on('framesent', (f) => console.error('# >', String(f.payload).slice(0, 160)));
        ws.on('close', () => console.error('# websocket closed'));
      });
    }
    await page.goto(`http://127.0.0.1:${hub.port}/`, { timeout: WAIT });
  });

  after(async () => {
    alpha.close(); beta.close(); gamma.close();
    if (browser) await browser.close().catch(() => {});
    for (const p of hubs) p.kill('SIGKILL');
  });

  it('connects and lists the services that are up', async () => {
    await waitStatus(page, 'connected');
    assert.equal(await page.textContent('#status'), 'connected');
    assert.match(await page.textContent('#hub-id'), /\S/);
    await page.waitForSelector('#services li[data-service="alpha"][data-state="up"]', { timeout: WAIT });
    await page.waitForSelector('#services li[data-service="beta"][data-state="up"]', { timeout: WAIT });
  });

  it('shows records live with service, level, message and fields', async () => {
    // two connections: wait for each line so the order is known
    await logAndWait(page, alpha, 20, 'hello from alpha', { user: 'ann', n: 1 });
    await logAndWait(page, beta, 30, 'disk almost full', { pct: 93 });
    await logAndWait(page, alpha, 40, 'payment failed', { code: 'E42', detail: 'card declined' });
    await logAndWait(page, beta, 10, 'cache miss', { key: 'k1' });
    await logAndWait(page, alpha, 25, 'custom level', {});
    const lines = await readLines(page);
    assert.equal(lines.length, 5);
    assert.deepEqual(lines.map((l) => [l.service, l.level, l.lvl, l.message]), [
      ['alpha', 20, 'INFO', 'hello from alpha'],
      ['beta', 30, 'WARN', 'disk almost full'],
      ['alpha', 40, 'ERROR', 'payment failed'],
      ['beta', 10, 'DEBUG', 'cache miss'],
      ['alpha', 25, 'L25', 'custom level'],
    ]);
    assert.equal(lines[0].fields, 'user=ann n=1');
    assert.equal(lines[2].fields, 'code=E42 detail="card declined"');
    for (const l of lines) assert.match(l.ts, /^\d\d:\d\d:\d\d\.\d{3}$/);
    // seq increases, one line per record
    for (let i = 1; i < lines.length; i++) assert.ok(lines[i].seq > lines[i - 1].seq);
    // level colours differ (error red, warn amber, debug grey, info blue)
    const colours = await page.$$eval('#lines .line .lvl', (els) => els.map((e) => getComputedStyle(e).color));
    assert.equal(new Set(colours.slice(0, 4)).size, 4);
    // the service filter offers every service seen
    const options = await page.$$eval('#filter-service option', (els) => els.map((o) => o.value));
    assert.deepEqual(options, ['', 'alpha', 'beta']);
  });

  it('filters by service', async () => {
    await page.selectOption('#filter-service', 'beta');
    let vis = await readLines(page, true);
    assert.deepEqual(vis.map((l) => l.message), ['disk almost full', 'cache miss']);
    await logAndWait(page, beta, 20, 'beta while filtered');
    await logAndWait(page, alpha, 20, 'alpha while filtered');
    vis = await readLines(page, true);
    assert.deepEqual(vis.map((l) => l.service), ['beta', 'beta', 'beta']);
    assert.match(await page.textContent('#counts'), /^3 \/ 7 lines$/);
    await page.selectOption('#filter-service', '');
    assert.equal((await readLines(page, true)).length, 7);
  });

  it('filters by minimum level', async () => {
    await page.selectOption('#filter-level', '30');
    let vis = await readLines(page, true);
    assert.deepEqual(vis.map((l) => l.level), [30, 40]);
    await page.selectOption('#filter-level', '10');
    vis = await readLines(page, true);
    assert.equal(vis.length, 7);
    await page.selectOption('#filter-level', '0');
  });

  it('searches case-insensitively, filtering and highlighting', async () => {
    await page.fill('#search', 'PAYMENT');
    await page.waitForFunction(() => document.querySelectorAll('#lines .line:not([hidden])').length === 1,
                               null, { timeout: WAIT });
    let vis = await readLines(page, true);
    assert.equal(vis[0].message, 'payment failed');
    assert.deepEqual(vis[0].marks, ['payment']);
    // matches inside fields count and are highlighted there
    await page.fill('#search', 'k1');
    await page.waitForFunction(() => {
      const v = document.querySelectorAll('#lines .line:not([hidden])');
      return v.length === 1 && v[0].querySelector('.fields mark');
    }, null, { timeout: WAIT });
    vis = await readLines(page, true);
    assert.equal(vis[0].message, 'cache miss');
    assert.deepEqual(vis[0].marks, ['k1']);
    // new records are filtered and highlighted as they arrive
    alpha.log(20, 'new K1 line');
    alpha.log(20, 'not matching');
    await page.waitForFunction(() => document.querySelectorAll('#lines .line:not([hidden])').length === 2,
                               null, { timeout: WAIT });
    vis = await readLines(page, true);
    assert.deepEqual(vis[1].marks, ['K1']);
    await page.fill('#search', '');
    await page.waitForFunction(() => document.querySelectorAll('#lines .line:not([hidden])').length === 9
                               && !document.querySelector('#lines mark'), null, { timeout: WAIT });
  });

  it('pause holds new lines back with a counter, resume shows them', async () => {
    const before = (await readLines(page)).length;
    await page.click('#pause');
    assert.equal(await page.getAttribute('#pause', 'aria-pressed'), 'true');
    alpha.log(20, 'held 1'); alpha.log(30, 'held 2'); alpha.log(20, 'held 3');
    await page.waitForSelector('#held:not([hidden])', { timeout: WAIT });
    await page.waitForFunction(() => document.getElementById('held').textContent === '3 new',
                               null, { timeout: WAIT });
    assert.equal((await readLines(page)).length, before);
    await page.click('#pause');
    await waitForMessage(page, 'held 3');
    const lines = await readLines(page);
    assert.equal(lines.length, before + 3);
    assert.deepEqual(lines.slice(-3).map((l) => l.message), ['held 1', 'held 2', 'held 3']);
    assert.equal(await page.isHidden('#held'), true);
  });

  it('follows the newest line until the reader scrolls up', async () => {
    for (let i = 0; i < 150; i++) alpha.log(20, `scroll filler ${i}`, { i });
    await waitForMessage(page, 'scroll filler 149');
    await page.waitForFunction(() => { const l = document.getElementById('lines');
      return l.scrollTop + l.clientHeight >= l.scrollHeight - 10; }, null, { timeout: WAIT });
    assert.equal(await page.isHidden('#jump'), true);
    await page.$eval('#lines', (l) => { l.scrollTop = 0; });
    await page.waitForSelector('#jump:not([hidden])', { timeout: WAIT });
    beta.log(20, 'while scrolled up');
    await waitForMessage(page, 'while scrolled up');
    await sleep(100);
    assert.equal(await page.$eval('#lines', (l) => l.scrollTop), 0);
    await page.click('#jump');
    assert.equal(await atBottom(page), true);
    assert.equal(await page.isHidden('#jump'), true);
    beta.log(20, 'back at the bottom');
    await waitForMessage(page, 'back at the bottom');
    await page.waitForFunction(() => { const l = document.getElementById('lines');
      return l.scrollTop + l.clientHeight >= l.scrollHeight - 10; }, null, { timeout: WAIT });
  });

  it('tracks presence: services going down and coming up', async () => {
    beta.close();
    await page.waitForSelector('#services li[data-service="beta"][data-state="down"]', { timeout: WAIT });
    await gamma.connect(wsUrl());
    await page.waitForSelector('#services li[data-service="gamma"][data-state="up"]', { timeout: WAIT });
    gamma.log(20, 'gamma says hi', { region: 'eu-1' });
    await waitForMessage(page, 'gamma says hi');
    const options = await page.$$eval('#filter-service option', (els) => els.map((o) => o.value));
    assert.deepEqual(options, ['', 'alpha', 'beta', 'gamma']);
    // a screenshot of the page in a typical state, for people to look at
    await page.fill('#search', 'fail');
    await page.waitForSelector('#lines mark', { timeout: WAIT });
    await page.fill('#search', '');
    await page.waitForFunction(() => !document.querySelector('#lines mark')
                               && !document.querySelector('#lines .line[hidden]'), null, { timeout: WAIT });
    await page.$eval('#lines', (l) => { l.scrollTop = l.scrollHeight; });
    for (const [lvl, msg, f] of [[20, 'GET /orders 200', { ms: 12, route: '/orders' }],
                                 [10, 'cache lookup', { key: 'order:7731', hit: false }],
                                 [30, 'slow query', { ms: 812, table: 'orders' }],
                                 [40, 'upstream timeout', { target: 'billing', after_ms: 5000 }],
                                 [20, 'retry succeeded', { attempt: 2 }]])
      alpha.log(lvl, msg, f);
    await waitForMessage(page, 'retry succeeded');
    await page.screenshot({ path: path.join(BUILD, 'viewer-screenshot.png') });
  });

  it('shows the outage, reconnects to a restarted hub and does not repeat old lines', async () => {
    const oldId = await page.textContent('#hub-id');
    const before = (await readLines(page)).length;
    const port = hub.port;
    await killHub(hub);
    await waitStatus(page, 'disconnected');
    assert.match(await page.textContent('#status'), /^disconnected — reconnecting in \d+s$/);
    await page.screenshot({ path: path.join(BUILD, 'viewer-screenshot-disconnected.png') });
    hub = await restartHubOnPort(port);
    await alpha.connect(wsUrl());
    await waitStatus(page, 'connected', 20000);
    await page.waitForFunction((id) => document.getElementById('hub-id').textContent !== id,
                               oldId, { timeout: WAIT });
    alpha.log(20, 'after restart');
    await waitForMessage(page, 'after restart');
    await page.waitForSelector('.notice[data-kind="hub"]', { timeout: WAIT });
    assert.equal((await readLines(page)).length, before + 1);
    assert.equal(await countMessage(page, 'hello from alpha'), 1);
    assert.equal(await countMessage(page, 'after restart'), 1);
    // presence starts over with the new hub: alpha is up, gamma (not reconnected) is not listed as up
    await page.waitForSelector('#services li[data-service="alpha"][data-state="up"]', { timeout: WAIT });
    assert.equal(await page.$('#services li[data-service="gamma"][data-state="up"]'), null);
  });

  it('pings a quiet hub, detects a dead link, resumes from the last seq and reports a gap', async () => {
    // A second page whose WebSocket goes through a proxy in the test, so the
    // link can be silenced (half-open) and reconnects refused for a while.
    const page2 = await context.newPage();
    let mode = 'pass';            // pass | mute | refuse
    const sentByPage = [];
    let link = null;
    await page2.routeWebSocket(/\/ws$/, (ws) => {
      if (mode === 'refuse') { ws.close({ code: 1011, reason: 'refused by test' }); return; }
      const server = ws.connectToServer();
      link = { ws, server };
      ws.onMessage((m) => { sentByPage.push(String(m)); server.send(m); });
      server.onMessage((m) => { if (mode === 'pass') ws.send(m); });
    });
    try {
      // a cap above what the hub keeps, so every line of this page stays
      await page2.goto(`http://127.0.0.1:${hub.port}/?cap=20000`, { timeout: WAIT });
      await waitStatus(page2, 'connected');
      await waitForMessage(page2, 'after restart');
      alpha.log(20, 'before gap');
      await waitForMessage(page2, 'before gap');
      // quiet for longer than the 1 s hub interval: the page sends PING [12, n]
      const pingsSent = () => sentByPage.map((s) => JSON.parse(s)).filter((m) => m[0] === 12);
      for (const end = Date.now() + 3 * WAIT; pingsSent().length === 0 && Date.now() < end;)
        await sleep(50);
      const pings = pingsSent();
      assert.ok(pings.length >= 1, 'page sent PING when the hub was quiet');
      assert.ok(Number.isInteger(pings[0][1]));
      assert.equal(await page2.textContent('#status'), 'connected');
      // silence from the hub: the page must give up after 3 intervals
      mode = 'mute';
      await waitStatus(page2, 'disconnected', 3 * WAIT);
      mode = 'refuse';
      if (link) { link.server.close(); link = null; }
      // more records than the hub keeps (10000) go by while the page is away
      for (let i = 0; i < 10100; i++) alpha.log(20, `burst ${i}`, { i });
      alpha.log(20, 'after gap');
      await alpha.drain();
      // the first page is still live; it lays out 10101 new lines first
      await waitForMessage(page, 'after gap', 1, 3 * WAIT);
      mode = 'pass';
      // the next attempt comes within the page's longest backoff (15 s,
      // +15% jitter); then the handshake, on a machine that may be busy
      await waitStatus(page2, 'connected', 45000);
      // 10000 lines arrive with it: give the page time to lay them out
      await page2.waitForFunction(() => document.querySelector('.notice[data-kind="gap"]'),
                                  null, { timeout: 3 * WAIT, polling: 100 });
      const gap = await page2.textContent('.notice[data-kind="gap"]');
      const missed = Number(/(\d+) log records missed/.exec(gap)?.[1]);
      assert.equal(missed, 101, gap);  // 10101 newer than "before gap", 10000 kept
      await waitForMessage(page2, 'after gap', 1, 3 * WAIT);
      assert.equal(await countMessage(page2, 'before gap'), 1);
      assert.equal(await countMessage(page2, 'after gap'), 1);
      // same hub: resumed, not started over
      assert.equal(await page2.$('.notice[data-kind="hub"]'), null);
      await page2.$eval('.notice[data-kind="gap"]', (e) => e.scrollIntoView({ block: 'center' }));
      await page2.waitForSelector('#jump:not([hidden])', { timeout: WAIT });
      await page2.screenshot({ path: path.join(BUILD, 'viewer-screenshot-gap.png') });
      let lines = await readLines(page2);
      for (let i = 1; i < lines.length; i++) assert.ok(lines[i].seq > lines[i - 1].seq);
      // the first page has the default cap of 5000 lines: the oldest went
      lines = await readLines(page);
      assert.equal(lines.length, 5000);
      assert.equal(lines[lines.length - 1].message, 'after gap');
      assert.equal(lines[0].message, 'burst 5101');
    } finally {
      await page2.close();
    }
  });
});
