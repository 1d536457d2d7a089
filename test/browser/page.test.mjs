// Browser test of the live page's views (web/viewer.html): empty states,
// several services at once, a structured field as a filter, filters kept in
// the URL, records in time order, services unknown while disconnected, the
// 390 px layout and the live request charts fed by /api/stats. Headless
// Chromium through playwright-core; a hub on 127.0.0.1.
//
// Environment: MS_BUILD_ROOT (where tools/microstream-hub is).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { BUILD, Feeder, WAIT, WebSocket, launchBrowser, sleep, startHub, waitForMessage }
  from './harness.mjs';

// A service that answers requests over the JSON subprotocol: "ok" with a
// result, "fail" with an error of its own.
function serve(url, name) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, 'microstream.json.v1');
    ws.on('open', () => ws.send(JSON.stringify([1, 1, name, null, { heartbeat_ms: 1000 }])));
    ws.on('message', (data) => {
      const m = JSON.parse(String(data));
      if (m[0] === 2) resolve(ws);
      else if (m[0] === 3 && m[3] === 'ok') ws.send(JSON.stringify([4, m[1], { fine: true }]));
      else if (m[0] === 3) ws.send(JSON.stringify([5, m[1], 'NOPE', 'refused', null]));
      else if (m[0] === 12) ws.send(JSON.stringify([13, m[1]]));
    });
    ws.on('error', reject);
  });
}

// A caller sending requests to target/event at a steady pace.
function caller(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, 'microstream.json.v1');
    let id = 1;
    ws.on('open', () => ws.send(JSON.stringify([1, 1, 'caller', null, { watch: true, heartbeat_ms: 1000 }])));
    ws.on('message', (data) => {
      const m = JSON.parse(String(data));
      if (m[0] === 2) resolve({
        ws,
        call: (target, event) => ws.send(JSON.stringify([3, id++, target, event, null, 2000, {}])),
      });
      else if (m[0] === 12) ws.send(JSON.stringify([13, m[1]]));
    });
    ws.on('error', reject);
  });
}

function visibleMessages(page) {
  return page.$$eval('#lines .line', (els) => els.filter((e) => !e.hidden).map((e) => {
    const msg = e.querySelector('.msg'), f = msg.querySelector('.fields');
    return f ? msg.textContent.slice(0, msg.textContent.length - f.textContent.length) : msg.textContent;
  }));
}

describe('live page views', { timeout: 170000 }, () => {
  let hub, browser, page;
  const feeders = ['alpha', 'beta', 'gamma'].map((n) => new Feeder(n));
  const url = () => `ws://127.0.0.1:${hub.port}/ws`;
  const sockets = [];

  before(async () => {
    hub = await startHub(['--no-store']);
    for (const f of feeders) await f.connect(url());
    browser = await launchBrowser();
    const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    await context.route((u) => u.hostname !== '127.0.0.1', (route) => route.abort());
    page = await context.newPage();
    page.on('pageerror', (err) => { console.error('# page error:', err.message); });
  });

  after(async () => {
    for (const f of feeders) f.close();
    for (const s of sockets) s.terminate();
    if (browser) await browser.close().catch(() => {});
    if (hub) hub.proc.kill('SIGKILL');
  });

  it('says it is waiting, then that nothing matches the search', async () => {
    await page.goto(`http://127.0.0.1:${hub.port}/?stats_ms=400`, { timeout: WAIT });
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    assert.equal(await page.getAttribute('#empty', 'data-state'), 'waiting');
    assert.ok(await page.isVisible('#empty'));
    feeders[0].log(20, 'first words', { user: 'alice' });
    await waitForMessage(page, 'first words');
    assert.equal(await page.isVisible('#empty'), false);
    await page.fill('#search', 'NOTHING-like-this');
    await page.waitForSelector('#empty[data-state="nomatch"]', { state: 'visible', timeout: WAIT });
    assert.match(await page.textContent('#empty'), /no records match/);
    assert.match(page.url(), /q=NOTHING-like-this/);
    // ASCII case does not matter, as for the hub's contains
    await page.fill('#search', 'FIRST WORDS');
    await page.waitForSelector('#empty', { state: 'hidden', timeout: WAIT });
    assert.deepEqual(await visibleMessages(page), ['first words']);
    await page.fill('#search', '');
    await page.waitForFunction(() => !location.search.includes('q='), null, { timeout: WAIT });
  });

  it('shows several services at once and keeps them in the URL', async () => {
    feeders[0].log(20, 'from alpha');
    feeders[1].log(20, 'from beta');
    feeders[2].log(20, 'from gamma');
    await waitForMessage(page, 'from gamma');
    await page.click('#services li[data-service="alpha"]');
    await page.click('#services li[data-service="gamma"]');
    await page.waitForFunction(() => /service=alpha%2Cgamma|service=alpha,gamma/.test(location.search),
                               null, { timeout: WAIT });
    let shown = await visibleMessages(page);
    assert.ok(shown.includes('from alpha') && shown.includes('from gamma'), shown.join('|'));
    assert.ok(!shown.includes('from beta'), shown.join('|'));
    assert.equal(await page.$eval('#filter-service', (s) => s.options[0].textContent), '2 services');
    // The URL is the view: opened again, the same two services are selected.
    await page.goto(page.url(), { timeout: WAIT });
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    await waitForMessage(page, 'from gamma');
    shown = await visibleMessages(page);
    assert.ok(shown.includes('from alpha') && !shown.includes('from beta'), shown.join('|'));
    await page.waitForSelector('#services li.selected[data-service="gamma"]', { timeout: WAIT });
    await page.click('#services li[data-service="alpha"]');
    await page.click('#services li[data-service="gamma"]');
    await page.waitForFunction(() => !location.search.includes('service='), null, { timeout: WAIT });
  });

  it('filters by a structured field when it is clicked', async () => {
    feeders[1].log(20, 'login', { user: 'alice', ms: 12 });
    feeders[1].log(20, 'login', { user: 'bob', ms: 40 });
    feeders[1].log(30, 'logout', { user: 'alice' });
    await waitForMessage(page, 'logout');
    await page.click('#lines .line:not([hidden]) .kv[data-k="user"][data-v="bob"]');
    await page.waitForSelector('#field-filters button[data-k="user"]', { timeout: WAIT });
    assert.deepEqual(await visibleMessages(page), ['login']);
    assert.match(page.url(), /field=user%3Dbob/);
    await page.click('#field-filters button[data-k="user"]');
    await page.waitForFunction(() => !location.search.includes('field='), null, { timeout: WAIT });
    await page.click('#lines .line:not([hidden]) .kv[data-k="user"][data-v="alice"]');
    await page.waitForSelector('#field-filters button[data-v="alice"]', { timeout: WAIT });
    const shown = await visibleMessages(page);
    assert.deepEqual(shown.filter((m) => m === 'login' || m === 'logout'), ['login', 'logout']);
    assert.ok(shown.includes('first words'));
    await page.click('#field-filters button[data-v="alice"]');
  });

  it('places records in time order', async () => {
    const now = Date.now() * 1000;
    feeders[2].ws.send(JSON.stringify([7, now, 20, 'stamped later', {}]));
    feeders[2].ws.send(JSON.stringify([7, now - 60e6, 20, 'stamped a minute earlier', {}]));
    await waitForMessage(page, 'stamped a minute earlier');
    await waitForMessage(page, 'stamped later');
    const all = await visibleMessages(page);
    assert.ok(all.indexOf('stamped a minute earlier') < all.indexOf('stamped later'), all.join('|'));
  });

  it('charts request rate, errors and latency per service and event', async () => {
    const s = await serve(url(), 'calc');
    const c = await caller(url());
    sockets.push(s, c.ws);
    const timer = setInterval(() => { c.call('calc', 'ok'); c.call('calc', 'ok'); c.call('calc', 'fail'); }, 50);
    try {
      await page.waitForSelector('#services li[data-service="calc"] .stats svg polyline',
                                 { timeout: WAIT });
      await page.waitForFunction(() => {
        const b = document.querySelector('#services li[data-service="calc"] .stats');
        return b && Number(b.dataset.rate) > 5 && b.dataset.lat !== undefined;
      }, null, { timeout: WAIT });
      const svc = await page.$eval('#services li[data-service="calc"] .stats',
                                   (b) => ({ ...b.dataset, text: b.textContent }));
      const err = Number(svc.err);
      assert.ok(err > 0.15 && err < 0.5, JSON.stringify(svc));  // one in three fails
      assert.match(svc.text, /\/s · \d+% err · [\d.]+ ms/);
      await page.waitForSelector('#routes li[data-target="calc"][data-event="fail"] .stats rect',
                                 { timeout: WAIT });
      const fail = await page.$eval('#routes li[data-target="calc"][data-event="fail"] .stats',
                                    (b) => Number(b.dataset.err));
      const ok = await page.$eval('#routes li[data-target="calc"][data-event="ok"] .stats',
                                  (b) => Number(b.dataset.err));
      assert.equal(fail, 1);
      assert.equal(ok, 0);
      await page.screenshot({ path: path.join(BUILD, 'page-charts.png') });
    } finally {
      clearInterval(timer);
    }
  });

  it('is usable at 390 px wide', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await sleep(200);
    const m = await page.evaluate(() => {
      const line = Array.from(document.querySelectorAll('#lines .line')).find((e) => !e.hidden);
      const r = line.querySelector('.msg').getBoundingClientRect();
      const aside = document.querySelector('aside').getBoundingClientRect();
      return { scroll: document.documentElement.scrollWidth, msgRight: r.right, msgWidth: r.width,
               asideH: aside.height, searchW: document.querySelector('#search').getBoundingClientRect().width };
    });
    assert.ok(m.scroll <= 390, JSON.stringify(m));        // nothing sticks out sideways
    assert.ok(m.msgRight <= 390 && m.msgWidth > 250, JSON.stringify(m));  // messages get the width
    assert.ok(m.asideH > 20, JSON.stringify(m));          // services (and charts) still there
    assert.ok(m.searchW > 300, JSON.stringify(m));
    await page.screenshot({ path: path.join(BUILD, 'page-390.png') });
    await page.setViewportSize({ width: 1280, height: 720 });
  });

  it('marks services unknown while disconnected', async () => {
    hub.proc.kill('SIGKILL');
    await page.waitForSelector('#status[data-state="disconnected"]', { timeout: WAIT });
    await page.waitForSelector('#services li[data-service="alpha"][data-state="unknown"]', { timeout: WAIT });
    assert.equal(await page.$$eval('#services li[data-state="up"]', (l) => l.length), 0);
  });
});
