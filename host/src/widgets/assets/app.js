// mdp dashboard: one WebSocket to /ws speaking the widget protocol
// (get + subscribe), reconnecting with back-off.
const $ = (s) => document.querySelector(s);
const fmt = (v, d = 2) => (v === null || v === undefined || Number.isNaN(v)) ? '' : Number(v).toLocaleString(undefined, { maximumFractionDigits: d, minimumFractionDigits: d });
const int = (v) => (v === null || v === undefined) ? '' : Math.round(v).toLocaleString();
const cls = (v) => v > 0 ? 'up' : v < 0 ? 'down' : '';

const COLUMNS = [
  ['symbol', 'Symbol', (r) => r.symbol],
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

const boards = { top_gainers: { rows: [], sort: ['pct_change_since_open', -1] },
                 top_gappers: { rows: [], sort: ['pct_change', -1] },
                 top_volume: { rows: [], sort: ['accumulated_volume', -1] } };

function renderBoard(name) {
  const b = boards[name];
  const [key, dir] = b.sort;
  const rows = [...b.rows].sort((x, y) => {
    const a = x[key], c = y[key];
    return (typeof a === 'string' ? a.localeCompare(c) : (a ?? -Infinity) - (c ?? -Infinity)) * dir;
  }).slice(0, 100);
  const head = '<tr>' + COLUMNS.map(([k, label]) => `<th data-k="${k}">${label}${k === key ? (dir > 0 ? ' ▲' : ' ▼') : ''}</th>`).join('') + '</tr>';
  const body = rows.map((r) => '<tr>' + COLUMNS.map(([k, , f]) =>
    `<td class="${k === 'symbol' ? 'sym' : (k.includes('change') ? cls(r[k]) : '')}">${f(r)}</td>`).join('') + '</tr>').join('');
  const el = document.querySelector(`#${name} .scroll`);
  el.innerHTML = `<table>${head}${body}</table>`;
  document.querySelector(`#${name} small`).textContent = `${b.rows.length} rows`;
  el.querySelectorAll('th').forEach((th) => th.onclick = () => {
    const k = th.dataset.k; b.sort = [k, b.sort[0] === k ? -b.sort[1] : -1]; renderBoard(name);
  });
  el.querySelectorAll('td.sym').forEach((td) => td.onclick = () => pick(td.textContent));
}

let quoteFeed = null;
function renderQuote(q) {
  if (!q || q.symbol !== quoteFeed?.slice(6)) return;
  const field = (label, v) => `<div><label>${label}</label>${v}</div>`;
  $('#quote').className = '';
  $('#quote').innerHTML = `<div class="big">${q.symbol} ${fmt(q.close)} <span class="${cls(q.change)}">${fmt(q.change)} (${fmt(q.pct_change)}%)</span></div>` +
    field('Open', fmt(q.official_open_price)) + field('VWAP', fmt(q.aggregate_vwap)) + field('Volume', int(q.accumulated_volume)) +
    field('Rel. Vol', fmt(q.relative_volume)) + field('Avg Vol', int(q.avg_volume)) + field('Float', int(q.free_float)) +
    field('PD Close', fmt(q.prev_day_close)) + field('PD Volume', int(q.prev_day_volume)) + field('Since open', `<span class="${cls(q.change_since_open)}">${fmt(q.pct_change_since_open)}%</span>`) +
    field('High', fmt(q.high)) + field('Low', fmt(q.low)) + field('As of', q.end_timestamp ? new Date(q.end_timestamp).toLocaleTimeString() : '');
}

const alerts = [];
function renderAlerts() {
  $('#alerts').innerHTML = '<table><tr><th>Time</th><th>Symbol</th><th>Type</th><th>Alert $</th><th>Prev $</th><th>Change %</th></tr>' +
    alerts.slice(0, 100).map((a) => `<tr><td>${a.timestamp ? new Date(a.timestamp * (a.timestamp < 1e12 ? 1000 : 1)).toLocaleTimeString() : ''}</td><td class="sym">${a.symbol ?? ''}</td><td>${a.alert_type ?? a.direction ?? ''}</td><td>${fmt(a.alert_price ?? a.price)}</td><td>${fmt(a.previous_price ?? a.prev_price)}</td><td class="${cls(a.pct_change)}">${fmt(a.pct_change)}</td></tr>`).join('') + '</table>';
}

const news = new Map();
function renderNews() {
  const items = [...news.values()].slice(-200).reverse();
  $('#news').innerHTML = items.map((a) => `<li><a href="${a.link ?? '#'}" target="_blank" rel="noopener">${a.title ?? '(untitled)'}</a> <span class="muted">${a.source ?? ''}</span></li>`).join('') || '<li class="muted">No news yet.</li>';
}

const tape = [];
function renderTape() {
  $('#tape').innerHTML = '<table><tr><th>Symbol</th><th>Price</th><th>Size</th><th>Time</th></tr>' +
    tape.slice(0, 60).map((t) => `<tr><td class="sym">${t.symbol}</td><td>${fmt(t.price)}</td><td>${int(t.size)}</td><td>${new Date(t.timestamp).toLocaleTimeString()}</td></tr>`).join('') + '</table>';
  $('#tape').querySelectorAll('td.sym').forEach((td) => td.onclick = () => pick(td.textContent));
}

let ws = null, attempts = 0, received = 0;
const send = (m) => ws && ws.readyState === 1 && ws.send(JSON.stringify(m));

function pick(sym) {
  sym = (sym || '').trim().toUpperCase();
  if (!sym) return;
  $('#symbol').value = sym;
  if (quoteFeed) send({ action: 'unsubscribe', feed: quoteFeed });
  quoteFeed = `quote:${sym}`;
  $('#quote').className = 'muted'; $('#quote').textContent = `Waiting for ${sym}…`;
  send({ action: 'get', cache: quoteFeed }); send({ action: 'subscribe', feed: quoteFeed });
}

// Pushes carry no channel name (seed protocol): route by shape.
function push(data) {
  received++;
  if (Array.isArray(data)) return; // boards arrive on their own sockets (below)
  if (data.event_type === 'T') { tape.unshift(data); tape.length = Math.min(tape.length, 200); scheduleTape(); return; }
  if (data.link || data.title) { news.set(data.link ?? data.title, data); renderNews(); return; }
  if (data.alert_type || data.alert_price || data.direction) { alerts.unshift(data); renderAlerts(); return; }
  if (data.symbol && 'accumulated_volume' in data) renderQuote(data);
}

function route(key, data, snapshot) {
  if (key.startsWith('scanners:')) { const n = key.slice(9); if (Array.isArray(data)) { boards[n].rows = data; renderBoard(n); } return; }
  if (key.startsWith('quote:')) { renderQuote(data); return; }
  if (key.startsWith('daily_range_')) { if (Array.isArray(data)) { alerts.push(...data); renderAlerts(); } return; }
  if (key === 'news:feed:latest') { if (Array.isArray(data)) { data.reverse().forEach((a) => news.set(a.link ?? a.title, a)); renderNews(); } }
}

let tapeTimer = null;
function scheduleTape() { if (!tapeTimer) tapeTimer = setTimeout(() => { tapeTimer = null; renderTape(); }, 250); }

// One socket per board, as the seed's widgets do, so pushes need no routing.
function boardSocket(name) {
  let s, n = 0;
  const open = () => {
    s = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
    s.onopen = () => { n = 0; s.send(JSON.stringify({ action: 'get', cache: `scanners:${name}` })); s.send(JSON.stringify({ action: 'subscribe', feed: `scanners:${name}` })); };
    s.onmessage = (e) => { const m = JSON.parse(e.data); received++; if (Array.isArray(m)) { boards[name].rows = m; renderBoard(name); } else if (m.cache && Array.isArray(m.data)) { boards[name].rows = m.data; renderBoard(name); } };
    s.onclose = () => setTimeout(open, Math.min(1000 * 2 ** n++, 30000));
  };
  open();
}

function connect() {
  $('#state').textContent = 'connecting…'; $('#state').className = '';
  ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  ws.onopen = () => {
    attempts = 0; $('#state').textContent = 'live'; $('#state').className = 'open';
    for (const key of ['daily_range_hod_alert', 'daily_range_lod_alert']) { send({ action: 'get', cache: key, limit: 100 }); send({ action: 'subscribe', feed: key }); }
    send({ action: 'get', cache: 'news:feed:latest', limit: 200 }); send({ action: 'subscribe', feed: 'news:feed:latest' });
    send({ action: 'subscribe', feed: 'stocks:trades:*' });
    if (quoteFeed) { send({ action: 'get', cache: quoteFeed }); send({ action: 'subscribe', feed: quoteFeed }); }
  };
  ws.onmessage = (e) => {
    let m; try { m = JSON.parse(e.data); } catch { return; }
    if (m && !Array.isArray(m) && 'cache' in m) { received++; route(m.cache, m.data, true); }
    else if (m && !Array.isArray(m) && m.status) { /* status frame */ }
    else push(m);
  };
  ws.onclose = () => {
    const delay = Math.min(1000 * 2 ** attempts++, 30000);
    $('#state').textContent = `disconnected — retrying in ${Math.round(delay / 1000)} s`; $('#state').className = 'closed';
    setTimeout(connect, delay);
  };
}

$('#symbol').addEventListener('change', (e) => pick(e.target.value));
Object.keys(boards).forEach((n) => { renderBoard(n); boardSocket(n); });
renderNews(); renderAlerts(); renderTape();
connect();
setInterval(() => { $('#stats').textContent = `${received.toLocaleString()} messages`; }, 1000);
