// minute-bars in JavaScript: each symbol's minute bars (Massive `AM`) of the
// New York trading day, newest first, on the capped list chart:{SYM}:minutes,
// each bar also published on the channel of that name (the dashboard chart).
// Entry: {"t":start_ms,"o":open,"h":high,"l":low,"c":close,"v":volume,"vw":vwap}.
// A bar on a later New York calendar date than the symbol's previous bar
// first deletes the list (yesterday's bars go). Delivery is at-least-once: a
// bar not newer than the symbol's last one is skipped; after a (re)start the
// last one is the list's head, read back once per symbol.
import { lrange } from 'mdp:analyzer/cache@1.1.0';

const DEFAULT_LIST_MAX = 960; // 16 h x 60 min: 04:00-20:00 New York
const DEFAULT_TTL_SECS = 86400;
// Symbols remembered at most; past that the memory is dropped (between
// batches) and rebuilt from the lists' heads.
const MAX_SYMBOLS = 20000;
const HOUR_MS = 3600000;
const DAY_MS = 86400000;

const settings = { listMax: DEFAULT_LIST_MAX, ttlSecs: DEFAULT_TTL_SECS };
// symbol -> { t: BigInt start ms, day: New York day number } of its last bar;
// null when the store had nothing usable for it.
const last = new Map();

const listKey = (symbol) => `chart:${symbol}:minutes`;

// Unix ms of 02:00 local on the `nth` Sunday of `month` (0-based) of `year`,
// local time being UTC`utcOffsetH`.
function sundayAt2(year, month, nth, utcOffsetH) {
  const firstDow = new Date(Date.UTC(year, month, 1)).getUTCDay();
  const day = 1 + ((7 - firstDow) % 7) + 7 * (nth - 1);
  return Date.UTC(year, month, day, 2) - utcOffsetH * HOUR_MS;
}

// The New York calendar date of Unix ms `ms`, as days since 1970-01-01.
// US DST: EDT (UTC-4) from the second Sunday of March 02:00 EST to the first
// Sunday of November 02:00 EDT; EST (UTC-5) otherwise.
function newYorkDay(ms) {
  const year = new Date(ms).getUTCFullYear();
  const dst = ms >= sundayAt2(year, 2, 2, -5) && ms < sundayAt2(year, 10, 1, -4);
  return Math.floor((ms + (dst ? -4 : -5) * HOUR_MS) / DAY_MS);
}

// The list entry of an aggregate: exactly these keys, in this order.
function entry(bar) {
  const num = (x) => JSON.stringify(x);
  return `{"t":${bar.startMs},"o":${num(bar.open)},"h":${num(bar.high)},"l":${num(bar.low)},`
    + `"c":${num(bar.close)},"v":${bar.volume},"vw":${num(bar.vwap)}}`;
}

// What the store says about a symbol's last bar: its list's head, if usable.
function rehydrate(symbol) {
  const [head] = lrange(listKey(symbol), 0, 0);
  if (head === undefined) return null;
  try {
    const t = JSON.parse(head).t;
    if (Number.isSafeInteger(t)) return { t: BigInt(t), day: newYorkDay(t) };
  } catch {
    // Not an entry of ours: as if the list were empty.
  }
  return null;
}

function configPositive(config, key, fallback) {
  const found = config.findLast(([k]) => k === key);
  if (found === undefined) return fallback;
  const value = found[1];
  if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > 0xffffffff) {
    throw { tag: 'bad-config', val: `config \`${key}\` = \`${value}\`: not a whole number from 1 to 4294967295` };
  }
  return Number(value);
}

export function describe() {
  return { name: 'minute-bars', version: '0.1.0', consumes: { aggregate: true }, stateVersion: 0 };
}

export function init(config, _state) {
  settings.listMax = configPositive(config, 'list_max', DEFAULT_LIST_MAX);
  settings.ttlSecs = configPositive(config, 'ttl_secs', DEFAULT_TTL_SECS);
  last.clear();
}

export function analyze(batch) {
  if (last.size > MAX_SYMBOLS) last.clear();
  const effects = [];
  for (const event of batch) {
    if (event.tag !== 'aggregate' || event.val.window !== 'minute') continue;
    const bar = event.val;
    const key = listKey(bar.symbol);
    if (!last.has(bar.symbol)) last.set(bar.symbol, rehydrate(bar.symbol));
    const previous = last.get(bar.symbol);
    if (previous !== null && bar.startMs <= previous.t) continue;
    const day = newYorkDay(Number(bar.startMs));
    if (previous !== null && previous.day !== day) effects.push({ tag: 'del', val: [key] });
    const value = { tag: 'json', val: entry(bar) };
    effects.push({ tag: 'push', val: { key, value, maxLen: settings.listMax, ttlSecs: settings.ttlSecs } });
    effects.push({ tag: 'publish', val: { channel: key, value } });
    last.set(bar.symbol, { t: bar.startMs, day });
  }
  return effects;
}

export function snapshot() {
  return new Uint8Array();
}
