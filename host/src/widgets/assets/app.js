// mdp dashboard: live scanner boards, a quote card, the HOD/LOD range-alert
// log and the news feed, over the widget protocol (see feed.js). A clicked
// symbol sets the quote card and, with "link" on, filters alerts and news.
// Boards, alerts and news have filters; settings persist (prefs.js); panels
// can be moved and hidden and show their freshness (panels.js).
import { FeedSocket, onState } from './feed.js';
import { prefs, save, boardPrefs } from './prefs.js';
import { setupPanels, touch, reset, setLive } from './panels.js';
import { Table, num, esc, fmt, int, cls, time } from './table.js';
import { SessionChart } from './chart.js';

const $ = (s) => document.querySelector(s);
const safeLink = (u) => /^https?:\/\//i.test(u ?? '') ? u : '#';

// The seed's scanner columns: key, header, format.
const BOARD_COLUMNS = [
  ['symbol', 'Symbol', (r) => String(r.symbol ?? '')],
  ['close', 'Price', (r) => fmt(r.close)],
  ['change', 'Change', (r) => fmt(r.change)],
  ['pct_change', 'Change %', (r) => fmt(r.pct_change)],
  ['pct_change_since_open', 'Change % (Open)', (r) => fmt(r.pct_change_since_open)],
  ['accumulated_volume', 'Volume', (r) => int(r.accumulated_volume)],
  ['free_float', 'Float', (r) => int(r.free_float)],
  ['relative_volume', 'Rel. Vol.', (r) => fmt(r.relative_volume)],
  ['avg_volume', 'Avg Vol', (r) => int(r.avg_volume)],
  ['prev_day_volume', 'PD Vol', (r) => int(r.prev_day_volume)],
  ['official_open_price', 'Day Open', (r) => fmt(r.official_open_price)],
  ['prev_day_close', 'PD Close', (r) => fmt(r.prev_day_close)],
  ['aggregate_vwap', 'VWAP', (r) => fmt(r.aggregate_vwap)],
  ['prev_day_vwap', 'PD VWAP', (r) => fmt(r.prev_day_vwap)],
];

const boardCell = (k, r) => k === 'symbol' ? 'sym'
  : k.includes('change') ? cls(r[k])
    : k === 'relative_volume' ? (num(r[k]) >= 5 ? 'rv5' : num(r[k]) >= 3 ? 'rv3' : num(r[k]) >= 2 ? 'rv2' : '') : '';

/** The filter bar of a board: price range, minimum volume and relative volume, columns. */
function boardControls(name, table) {
  const p = boardPrefs(name, BOARD_COLUMNS.map(([k]) => k));
  const bar = $(`#${name} .filters`);
  const field = (k, label) => `<label>${label} <input type="number" min="0" step="any" data-f="${k}" value="${esc(p[k])}"></label>`;
  bar.innerHTML = field('minPrice', 'Price ≥') + field('maxPrice', '≤') + field('minVolume', 'Vol ≥') + field('minRvol', 'RVol ≥') +
    '<details class="cols"><summary>Columns</summary>' + BOARD_COLUMNS.slice(1).map(([k, label]) =>
      `<label><input type="checkbox" data-col="${k}" ${p.cols.includes(k) ? 'checked' : ''}> ${label}</label>`).join('') + '</details>';
  const apply = () => {
    const bound = (k) => num(p[k]);
    const [lo, hi, vol, rvol] = ['minPrice', 'maxPrice', 'minVolume', 'minRvol'].map(bound);
    table.filter = (r) => (lo === null || num(r.close) >= lo) && (hi === null || num(r.close) <= hi)
      && (vol === null || num(r.accumulated_volume) >= vol) && (rvol === null || num(r.relative_volume) >= rvol);
    table.visible = ['symbol', ...BOARD_COLUMNS.map(([k]) => k).filter((k) => p.cols.includes(k) && k !== 'symbol')];
    table.render();
  };
  bar.addEventListener('input', (e) => {
    const f = e.target.dataset.f, col = e.target.dataset.col;
    if (f) p[f] = e.target.value;
    if (col) p.cols = e.target.checked ? [...p.cols, col] : p.cols.filter((c) => c !== col);
    save(); apply();
  });
  apply();
}

const BOARDS = { top_gainers: 'pct_change_since_open', top_gappers: 'pct_change', top_volume: 'accumulated_volume' };
for (const [name, sortKey] of Object.entries(BOARDS)) {
  const table = new Table($(`#${name} .scroll`), BOARD_COLUMNS, [sortKey, -1], boardCell, pick);
  table.onRender = (shown, kept, all) => { $(`#${name} .count`).textContent = kept === all ? `${all} rows` : `${kept} of ${all} rows`; };
  boardControls(name, table);
  const key = `scanners:${name}`;
  // One socket per board, as the seed's widgets: pushes carry no channel name.
  new FeedSocket({ gets: [{ cache: key }], feeds: [key] }, (data) => {
    if (!Array.isArray(data)) return;
    table.set(data);
    touch(name);
  });
}

// Quote card for one symbol (quote:{SYM}); payloads for other symbols are ignored.
let symbol = null;
const quoteSocket = new FeedSocket({}, (q) => renderQuote(q));
const chart = new SessionChart($('#chart'));
function renderQuote(q) {
  if (!q || Array.isArray(q) || q.symbol !== symbol) return;
  touch('quote');
  const f = (label, v) => `<div><label>${label}</label>${v}</div>`;
  const el = $('#quote');
  el.className = '';
  el.innerHTML = `<div class="big">${esc(q.symbol)} ${fmt(q.close)} <span class="${cls(q.change)}">${fmt(q.change)} (${fmt(q.pct_change)}%)</span></div>` +
    f('Since open', `<span class="${cls(q.change_since_open)}">${fmt(q.change_since_open)} (${fmt(q.pct_change_since_open)}%)</span>`) +
    f('Open', fmt(q.official_open_price)) + f('VWAP', fmt(q.aggregate_vwap)) + f('Volume', int(q.accumulated_volume)) +
    f('Rel. Vol', fmt(q.relative_volume)) + f('Avg Vol', int(q.avg_volume)) + f('Float', int(q.free_float)) +
    f('PD Open', fmt(q.prev_day_open)) + f('PD High', fmt(q.prev_day_high)) + f('PD Low', fmt(q.prev_day_low)) +
    f('PD Close', fmt(q.prev_day_close)) + f('PD Volume', int(q.prev_day_volume)) + f('PD VWAP', fmt(q.prev_day_vwap)) +
    f('As of', time(q.end_timestamp));
  el.dataset.symbol = q.symbol;
}

/** Link every panel to `sym`: the quote card shows it; linked alerts and news filter by it. */
function pick(sym) {
  sym = (sym || '').trim().toUpperCase();
  if (!sym || sym === symbol) return;
  $('#symbol').value = sym;
  if (symbol) quoteSocket.unsubscribe(`quote:${symbol}`);
  symbol = sym;
  prefs.symbol = sym; save();
  quoteSocket.gets = [{ cache: `quote:${sym}` }];
  $('#quote').className = 'muted';
  $('#quote').textContent = `Waiting for ${sym}…`;
  delete $('#quote').dataset.symbol;
  reset('quote');
  quoteSocket.get(`quote:${sym}`);
  quoteSocket.subscribe(`quote:${sym}`);
  chart.show(sym);
  $('#link-sym').textContent = sym;
  alertTable.render();
  renderNews();
}
$('#symbol').addEventListener('change', (e) => pick(e.target.value));
const linked = () => prefs.link && symbol;
$('#link').checked = prefs.link;
$('#link').addEventListener('change', (e) => { prefs.link = e.target.checked; save(); alertTable.render(); renderNews(); });

// HOD/LOD range alerts, newest first, filtered by type and symbol, with an optional sound.
const ALERT_COLUMNS = [
  ['timestamp', 'Time', (a) => time(a.timestamp)],
  ['symbol', 'Symbol', (a) => String(a.symbol ?? '')],
  ['direction', 'Type', (a) => a.direction === 'high' ? 'HOD' : a.direction === 'low' ? 'LOD' : String(a.direction ?? '')],
  ['price', 'Alert $', (a) => fmt(a.price)],
  ['previous', 'Prev $', (a) => fmt(a.previous)],
  ['aggregate_vwap', 'VWAP', (a) => fmt(a.aggregate_vwap)],
  ['close', 'Price', (a) => fmt(a.close)],
  ['pct_change', 'Change %', (a) => fmt(a.pct_change)],
  ['free_float', 'Float', (a) => int(a.free_float)],
  ['accumulated_volume', 'Volume', (a) => int(a.accumulated_volume)],
  ['avg_volume', 'Avg Vol', (a) => int(a.avg_volume)],
  ['relative_volume', 'Rel Vol', (a) => fmt(a.relative_volume)],
  ['note', 'Note', (a) => String(a.note ?? '')],
];
const MAX_ALERTS = 100;
const alertTable = new Table($('#alerts'), ALERT_COLUMNS, ['timestamp', -1],
  (k, a) => k === 'symbol' ? 'sym' : k === 'direction' ? (a.direction === 'high' ? 'up' : 'down') : k === 'pct_change' ? cls(a.pct_change) : '',
  pick);
const af = prefs.alerts;
const alertPasses = (a) => (af.type === 'all' || a.direction === af.type)
  && (!af.symbol || a.symbol === af.symbol.toUpperCase()) && (!linked() || a.symbol === symbol);
alertTable.filter = alertPasses;
$('#alert-type').value = af.type;
$('#alert-symbol').value = af.symbol;
$('#alert-sound').checked = af.sound;
$('#alert-filters').addEventListener('input', () => {
  af.type = $('#alert-type').value; af.symbol = $('#alert-symbol').value.trim(); af.sound = $('#alert-sound').checked;
  save(); alertTable.render();
});
let audio = null;
function beep() {
  audio ??= new AudioContext();
  const osc = audio.createOscillator(), gain = audio.createGain();
  osc.frequency.value = 880; gain.gain.value = 0.05;
  osc.connect(gain).connect(audio.destination);
  osc.start(); osc.stop(audio.currentTime + 0.12);
  $('#alerts').dataset.beeps = Number($('#alerts').dataset.beeps ?? 0) + 1;
}
alertTable.render();
const alertKeys = ['daily_range_hod_alert', 'daily_range_lod_alert'];
new FeedSocket({ gets: alertKeys.map((cache) => ({ cache, limit: MAX_ALERTS })), feeds: alertKeys }, (data, key) => {
  const fresh = Array.isArray(data) ? data : [data];
  const seen = new Set(alertTable.rows.map((a) => `${a.symbol}|${a.timestamp}|${a.direction}`));
  const add = fresh.filter((a) => a && a.symbol && !seen.has(`${a.symbol}|${a.timestamp}|${a.direction}`));
  touch('alerts');
  if (key !== null && !add.length) return;
  if (key === null && af.sound && add.some(alertPasses)) beep();
  alertTable.set([...add, ...alertTable.rows].sort((x, y) => (num(y.timestamp) ?? 0) - (num(x.timestamp) ?? 0)).slice(0, MAX_ALERTS));
});

// News feed, newest first, de-duplicated by link; searchable, optionally only articles naming tickers.
const MAX_NEWS = 200;
const US_LISTINGS = ['XNYS', 'XASE', 'XNAS'];
const TAG = /\(\s*(?:nasdaq|nyse|amex)\s*:\s*([a-z]{1,6})\s*\)/gi;
/** The tickers an article names, by the news-feed analyzer's rules (listings, else exchange tags). */
function tickers(a) {
  const companies = Array.isArray(a.companies) ? a.companies : [];
  const found = companies.length
    ? companies.filter((c) => US_LISTINGS.includes(c?.primaryListing?.exchangeCode)).map((c) => c.primaryListing.ticker ?? c.ticker)
    : [...`${a.title ?? ''} ${a.summary ?? ''}`.matchAll(TAG)].map((m) => m[1]);
  return [...new Set(found.filter((t) => typeof t === 'string' && t).map((t) => t.toUpperCase()))];
}
let news = [];
const nf = prefs.news;
$('#news-q').value = nf.q;
$('#news-tickers').checked = nf.tickersOnly;
$('#news-filters').addEventListener('input', () => {
  nf.q = $('#news-q').value; nf.tickersOnly = $('#news-tickers').checked;
  save(); renderNews();
});
function renderNews() {
  const q = nf.q.trim().toLowerCase();
  const shown = news.filter((a) => (!q || `${a.title ?? ''} ${a.summary ?? ''} ${a.source ?? ''}`.toLowerCase().includes(q))
    && (!nf.tickersOnly || a.tickers.length) && (!linked() || a.tickers.includes(symbol)));
  $('#news').innerHTML = shown.map((a) => `<li data-tickers="${esc(a.tickers.join(' '))}"><a href="${esc(safeLink(a.link))}" target="_blank" rel="noopener noreferrer">${esc(a.title ?? '(untitled)')}</a> ` +
    `${a.tickers.map((t) => `<span class="sym">${esc(t)}</span>`).join(' ')} <span class="muted">${esc(a.source)}</span></li>`).join('')
    || `<li class="muted">${news.length ? 'No news matches the filters.' : 'No news yet.'}</li>`;
  $('#news').dataset.items = shown.length;
  $('#news').dataset.all = news.length;
}
$('#news').addEventListener('click', (e) => { const s = e.target.closest('.sym'); if (s) pick(s.textContent); });
new FeedSocket({ gets: [{ cache: 'news:feed:latest', limit: MAX_NEWS }], feeds: ['news:feed:latest'] }, (data) => {
  const fresh = (Array.isArray(data) ? data : [data]).filter((a) => a && typeof a === 'object');
  const seen = new Set(news.map((a) => a.link ?? a.title));
  news = [...fresh.filter((a) => !seen.has(a.link ?? a.title)).map((a) => ({ ...a, tickers: tickers(a) })), ...news].slice(0, MAX_NEWS);
  touch('news');
  renderNews();
});
renderNews();

setupPanels();
if (prefs.symbol) pick(prefs.symbol);

onState((state, retryIn) => {
  const el = $('#state');
  el.className = state;
  setLive(state === 'live');
  el.textContent = state === 'live' ? 'live'
    : state === 'retrying' ? `disconnected — retrying${retryIn ? ` in ${Math.ceil(retryIn / 1000)} s` : ''}`
      : state === 'unauthorized' ? 'not authorized (open the page with #token=…)' : 'connecting…';
});
