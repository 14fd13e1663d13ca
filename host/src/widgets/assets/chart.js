// The quote card's session chart: one symbol's price through the New York
// trading day (04:00–20:00, pre-market and after-hours shaded), drawn with
// uPlot (embedded in the binary, served as /uplot.js). History is the
// minute-bars analyzer's capped list `chart:{SYM}:minutes` (read with `get`,
// then each finished minute from its channel); the minute in progress
// follows the symbol's second bars through `daily_range:{SYM}`, whose six
// session highs and lows are marked as dashed lines.
import { FeedSocket } from './feed.js';
import { fmt } from './table.js';

const MAX_POINTS = 961; // 16 h of minutes, and the one in progress
const MARKS = [
  ['pre_market_high', 'PM high'], ['pre_market_low', 'PM low'],
  ['regular_session_high', 'High'], ['regular_session_low', 'Low'],
  ['after_hours_high', 'AH high'], ['after_hours_low', 'AH low'],
];

const NEW_YORK = new Intl.DateTimeFormat('en-US', {
  timeZone: 'America/New_York', hourCycle: 'h23',
  year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric',
});

/** New York's offset from UTC at `ms`, in ms (negative: behind UTC). */
function nyOffset(ms) {
  const p = Object.fromEntries(NEW_YORK.formatToParts(new Date(ms)).map((x) => [x.type, Number(x.value)]));
  return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - Math.floor(ms / 1000) * 1000;
}

/** Unix ms of `hours` past midnight, New York time, on the New York day of `ms`. */
function nyTime(ms, hours) {
  const off = nyOffset(ms);
  const midnight = Math.floor((ms + off) / 86400000) * 86400000;
  const t = midnight + hours * 3600000;
  return t - nyOffset(t - off);
}

export class SessionChart {
  /** @param {HTMLElement} el where the chart is drawn */
  constructor(el) {
    this.el = el; this.symbol = null; this.bars = new Map(); this.marks = {}; this.plot = null;
    this.pending = false;
    this.socket = new FeedSocket({}, (data, key) => this.receive(data, key));
    this.width = 0;
    new ResizeObserver(() => {
      const w = Math.max(200, this.el.clientWidth - 20);
      if (this.plot && w !== this.width) { this.width = w; this.plot.setSize({ width: w, height: 180 }); }
    }).observe(el);
    if (!globalThis.uPlot) {
      el.textContent = 'The chart library is missing from this build: run scripts/setup, then rebuild mdp.';
      el.className = 'muted';
    }
  }

  /** Show `sym`: read its minute bars and session marks, follow both. */
  show(sym) {
    for (const f of this.socket.feeds) this.socket.unsubscribe(f);
    this.symbol = sym; this.bars = new Map(); this.marks = {};
    const minutes = `chart:${sym}:minutes`, range = `daily_range:${sym}`;
    this.socket.gets = [{ cache: minutes, limit: MAX_POINTS }, { cache: range }];
    for (const g of this.socket.gets) this.socket.get(g.cache, g.limit);
    this.socket.subscribe(minutes);
    this.socket.subscribe(range);
    this.schedule();
  }

  receive(data, key) {
    if (!this.symbol || data === null || data === undefined) return;
    if (Array.isArray(data)) {
      if (key !== `chart:${this.symbol}:minutes`) return;
      for (const b of data) this.minute(b);
    } else if (typeof data === 'object' && 't' in data && 'c' in data) {
      this.minute(data); // a finished minute, pushed (channels carry no name)
    } else if (typeof data === 'object' && data.symbol === this.symbol) {
      this.tick(data);
    } else return;
    this.schedule();
  }

  /** A finished minute bar from the analyzer. */
  minute(b) {
    if (b && Number.isFinite(b.t) && Number.isFinite(b.c)) this.bars.set(b.t, { t: b.t, c: b.c, h: b.h, l: b.l });
  }

  /** A second bar's quote: move the minute in progress; take the session marks. */
  tick(q) {
    this.marks = Object.fromEntries(MARKS.map(([k]) => [k, q[k] ?? null]));
    const start = Number(q.start_timestamp ?? q.end_timestamp);
    const close = Number(q.close);
    if (!Number.isFinite(start) || !Number.isFinite(close)) return;
    const t = Math.floor(start / 60000) * 60000;
    const bar = this.bars.get(t);
    if (bar) { bar.c = close; bar.h = Math.max(bar.h ?? close, close); bar.l = Math.min(bar.l ?? close, close); }
    else this.bars.set(t, { t, c: close, h: close, l: close });
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  draw() {
    const times = [...this.bars.keys()].sort((a, b) => a - b);
    for (const t of times.slice(0, Math.max(0, times.length - MAX_POINTS))) this.bars.delete(t);
    const kept = times.slice(-MAX_POINTS);
    this.el.dataset.points = kept.length;
    this.el.dataset.symbol = this.symbol ?? '';
    this.el.dataset.marks = JSON.stringify(this.marks);
    if (!globalThis.uPlot || !this.symbol) return;
    const data = [kept.map((t) => t / 1000), kept.map((t) => this.bars.get(t).c)];
    if (!this.plot) this.plot = this.create(data);
    else this.plot.setData(data);
  }

  create(data) {
    const chart = this;
    const day = () => {
      const last = chart.plot?.data[0].at(-1);
      return last ? last * 1000 : Date.now();
    };
    const shade = (u) => {
      const ctx = u.ctx, { top, height } = u.bbox;
      ctx.save();
      ctx.fillStyle = 'rgba(139,149,165,0.10)';
      for (const [a, b] of [[4, 9.5], [16, 20]]) {
        const x0 = u.valToPos(nyTime(day(), a) / 1000, 'x', true), x1 = u.valToPos(nyTime(day(), b) / 1000, 'x', true);
        ctx.fillRect(x0, top, x1 - x0, height);
      }
      ctx.restore();
    };
    const marks = (u) => {
      const ctx = u.ctx, { left, width } = u.bbox;
      ctx.save();
      ctx.setLineDash([4, 4]);
      ctx.font = `${11 * devicePixelRatio}px system-ui`;
      for (const [k, label] of MARKS) {
        const v = chart.marks[k];
        if (v === null || v === undefined) continue;
        const y = u.valToPos(v, 'y', true);
        ctx.strokeStyle = ctx.fillStyle = k.endsWith('high') ? '#3fb950' : '#f85149';
        ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + width, y); ctx.stroke();
        const text = `${label} ${fmt(v)}`;
        ctx.fillText(text, left + width - ctx.measureText(text).width - 4, y - 3);
      }
      ctx.restore();
    };
    const markValues = () => Object.values(chart.marks).filter((v) => v !== null && Number.isFinite(v));
    return new globalThis.uPlot({
      width: (this.width = Math.max(200, this.el.clientWidth - 20)), height: 180,
      legend: { show: false }, cursor: { y: false },
      tzDate: (ts) => globalThis.uPlot.tzDate(new Date(ts * 1000), 'America/New_York'),
      scales: {
        x: { time: true, range: () => [nyTime(day(), 4) / 1000, nyTime(day(), 20) / 1000] },
        y: { range: (u, lo, hi) => {
          const all = [lo, hi, ...markValues()].filter(Number.isFinite);
          const a = Math.min(...all), b = Math.max(...all), pad = (b - a) * 0.05 || 1;
          return [a - pad, b + pad];
        } },
      },
      axes: [{ stroke: '#8b95a5', grid: { stroke: '#1f2630' } }, { stroke: '#8b95a5', grid: { stroke: '#1f2630' }, size: 60 }],
      series: [{}, { stroke: '#58a6ff', width: 1.5, points: { show: false } }],
      hooks: { drawClear: [shade], draw: [marks] },
    }, data, this.el);
  }
}
