// The live page over https:// in headless Chromium, against a hub with a
// TLS listener and a secret. The test makes its own CA and server
// certificate (certtool, test/tls/make_certs.py) and Chromium trusts that
// one server key only: --ignore-certificate-errors-spki-list pins its SPKI
// hash (no blanket certificate-error bypass). Checks: the page asks for a
// token when the hub refuses it (4001), keeps it in sessionStorage, shows
// records sent over wss:// by ms-log; a #token= link connects without
// asking and the fragment is dropped from the address. TAP on stdout;
// exits 77 without Chromium, certtool or the npm packages.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, spawnSync } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const BUILD = process.env.MS_BUILD_ROOT;
const SRC = process.env.MS_SOURCE_ROOT;
if (!BUILD || !SRC) throw new Error('MS_BUILD_ROOT and MS_SOURCE_ROOT must be set');
const HUB = path.join(BUILD, 'tools', 'microstream-hub');
const LOG = path.join(BUILD, 'tools', 'ms-log');
const WAIT = 15000;

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
if (!CHROMIUM || !existsSync(CHROMIUM)) skip('no chromium');
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  skip(`npm packages missing (run npm ci at the top of the tree): ${e.message}`);
}

const dir = mkdtempSync(path.join(tmpdir(), 'ms-tls-page-'));
const certs = path.join(dir, 'certs');
const made = spawnSync('python3', [path.join(SRC, 'test', 'tls', 'make_certs.py'), certs],
                       { encoding: 'utf8' });
if (made.status === 77) skip('certtool not found');
if (made.status !== 0) throw new Error(`make_certs.py failed: ${made.stderr}`);
const cert = (n) => path.join(certs, n);

// The pin: base64 of SHA-256 over the server key's SubjectPublicKeyInfo.
const spki = createPublicKey(readFileSync(cert('server.key')))
  .export({ type: 'spki', format: 'der' });
const PIN = createHash('sha256').update(spki).digest('base64');

const secret = path.join(dir, 'secret');
writeFileSync(secret, 'page-test-secret\n');
function mint(name, scope) {
  return execFileSync(HUB, ['--secret-file', secret, '--print-token', name, '--scope', scope,
                            '--ttl', '1h'], { encoding: 'utf8' }).trim();
}
const WATCH = mint('ops', 'watch');
const SERVICE = mint('feeder', 'service');

function startHub() {
  return new Promise((resolve, reject) => {
    const proc = spawn(HUB, ['--listen', 'tls://127.0.0.1:0', '--tls-cert', cert('server.pem'),
                             '--tls-key', cert('server.key'), '--secret-file', secret,
                             '--no-store', '--heartbeat-ms', '2000', '--log-level', 'warn'],
                       { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error('hub did not start')); }, 10000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on tls:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) { clearTimeout(timer); resolve({ proc, port: Number(m[1]) }); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`hub exited ${code}`)); });
  });
}

function shipLine(port, text) {
  const r = spawnSync(LOG, ['--hub', `wss://127.0.0.1:${port}/ws`, '--ca', cert('ca.pem'),
                            '--token', SERVICE, '--service', 'feeder'],
                      { input: text + '\n', encoding: 'utf8', timeout: 20000 });
  return r.status;
}

function waitForMessage(page, message) {
  return page.waitForFunction((m) => {
    for (const e of document.querySelectorAll('#lines .line .msg'))
      if (e.textContent.startsWith(m)) return true;
    return false;
  }, message, { timeout: WAIT });
}

describe('live page over https with a secret', () => {
  let hub, browser;
  before(async () => {
    hub = await startHub();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      timeout: 30000,
      args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync',
             `--ignore-certificate-errors-spki-list=${PIN}`],
    });
  });
  after(async () => {
    if (browser) await browser.close();
    if (hub) hub.proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('asks for a token on refusal, keeps it for the tab, shows records sent over wss', async () => {
    const context = await browser.newContext();
    await context.route((url) => url.hostname !== '127.0.0.1', (route) => route.abort());
    const page = await context.newPage();
    const asked = [];
    page.on('dialog', async (d) => { asked.push(d.message()); await d.accept(WATCH); });
    await page.goto(`https://127.0.0.1:${hub.port}/`, { timeout: WAIT });
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    assert.ok(asked.length >= 1, 'the page asked for a token');
    assert.match(asked[0], /token/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('microstream.token')), WATCH);
    assert.equal(await page.evaluate(() => location.protocol), 'https:');
    assert.equal(shipLine(hub.port, 'hello over tls'), 0, 'ms-log shipped over wss://');
    await waitForMessage(page, 'hello over tls');
    await context.close();
  });

  it('takes #token= from the link without asking and drops it from the address', async () => {
    const context = await browser.newContext();
    await context.route((url) => url.hostname !== '127.0.0.1', (route) => route.abort());
    const page = await context.newPage();
    let asked = 0;
    page.on('dialog', async (d) => { asked++; await d.dismiss(); });
    await page.goto(`https://127.0.0.1:${hub.port}/#token=${WATCH}`, { timeout: WAIT });
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    assert.equal(asked, 0, 'no prompt with a token in the link');
    assert.equal(await page.evaluate(() => location.hash), '');
    assert.equal(shipLine(hub.port, 'second line'), 0);
    await waitForMessage(page, 'second line');
    await context.close();
  });

  it('without a token (prompt dismissed) the page stays out', async () => {
    const context = await browser.newContext();
    await context.route((url) => url.hostname !== '127.0.0.1', (route) => route.abort());
    const page = await context.newPage();
    let asked = 0;
    page.on('dialog', async (d) => { asked++; await d.dismiss(); });
    await page.goto(`https://127.0.0.1:${hub.port}/`, { timeout: WAIT });
    await page.waitForSelector('#status[data-state="disconnected"]', { timeout: WAIT });
    assert.ok(asked >= 1);
    assert.equal(await page.$$eval('#lines .line', (l) => l.length), 0, 'no records shown');
    await context.close();
  });
});
