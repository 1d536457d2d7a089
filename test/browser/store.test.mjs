// Browser test of the live page's stored history (web/viewer.html with
// GET /api/logs): a hub with a store gets records and is restarted on the
// same store file; a fresh page shows the stored records, then what arrives
// live, each once and in order. A hub without a store (--no-store) still
// serves a working page. Headless Chromium through playwright-core; hubs on
// 127.0.0.1.
//
// Environment: MS_BUILD_ROOT (where tools/microstream-hub is).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Feeder, WAIT, launchBrowser, restartHubOnPort, sleep, startHub, waitForMessage }
  from './harness.mjs';

function stopHub(h) {
  return new Promise((resolve) => {
    if (!h || h.proc.exitCode !== null || h.proc.signalCode !== null) { resolve(); return; }
    const t = setTimeout(() => h.proc.kill('SIGKILL'), 10000);
    h.proc.once('exit', () => { clearTimeout(t); resolve(); });
    h.proc.kill('SIGTERM');
  });
}

// Waits until the hub's store holds `n` records (it writes in batches).
async function storedCount(port, n) {
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`http://127.0.0.1:${port}/api/logs?limit=10000`);
    const body = await r.json();
    if (body.count >= n) return body.count;
    await sleep(100);
  }
  throw new Error(`store never held ${n} records`);
}

function lines(page) {
  return page.$$eval('#lines .line', (els) => els.map((e) => {
    const msg = e.querySelector('.msg'), f = msg.querySelector('.fields');
    return f ? msg.textContent.slice(0, msg.textContent.length - f.textContent.length) : msg.textContent;
  }));
}

describe('stored history on the live page', { timeout: 170000 }, () => {
  let browser, dir;
  const hubs = [];
  const alpha = new Feeder('alpha');

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ms-page-store-'));
    browser = await launchBrowser();
  });

  after(async () => {
    alpha.close();
    if (browser) await browser.close();
    for (const h of hubs) await stopHub(h);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function freshPage(port) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    await context.route((url) => url.hostname !== '127.0.0.1', (route) => route.abort());
    const page = await context.newPage();
    page.on('pageerror', (err) => { console.error('# page error:', err.message); });
    await page.goto(`http://127.0.0.1:${port}/`, { timeout: WAIT });
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    return page;
  }

  it('shows the store after a hub restart, then live records, each once and in order', async () => {
    const store = path.join(dir, 'logs.db');
    let hub = await startHub(['--store', store]);
    hubs.push(hub);
    await alpha.connect(`ws://127.0.0.1:${hub.port}/ws`);
    const expected = [];
    for (let i = 0; i < 30; i++) {
      alpha.log(i % 3 === 0 ? 30 : 20, `stored ${i}`, { i });
      expected.push(`stored ${i}`);
    }
    await alpha.drain();
    await storedCount(hub.port, 30);
    // a page open across the restart keeps what it has and repeats nothing
    const open = await freshPage(hub.port);
    await waitForMessage(open, 'stored 29');
    alpha.close();
    await stopHub(hub);

    // the same store file, a new hub run: its memory is empty
    hub = await restartHubOnPort(['--store', store], hub.port);
    hubs.push(hub);
    await alpha.connect(`ws://127.0.0.1:${hub.port}/ws`);
    // in the new run's memory and in the store: must still show once
    alpha.log(20, 'early in the new run');
    expected.push('early in the new run');
    await alpha.drain();
    await storedCount(hub.port, 31);

    const page = await freshPage(hub.port);
    await waitForMessage(page, 'early in the new run');
    await waitForMessage(page, 'stored 0');
    alpha.log(40, 'live after restart');
    expected.push('live after restart');
    await waitForMessage(page, 'live after restart');
    assert.deepEqual(await lines(page), expected);
    assert.equal(await page.$('.notice'), null);
    await waitForMessage(open, 'live after restart');
    assert.deepEqual(await lines(open), expected);
    await open.waitForSelector('.notice[data-kind="hub"]', { state: 'attached', timeout: WAIT });
    await open.context().close();
    // the stored records are real lines: levels, services and fields kept
    const first = await page.$eval('#lines .line', (e) => ({
      service: e.dataset.service, level: e.dataset.level, text: e.querySelector('.msg').textContent,
    }));
    assert.deepEqual([first.service, first.level], ['alpha', '30']);
    assert.match(first.text, /i=0/);

    // a reload sees the same, once each
    await page.reload({ timeout: WAIT });
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    await waitForMessage(page, 'live after restart');
    await page.waitForFunction(() => !window.microstreamViewer.storeLoading, null, { timeout: WAIT });
    assert.deepEqual(await lines(page), expected);
    await page.context().close();
    alpha.close();
  });

  it('works with a hub that keeps no store', async () => {
    const hub = await startHub(['--no-store']);
    hubs.push(hub);
    await alpha.connect(`ws://127.0.0.1:${hub.port}/ws`);
    alpha.log(20, 'in memory only');
    await alpha.drain();
    const page = await freshPage(hub.port);
    await waitForMessage(page, 'in memory only');
    alpha.log(20, 'live without a store');
    await waitForMessage(page, 'live without a store');
    assert.deepEqual(await lines(page), ['in memory only', 'live without a store']);
    assert.equal(await page.$('.notice'), null);
    await page.context().close();
    alpha.close();
  });
});
