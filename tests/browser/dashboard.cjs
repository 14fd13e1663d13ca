// Drives headless Chromium against the mdp dashboard; run by tests/all/browser.rs.
//   node dashboard.cjs <dashboard url>          boards, sorting, quote card, reconnect
//   node dashboard.cjs --auth <url> <token>     token auth: live with it, refused without
// env MDP_PLAYWRIGHT_CORE: path of the installed playwright-core package.
// Prints one line per phase; after `ready-for-restart` the test restarts the
// server and this script checks the page reconnects and updates again.
// Exits non-zero with a message on any failed check.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require(process.env.MDP_PLAYWRIGHT_CORE);

const authMode = process.argv[2] === '--auth';
const url = authMode ? process.argv[3] : process.argv[2];
const BOARDS = ['top_gainers', 'top_gappers', 'top_volume'];
const say = (line) => process.stdout.write(line + '\n');

function fail(msg) {
  process.stderr.write(`browser check failed: ${msg}\n`);
  process.exit(1);
}

async function launch() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'mdp-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.MDP_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  return { context, profile };
}

async function auth(token) {
  const { context, profile } = await launch();
  try {
    const page = await context.newPage();
    const frames = [];
    page.on('websocket', (ws) => ws.on('framesent', (f) => frames.push(String(f.payload))));
    await page.goto(url);
    await page.waitForFunction(() => document.querySelector('#state').className === 'unauthorized', null, { timeout: 30000 })
      .catch(async () => fail(`without a token: ${await page.textContent('#state')}`));
    say('refused-without-token');
    await page.goto(`${url}#token=${token}`);
    await page.reload(); // a hash-only change does not reload the page
    await page.waitForFunction(() => document.querySelector('#state').className === 'live', null, { timeout: 30000 })
      .catch(async () => fail(`with a token: ${await page.textContent('#state')}`));
    if (page.url().includes('token=')) fail('the token stays in the address bar');
    if (!frames.some((f) => f.includes('"token"'))) fail('no auth frame with the token was sent');
    say('live-with-token');
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

async function main() {
  if (authMode) return auth(process.argv[4]);
  const { context, profile } = await launch();
  try {
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
    page.on('response', (r) => { if (r.status() >= 400) errors.push(`HTTP ${r.status()} ${r.url()}`); });
    const frames = [];
    page.on('websocket', (ws) => ws.on('framereceived', (f) => frames.push(String(f.payload))));
    await page.goto(url);

    const state = () => page.textContent('#state');
    await page.waitForFunction(() => document.querySelector('#state').className === 'live', null, { timeout: 30000 })
      .catch(async () => fail(`connection state never became live: ${await state()}`));
    say('live');

    // Every board fills: rows with a symbol and a number in each of its columns.
    const rows = (b) => page.$$eval(`#${b} tbody tr`, (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
    for (const b of BOARDS) {
      await page.waitForFunction((b) => document.querySelectorAll(`#${b} tbody tr`).length > 0, b, { timeout: 60000 })
        .catch(() => fail(`${b} never filled`));
      const r = await rows(b);
      const headers = await page.$$eval(`#${b} th`, (ths) => ths.map((th) => th.dataset.k));
      if (headers.length !== 14) fail(`${b}: ${headers.length} columns, want the seed's 14`);
      if (!/^[A-Z.]+$/.test(r[0][0])) fail(`${b}: first cell is not a symbol: ${r[0][0]}`);
      if (!/\d/.test(r[0][headers.indexOf('close')])) fail(`${b}: no price in ${r[0]}`);
      say(`filled ${b} ${r.length}`);
    }

    // Boards update: the update counter moves and the rows change over time.
    const updates = (b) => page.$eval(`#${b} .scroll`, (el) => Number(el.dataset.updates || 0));
    const before = await updates('top_volume');
    await page.waitForFunction((n) => Number(document.querySelector('#top_volume .scroll').dataset.updates) > n + 1,
      before, { timeout: 30000 }).catch(() => fail('top_volume did not update'));
    say('updated top_volume');

    // Sortable headers: Price ascending, then descending.
    const prices = async () => (await page.$$eval('#top_volume tbody tr td:nth-child(2)', (tds) => tds.map((td) => Number(td.textContent.replace(/,/g, '')))));
    const sorted = (xs, dir) => xs.every((x, i) => i === 0 || (dir > 0 ? xs[i - 1] <= x : xs[i - 1] >= x));
    await page.click('#top_volume th[data-k="close"]');
    let p = await prices();
    if (!sorted(p, -1)) fail(`not sorted by price descending: ${p.slice(0, 10)}`);
    await page.click('#top_volume th[data-k="close"]');
    p = await prices();
    if (!sorted(p, 1)) fail(`not sorted by price ascending: ${p.slice(0, 10)}`);
    if ((await page.getAttribute('#top_volume th[data-k="close"]', 'aria-sort')) !== 'ascending') fail('aria-sort');
    say('sorted');

    // Quote card: click a symbol.
    const sym = await page.textContent('#top_volume tbody tr td.sym');
    await page.click('#top_volume tbody tr td.sym');
    await page.waitForFunction((s) => document.querySelector('#quote').dataset.symbol === s, sym, { timeout: 30000 })
      .catch(() => fail(`the quote card never showed ${sym}`));
    const card = await page.textContent('#quote');
    if (!card.includes('VWAP') || !card.includes(sym)) fail(`quote card: ${card}`);
    say(`quote ${sym}`);

    // Status frames and secrets never show up as data.
    if (frames.some((f) => /api_key|massive_api_key|finlight_api_key/i.test(f))) fail('a key in a WebSocket frame');
    if (errors.length) fail(`page errors: ${errors.join('; ')}`);

    // Reconnect: the test restarts the server now.
    say('ready-for-restart');
    await page.waitForFunction(() => document.querySelector('#state').className !== 'live', null, { timeout: 30000 })
      .catch(() => fail('the page did not notice the server went away'));
    say(`saw-disconnect ${await state()}`);
    const was = await updates('top_volume');
    await page.waitForFunction(() => document.querySelector('#state').className === 'live', null, { timeout: 60000 })
      .catch(async () => fail(`did not reconnect: ${await state()}`));
    await page.waitForFunction((n) => Number(document.querySelector('#top_volume .scroll').dataset.updates) > n,
      was, { timeout: 30000 }).catch(() => fail('no updates after reconnecting'));
    say('reconnected');
    // Refused connections while the server was down are expected; nothing else.
    const other = errors.filter((e) => !/WebSocket connection to .* failed/.test(e));
    if (other.length) fail(`page errors: ${other.join('; ')}`);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => say('done'), (e) => fail(e.stack || String(e)));
