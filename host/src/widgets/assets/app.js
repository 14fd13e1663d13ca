// mdp dashboard: live scanner boards, a quote card, the HOD/LOD range-alert
// log and the news feed, over the widget protocol (see feed.js).
import { FeedSocket, onState } from './feed.js';

const $ = (s) => document.querySelector(s);
const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const num = (v) => (v === null || v === undefined || v === '' || Number.isNaN(Number(v))) ? null : Number(v);
const fmt = (v, d = 2) => num(v) === null ? '' : num(v).toLocaleString(undefined, { maximumFractionDigits: d, minimumFractionDigits: d });
const int = (v) => num(v) === null ? '' : Math.round(num(v)).toLocaleString();
const cls = (v) => num(v) > 0 ? 'up' : num(v) < 0 ? 'down' : '';
const time = (t) => {
  if (!num(t)) return '';
  const ms = num(t) < 1e12 ? num(t) * 1000 : num(t); // alert timestamps are seconds
  return new Date(ms).toLocaleTimeString([], { hour12: false });
};
const safeLink = (u) => /^https?:\/\//i.test(u ?? '') ? u : '#';

// The seed's scanner columns: key, header, format.
const BOARD_COLUMNS = [
  ['symbol', 'Symbol', (r) => esc(r.symbol)],
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
const ROWS_SHOWN = 100;

// A sortable table over rows replaced wholesale on every update.
class Table {
  constructor(el, columns, sort, cellClass) {
    this.el = el; this.columns = columns; this.sort = sort; this.cellClass = cellClass;
    this.rows = []; this.updates = 0; this.pending = false;
    el.addEventListener('click', (e) => {
      const th = e.target.closest('th');
      if (th) {
        const k = th.dataset.k;
        this.sort = [k, this.sort[0] === k ? -this.sort[1] : (k === 'symbol' ? 1 : -1)];
        this.render();
        return;
      }
      const sym = e.target.closest('td.sym');
      if (sym) pick(sym.textContent);
    });
  }

  set(rows) { this.rows = rows; this.updates++; this.schedule(); }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  render() {
    const [key, dir] = this.sort;
    const val = (r) => { const v = r[key]; return typeof v === 'string' && num(v) === null ? v : num(v); };
    const rows = [...this.rows].sort((x, y) => {
      const a = val(x), b = val(y);
      if (a === b) return 0;
      if (a === null) return 1;
      if (b === null) return -1;
      return (typeof a === 'string' ? String(a).localeCompare(String(b)) : a - b) * dir;
    }).slice(0, ROWS_SHOWN);
    const head = '<thead><tr>' + this.columns.map(([k, label]) =>
      `<th data-k="${k}" aria-sort="${k === key ? (dir > 0 ? 'ascending' : 'descending') : 'none'}">${label}${k === key ? (dir > 0 ? ' ▲' : ' ▼') : ''}</th>`).join('') + '</tr></thead>';
    const body = '<tbody>' + rows.map((r) => '<tr>' + this.columns.map(([k, , f]) =>
      `<td class="${this.cellClass(k, r)}">${f(r)}</td>`).join('') + '</tr>').join('') + '</tbody>';
    this.el.innerHTML = `<table>${head}${body}</table>`;
    this.el.dataset.updates = this.updates;
    this.el.dataset.rows = this.rows.length;
  }
}

const boardCell = (k, r) => k === 'symbol' ? 'sym'
  : k.includes('change') ? cls(r[k])
    : k === 'relative_volume' ? (num(r[k]) >= 5 ? 'rv5' : num(r[k]) >= 3 ? 'rv3' : num(r[k]) >= 2 ? 'rv2' : '') : '';

const BOARDS = { top_gainers: 'pct_change_since_open', top_gappers: 'pct_change', top_volume: 'accumulated_volume' };
for (const [name, sortKey] of Object.entries(BOARDS)) {
  const table = new Table(document.querySelector(`#${name} .scroll`), BOARD_COLUMNS, [sortKey, -1], boardCell);
  table.render();
  const key = `scanners:${name}`;
  // One socket per board, as the seed's widgets: pushes carry no channel name.
  new FeedSocket({ gets: [{ cache: key }], feeds: [key] }, (data) => {
    if (!Array.isArray(data)) return;
    table.set(data);
    document.querySelector(`#${name} small`).textContent = `${data.length} rows · ${time(Date.now())}`;
  });
}

// Quote card for one symbol (quote:{SYM}); payloads for other symbols are ignored.
let symbol = null;
const quoteSocket = new FeedSocket({}, (q) => renderQuote(q));
function renderQuote(q) {
  if (!q || Array.isArray(q) || q.symbol !== symbol) return;
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
function pick(sym) {
  sym = (sym || '').trim().toUpperCase();
  if (!sym || sym === symbol) return;
  $('#symbol').value = sym;
  if (symbol) quoteSocket.unsubscribe(`quote:${symbol}`);
  symbol = sym;
  quoteSocket.gets = [{ cache: `quote:${sym}` }];
  $('#quote').className = 'muted';
  $('#quote').textContent = `Waiting for ${sym}…`;
  quoteSocket.get(`quote:${sym}`);
  quoteSocket.subscribe(`quote:${sym}`);
}
$('#symbol').addEventListener('change', (e) => pick(e.target.value));

// HOD/LOD range alerts, newest first.
const ALERT_COLUMNS = [
  ['timestamp', 'Time', (a) => time(a.timestamp)],
  ['symbol', 'Symbol', (a) => esc(a.symbol)],
  ['direction', 'Type', (a) => a.direction === 'high' ? 'HOD' : a.direction === 'low' ? 'LOD' : esc(a.direction)],
  ['price', 'Alert $', (a) => fmt(a.price)],
  ['previous', 'Prev $', (a) => fmt(a.previous)],
  ['aggregate_vwap', 'VWAP', (a) => fmt(a.aggregate_vwap)],
  ['close', 'Price', (a) => fmt(a.close)],
  ['pct_change', 'Change %', (a) => fmt(a.pct_change)],
  ['free_float', 'Float', (a) => int(a.free_float)],
  ['accumulated_volume', 'Volume', (a) => int(a.accumulated_volume)],
  ['avg_volume', 'Avg Vol', (a) => int(a.avg_volume)],
  ['relative_volume', 'Rel Vol', (a) => fmt(a.relative_volume)],
  ['note', 'Note', (a) => esc(a.note)],
];
const MAX_ALERTS = 100;
const alertTable = new Table($('#alerts'), ALERT_COLUMNS, ['timestamp', -1],
  (k, a) => k === 'symbol' ? 'sym' : k === 'direction' ? (a.direction === 'high' ? 'up' : 'down') : k === 'pct_change' ? cls(a.pct_change) : '');
alertTable.render();
const alertKeys = ['daily_range_hod_alert', 'daily_range_lod_alert'];
new FeedSocket({ gets: alertKeys.map((cache) => ({ cache, limit: MAX_ALERTS })), feeds: alertKeys }, (data, key) => {
  const fresh = Array.isArray(data) ? data : [data];
  const seen = new Set(alertTable.rows.map((a) => `${a.symbol}|${a.timestamp}|${a.direction}`));
  const add = fresh.filter((a) => a && a.symbol && !seen.has(`${a.symbol}|${a.timestamp}|${a.direction}`));
  if (key !== null && !add.length) return;
  alertTable.set([...add, ...alertTable.rows].sort((x, y) => (num(y.timestamp) ?? 0) - (num(x.timestamp) ?? 0)).slice(0, MAX_ALERTS));
});

// News feed, newest first, de-duplicated by link.
const MAX_NEWS = 200;
let news = [];
function renderNews() {
  $('#news').innerHTML = news.map((a) => `<li><a href="${esc(safeLink(a.link))}" target="_blank" rel="noopener noreferrer">${esc(a.title ?? '(untitled)')}</a> <span class="muted">${esc(a.source)}</span></li>`).join('') || '<li class="muted">No news yet.</li>';
  $('#news').dataset.items = news.length;
}
new FeedSocket({ gets: [{ cache: 'news:feed:latest', limit: MAX_NEWS }], feeds: ['news:feed:latest'] }, (data) => {
  const fresh = Array.isArray(data) ? data : [data];
  const seen = new Set(news.map((a) => a.link ?? a.title));
  news = [...fresh.filter((a) => a && !seen.has(a.link ?? a.title)), ...news].slice(0, MAX_NEWS);
  renderNews();
});
renderNews();

onState((state, retryIn) => {
  const el = $('#state');
  el.className = state;
  el.textContent = state === 'live' ? 'live'
    : state === 'retrying' ? `disconnected — retrying${retryIn ? ` in ${Math.ceil(retryIn / 1000)} s` : ''}`
      : state === 'unauthorized' ? 'not authorized (open the page with #token=…)' : 'connecting…';
});
