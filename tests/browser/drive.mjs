// Opens the grpc-web test page in headless Chromium once per mode and prints
// {"<mode>": results, ...} as one JSON line on stdout.
//
// Usage: node drive.mjs PAGE_URL PROXY_ORIGIN MODE...
// The Rust test tests/e2e/grpc_web_browser.rs serves the page and the proxy.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
// Keeps Chromium off the network: no QUIC, no background fetches, no
// component or sync updates, and every host name except 127.0.0.1 fails to
// resolve, so only the loopback addresses the test passes can be reached.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-proxy-server',
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
];
const PAGE_TIMEOUT_MS = 30_000;

// Loads the page for `mode` and returns what it wrote into #results, with
// the content type of each request it sent to the proxy.
async function runMode(context, pageUrl, proxy, mode) {
  const page = await context.newPage();
  const contentTypes = [];
  page.on('request', (request) => {
    if (request.url().startsWith(proxy) && request.method() === 'POST') {
      contentTypes.push(request.headers()['content-type'] || '');
    }
  });
  page.on('console', (message) => process.stderr.write(`[page ${mode}] ${message.type()}: ${message.text()}\n`));
  page.on('pageerror', (error) => process.stderr.write(`[page ${mode}] uncaught: ${error}\n`));

  const url = `${pageUrl}?${new URLSearchParams({ proxy, mode })}`;
  await page.goto(url, { timeout: PAGE_TIMEOUT_MS });
  const results = page.locator('#results[data-done="true"]');
  await results.waitFor({ state: 'attached', timeout: PAGE_TIMEOUT_MS });
  const parsed = JSON.parse(await results.textContent());
  await page.close();
  return { ...parsed, contentTypes };
}

async function main() {
  const [pageUrl, proxy, ...modes] = process.argv.slice(2);
  if (!pageUrl || !proxy || modes.length === 0) {
    throw new Error('usage: node drive.mjs PAGE_URL PROXY_ORIGIN MODE...');
  }
  // A fresh profile per run, so no cache or stored state carries over.
  const userDataDir = mkdtempSync(join(tmpdir(), 'legate-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    headless: true,
  });
  try {
    const output = {};
    for (const mode of modes) {
      output[mode] = await runMode(context, pageUrl, proxy, mode);
    }
    process.stdout.write(`${JSON.stringify(output)}\n`);
  } finally {
    await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`drive.mjs failed: ${error && error.stack || error}\n`);
  process.exit(1);
});
