// The dashboard's settings, kept in the browser (localStorage): panel order
// and visibility, each board's filters and columns, the alert and news
// filters, the linked-symbol toggle and the symbol on the quote card.

const KEY = 'mdp.dashboard.v1';

const DEFAULTS = {
  order: [],
  hidden: [],
  boards: {},
  alerts: { type: 'all', symbol: '', sound: false },
  news: { q: '', tickersOnly: false },
  link: false,
  symbol: '',
};

function load() {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) ?? '{}');
    return { ...structuredClone(DEFAULTS), ...(saved && typeof saved === 'object' ? saved : {}) };
  } catch {
    return structuredClone(DEFAULTS);
  }
}

/** The settings, changed in place by the panels; call `save()` after a change. */
export const prefs = load();

/** Write the settings back to localStorage. */
export function save() {
  try { localStorage.setItem(KEY, JSON.stringify(prefs)); } catch { /* private mode: settings last this page only */ }
}

/** A board's settings (created with defaults on first use). */
export function boardPrefs(name, columns) {
  prefs.boards[name] ??= {};
  const b = prefs.boards[name];
  b.cols ??= columns;
  b.minPrice ??= ''; b.maxPrice ??= ''; b.minVolume ??= ''; b.minRvol ??= '';
  return b;
}
