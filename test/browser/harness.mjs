// Shared pieces of the browser tests that start their own hub on 127.0.0.1
// and drive headless Chromium through playwright-core: skip (77) without
// the hub program, Chromium or the npm packages; start a hub and wait for
// its port; wait for a line on the page.
//
// Environment: MS_BUILD_ROOT (where tools/microstream-hub is).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

export const BUILD = process.env.MS_BUILD_ROOT;
export const HUB = path.join(BUILD || '.', 'tools', 'microstream-hub');
export const WAIT = 15000;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function skip(why) {
  console.log(`1..0 # SKIP ${why}`);
  process.exit(77);
}
export const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
if (!BUILD || !existsSync(HUB)) skip('no hub program (MS_BUILD_ROOT)');
if (!CHROMIUM) skip('no chromium');
export let chromium, Feeder, WebSocket;
try {
  ({ chromium } = await import('playwright-core'));
  ({ Feeder } = await import('./feeder.mjs'));
  WebSocket = (await import('ws')).default;
} catch (e) {
  skip('node modules missing (npm ci): ' + e.message);
}

export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM, timeout: 30000,
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// A hub on 127.0.0.1:port (0: any free port) with these extra arguments;
// resolves with { proc, port } once it listens.
export function startHub(extraArgs, port = 0) {
  return new Promise((resolve, reject) => {
    const proc = spawn(HUB, ['--listen', `127.0.0.1:${port}`, '--heartbeat-ms', '1000', ...extraArgs,
                             '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error('hub did not start')); }, 10000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) { clearTimeout(timer); resolve({ proc, port: Number(m[1]) }); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`hub exited with ${code}`)); });
  });
}

// The old port may be briefly unavailable after a stop: try a few times.
export async function restartHubOnPort(extraArgs, port) {
  let last;
  for (let i = 0; i < 20; i++) {
    try { return await startHub(extraArgs, port); } catch (e) { last = e; }
    await sleep(100);
  }
  throw last;
}

export function waitForMessage(page, message) {
  return page.waitForFunction((m) => Array.from(document.querySelectorAll('#lines .line .msg'))
    .some((e) => e.firstChild && e.firstChild.textContent === m), message, { timeout: WAIT });
}
