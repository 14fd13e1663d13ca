// Formatting helpers and a sortable, filterable table whose rows are
// replaced wholesale on every update and drawn at most once per frame.

/** `v` as a number, or null when it is not one. */
export const num = (v) => (v === null || v === undefined || v === '' || Number.isNaN(Number(v))) ? null : Number(v);
/** HTML-escaped text. */
export const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
// Formatters are made once: `toLocaleString` with options builds one per call.
const decimals = new Map();
const grouped = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const clock = new Intl.DateTimeFormat([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
/** A number with `d` decimals, grouped. */
export const fmt = (v, d = 2) => {
  if (num(v) === null) return '';
  if (!decimals.has(d)) decimals.set(d, new Intl.NumberFormat(undefined, { maximumFractionDigits: d, minimumFractionDigits: d }));
  return decimals.get(d).format(num(v));
};
/** A whole number, grouped. */
export const int = (v) => num(v) === null ? '' : grouped.format(Math.round(num(v)));
/** `up`, `down` or nothing, by sign. */
export const cls = (v) => num(v) > 0 ? 'up' : num(v) < 0 ? 'down' : '';
/** Local time of a timestamp in ms, or in seconds (alerts). */
export const time = (t) => {
  if (!num(t)) return '';
  const ms = num(t) < 1e12 ? num(t) * 1000 : num(t);
  return clock.format(new Date(ms));
};

const ROWS_SHOWN = 100;
/** Least time between two draws of a table, ms: updates in between are merged. */
const MIN_DRAW_GAP_MS = 500;

// Tables due for a draw, one per animation frame: several tables drawn in one
// frame would make one long task of their layouts and paints.
const due = [];
function queueDraw(table) {
  due.push(table);
  if (due.length === 1) requestAnimationFrame(drawNext);
}
function drawNext() {
  const table = due.shift();
  table.pending = false;
  table.render();
  if (due.length) requestAnimationFrame(drawNext);
}

/** Width of a column, px (fixed layout: cells are not measured). */
const widthOf = (k) => k === 'symbol' ? 72 : k === 'note' ? 240 : /volume|float/.test(k) ? 118 : 100;
/** Height of a table row, px (as `tbody.rows td` in index.html). */
const ROW_PX = 24;
/** Rows drawn beyond each edge of the view. */
const ROWS_AROUND = 4;

export class Table {
  /**
   * @param {HTMLElement} el where the table is drawn
   * @param {Array<[string, string, (r: object) => string]>} columns key, header, cell text
   * @param {[string, number]} sort key and direction (1 ascending, -1 descending)
   * @param {(key: string, row: object) => string} cellClass
   * @param {(sym: string) => void} onSymbol called with a clicked symbol
   */
  constructor(el, columns, sort, cellClass, onSymbol) {
    this.el = el; this.columns = columns; this.sort = sort; this.cellClass = cellClass;
    this.rows = []; this.updates = 0; this.pending = false; this.drawn = 0;
    this.visible = columns.map(([k]) => k);
    this.filter = () => true;
    this.onRender = () => {};
    // The header is a table of its own above the scrolling rows (kept in
    // view without `position: sticky`, whose layers cost every frame).
    this.headEl = document.createElement('div');
    this.headEl.className = 'thead';
    el.before(this.headEl);
    const click = (e) => {
      const th = e.target.closest('th');
      if (th) {
        const k = th.dataset.k;
        this.sort = [k, this.sort[0] === k ? -this.sort[1] : (k === 'symbol' ? 1 : -1)];
        this.render();
        return;
      }
      const sym = e.target.closest('.sym');
      if (sym) onSymbol(sym.textContent);
    };
    el.addEventListener('click', click);
    this.headEl.addEventListener('click', click);
    el.addEventListener('scroll', () => {
      this.headEl.scrollLeft = el.scrollLeft;
      if (this.head) requestAnimationFrame(() => this.render());
    }, { passive: true });
  }

  /** New rows (an update from the feed). */
  set(rows) { this.rows = rows; this.updates++; this.schedule(); }

  /** Draw on a coming frame, at most every MIN_DRAW_GAP_MS (once, however many updates came meanwhile). */
  schedule() {
    if (this.pending) return;
    this.pending = true;
    const wait = Math.max(0, this.drawn + MIN_DRAW_GAP_MS - performance.now());
    setTimeout(() => queueDraw(this), wait);
  }

  render() {
    this.drawn = performance.now();
    const [key, dir] = this.sort;
    const val = (r) => { const v = r[key]; return typeof v === 'string' && num(v) === null ? v : num(v); };
    const kept = this.rows.filter(this.filter);
    const rows = kept.sort((x, y) => {
      const a = val(x), b = val(y);
      if (a === b) return 0;
      if (a === null) return 1;
      if (b === null) return -1;
      return (typeof a === 'string' ? String(a).localeCompare(String(b)) : a - b) * dir;
    }).slice(0, ROWS_SHOWN);
    const columns = this.columns.filter(([k]) => this.visible.includes(k));
    const head = columns.map(([k, label]) =>
      `<th data-k="${k}" aria-sort="${k === key ? (dir > 0 ? 'ascending' : 'descending') : 'none'}">${label}${k === key ? (dir > 0 ? ' ▲' : ' ▼') : ''}</th>`).join('');
    if (head !== this.head) {
      // New columns or sort: a new table; otherwise only changed cells are touched.
      const widths = columns.map(([k]) => widthOf(k));
      const cols = `<colgroup>${widths.map((w) => `<col style="width:${w}px">`).join('')}</colgroup>`;
      const table = `<table style="width:${widths.reduce((a, b) => a + b, 0)}px">${cols}`;
      this.headEl.innerHTML = `${table}<thead><tr>${head}</tr></thead></table>`;
      this.headEl.scrollLeft = this.el.scrollLeft;
      this.el.innerHTML = table +
        `<tbody class="pad"><tr><td colspan="${columns.length}"></td></tr></tbody><tbody class="rows"></tbody>` +
        `<tbody class="pad"><tr><td colspan="${columns.length}"></td></tr></tbody></table>`;
      this.head = head;
      this.body = this.el.querySelector('tbody.rows');
      [this.above, this.below] = [...this.el.querySelectorAll('tbody.pad td')];
    }
    // Only the rows in view (and a few around them) are in the document;
    // padding stands in for the others, so scrolling works as over all.
    const fit = Math.ceil((this.el.clientHeight || 440) / ROW_PX) + 2 * ROWS_AROUND;
    const first = Math.max(0, Math.min(Math.floor(this.el.scrollTop / ROW_PX) - ROWS_AROUND, rows.length - fit));
    const inView = rows.slice(first, first + fit);
    this.above.style.height = `${first * ROW_PX}px`;
    this.below.style.height = `${(rows.length - first - inView.length) * ROW_PX}px`;
    const trs = this.body.rows;
    while (trs.length > inView.length) this.body.deleteRow(-1);
    while (trs.length < inView.length) {
      const tr = this.body.insertRow();
      for (let i = 0; i < columns.length; i++) tr.insertCell();
    }
    inView.forEach((r, i) => {
      const cells = trs[i].cells;
      columns.forEach(([k, , f], j) => {
        const td = cells[j], text = f(r), cls = this.cellClass(k, r);
        if (td.textContent !== text) td.textContent = text;
        if (td.className !== cls) td.className = cls;
      });
    });
    this.el.dataset.updates = this.updates;
    this.el.dataset.rows = this.rows.length;
    this.el.dataset.kept = kept.length;
    this.el.dataset.shown = rows.length;
    this.onRender(rows.length, kept.length, this.rows.length);
  }
}
